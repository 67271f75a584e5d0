"""analyze_run end to end on a real captured run: tables present and equal to the library functions."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from scipy import stats

import pathwatch as pw
from pathwatch.analysis import AnalyzeConfig, analyze_run
from pathwatch.errors import InputError, StoreError
from pathwatch.store import RunStore

TABLES = {
    "sample_metrics",
    "onsets",
    "epsilon",
    "group_metrics",
    "accuracy",
    "correlations",
    "test_onsets",
}


@pytest.fixture(scope="module")
def analysed(captured_testbed, tmp_path_factory):
    run = tmp_path_factory.mktemp("analysed") / "run"
    shutil.copytree(captured_testbed.run, run)
    result = analyze_run(run, accuracy=captured_testbed.testbed.accuracy_file, progress=False)
    return result, RunStore(run)


def _train_rows(store: RunStore) -> np.ndarray:
    return np.flatnonzero(store.samples()["domain"].to_numpy() != "validation")


def test_every_table_is_written_and_readable(analysed):
    result, store = analysed
    assert set(result.tables) >= TABLES
    for name in result.tables:
        assert store.read_table(name).equals(result.tables[name])


def test_sample_metrics_equal_library_functions(analysed):
    result, store = analysed
    rows = _train_rows(store)
    for step in store.steps[:: max(1, len(store.steps) // 4)]:
        data = store.load_checkpoint(step)
        weights = data.mean_weights[rows]
        table = result.tables["sample_metrics"].filter(pl.col("step") == step).sort("sample_index")
        assert table["sample_index"].to_list() == rows.tolist()
        assert table["pathway"].to_list() == pw.pathways(weights, threshold=0.7).strings()
        expected = pw.consistency(weights, store.router_weights(step))
        np.testing.assert_allclose(table["consistency"].to_numpy(), expected, equal_nan=True)
        np.testing.assert_allclose(table["loss"].to_numpy(), data.loss[rows], rtol=1e-6)


def test_group_distance_equals_mean_pairwise_distance(analysed):
    result, store = analysed
    rows = _train_rows(store)
    domains = store.samples()["domain"].to_numpy()[rows]
    groups = result.tables["group_metrics"]
    step = store.steps[-1]
    paths = pw.pathways(store.load_checkpoint(step).mean_weights[rows], threshold=0.7)
    for domain in ["all", *sorted(set(domains))]:
        members = np.arange(rows.size) if domain == "all" else np.flatnonzero(domains == domain)
        row = groups.filter(
            (pl.col("domain") == domain)
            & (pl.col("group") == "all")
            & (pl.col("step") == step)
            & (pl.col("layer") == -1)
        )
        assert row.height == 1
        assert row["distance"][0] == pytest.approx(pw.mean_pairwise_distance(paths[members]))
        assert row["n_samples"][0] == members.size
        per_layer = groups.filter(
            (pl.col("domain") == domain)
            & (pl.col("group") == "all")
            & (pl.col("step") == step)
            & (pl.col("layer") >= 0)
        ).sort("layer")
        np.testing.assert_allclose(
            per_layer["distance"].to_numpy(), pw.layer_distances(paths[members])
        )


def test_onsets_follow_the_memorization_rule(analysed):
    result, store = analysed
    rows = _train_rows(store)
    losses = np.stack([store.load_checkpoint(s).loss[rows] for s in store.steps], axis=1)
    onsets = result.tables["onsets"].sort("sample_index")
    for domain, eps in result.tables["epsilon"].select("domain", "epsilon").iter_rows():
        mask = (onsets["domain"] == domain).to_numpy()
        expected = pw.memorization_onset(losses[mask], store.steps, eps, delta=0.05)
        np.testing.assert_array_equal(onsets["mem_onset"].to_numpy()[mask], expected)


def test_memorization_groups_partition_the_memorized_samples(analysed):
    result, _ = analysed
    last = result.tables["group_metrics"]["step"].max()
    whole = result.tables["group_metrics"].filter(
        (pl.col("layer") == -1) & (pl.col("step") == last)
    )
    onsets = result.tables["onsets"]
    for domain in onsets["domain"].unique():
        memorized = onsets.filter((pl.col("domain") == domain) & (pl.col("mem_onset") >= 0))
        groups = whole.filter(
            (pl.col("domain") == domain) & pl.col("group").str.starts_with("train@")
        )
        assert groups["n_samples"].sum() == memorized.height
        assert set(groups["group"]) == {f"train@{t}" for t in memorized["mem_onset"].unique()}


def test_correlations_match_scipy_on_the_window(analysed):
    result, _ = analysed
    corr = result.tables["correlations"]
    row = corr.filter((pl.col("domain") == "add") & (pl.col("metric") == "distance")).row(
        0, named=True
    )
    distance = result.tables["group_metrics"].filter(
        (pl.col("domain") == "add") & (pl.col("group") == "all") & (pl.col("layer") == -1)
    )
    acc = result.tables["accuracy"].filter(pl.col("domain") == "add")
    joined = distance.join(acc, on="step").filter(
        pl.col("step").is_between(row["first_step"], row["last_step"])
    )
    assert joined.height == row["n"]
    expected = stats.pearsonr(joined["distance"], joined["accuracy"]).statistic
    assert row["pearson_r"] == pytest.approx(expected)
    assert set(corr["metric"]) >= {"distance", "consistency", "train_loss", "validation_loss"}
    needs = dict(corr.select("metric", "needs").unique().iter_rows())
    assert needs["validation_loss"] == "held-out data"
    assert needs["distance"] == "training data"


def test_pooled_accuracy_is_the_mean_over_items(analysed, captured_testbed):
    result, store = analysed
    items = pl.read_ndjson(captured_testbed.testbed.accuracy_file)
    step = store.steps[-1]
    expected = items.filter(pl.col("step") == step)["correct"].mean()
    pooled = result.tables["accuracy"].filter(
        (pl.col("domain") == "all") & (pl.col("step") == step)
    )
    assert pooled["accuracy"][0] == pytest.approx(expected)


def test_expert_unit_and_threshold_change_the_distance(captured_testbed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(captured_testbed.run, run)
    store = RunStore(run)
    step = store.steps[-1]
    rows = _train_rows(store)
    config = AnalyzeConfig(threshold=0.5, unit="expert", max_pairs=None)
    result = analyze_run(run, config=config, progress=False)
    paths = pw.pathways(store.load_checkpoint(step).mean_weights[rows], threshold=0.5)
    pooled = result.tables["group_metrics"].filter(
        (pl.col("domain") == "all")
        & (pl.col("group") == "all")
        & (pl.col("step") == step)
        & (pl.col("layer") == -1)
    )
    assert pooled["unit"][0] == "expert"
    assert pooled["distance"][0] == pytest.approx(pw.mean_pairwise_distance(paths, unit="expert"))
    assert "correlations" not in result.tables
    assert any("no accuracy" in note for note in result.notes)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(InputError, match="not a run directory"):
        analyze_run(tmp_path, progress=False)


def test_missing_unit_is_reported_not_analysed(captured_testbed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(captured_testbed.run, run)
    victim = sorted((run / "units").rglob("*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(StoreError, match=r"1 of \d+ capture units are missing"):
        analyze_run(run, progress=False)
    assert not (run / "tables").exists()


def test_corrupt_unit_is_detected_not_analysed(captured_testbed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(captured_testbed.run, run)
    victim = sorted((run / "units").rglob("*.safetensors"))[0]
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=victim.name):
        analyze_run(run, progress=False)
    assert not (run / "tables").exists()


def _run_with_every_unit_damaged(captured_testbed, tmp_path):
    """A copy of the run whose units all fail their checksum: reading any unit is an error."""
    run = tmp_path / "run"
    shutil.copytree(captured_testbed.run, run)
    for unit in (run / "units").rglob("*.safetensors"):
        data = bytearray(unit.read_bytes())
        data[-3] ^= 0xFF
        unit.write_bytes(bytes(data))
    return run


@pytest.mark.parametrize(
    ("accuracy", "items", "message"),
    [
        (
            '{"step": 0, "domain": "add", "item_id": "a", "correct": 1}\n{"step": ',
            None,
            "malformed",
        ),
        (
            "step,domain,accuracy\n0,chemistry,0.1\n",
            None,
            r"'chemistry' \(probe domains: add, facts, mul, sub\)\. Map each with --domain-map",
        ),
        (
            "step,domain,accuracy\n7,add,0.1\n",
            None,
            r"acc.csv: accuracy step 7 \(from field 'step' of acc.csv\) is not a checkpoint step",
        ),
        (None, '{"id": "x", "domain": "add", "text": "1 + 1 = 2"}\n', "no text for test item"),
        (None, '{"id": "x", "domain": "add", "text": ', "malformed"),
    ],
    ids=["malformed-accuracy", "foreign-domains", "foreign-steps", "unknown-item", "bad-items"],
)
def test_inputs_are_checked_before_the_first_unit_is_read(
    captured_testbed, tmp_path, accuracy, items, message
):
    run = _run_with_every_unit_damaged(captured_testbed, tmp_path)
    acc = captured_testbed.testbed.accuracy_file
    if accuracy is not None:
        acc = tmp_path / ("acc.jsonl" if accuracy.startswith("{") else "acc.csv")
        acc.write_text(accuracy)
    test_items = None
    if items is not None:
        test_items = tmp_path / "items.jsonl"
        test_items.write_text(items)
    with pytest.raises(InputError, match=message):  # not the IntegrityError of the first unit
        analyze_run(run, accuracy=acc, test_items=test_items, progress=False)
    assert not (run / "tables").exists()


def test_accuracy_with_foreign_domains(captured_testbed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(captured_testbed.run, run)
    table = tmp_path / "acc.csv"
    table.write_text("step,domain,accuracy\n0,chemistry,0.1\n5,chemistry,0.2\n")
    with pytest.raises(InputError, match="match no probe domain of the run: 'chemistry'"):
        analyze_run(run, accuracy=table, progress=False)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("threshold", 1.5, "'threshold' parameter of analyze_run"),
        ("unit", "word", "Unknown unit"),
        ("max_pairs", 0, "'max_pairs' parameter of analyze_run"),
        ("epsilon", -1.0, "'epsilon' parameter of analyze_run"),
    ],
)
def test_bad_config(option, value, message):
    with pytest.raises(InputError, match=message):
        AnalyzeConfig(**{option: value})


def test_negative_grokking_delays_are_noted_with_their_count():
    from pathwatch.analysis import _delay_notes

    assert _delay_notes(pl.DataFrame({"delay": [200, 0, 1400]})) == []
    (note,) = _delay_notes(pl.DataFrame({"delay": [200, -3000, -200, 400]}))
    assert note.startswith("2 of 4 matched groups have a negative delay (t# < t*)")


def test_tables_of_an_earlier_analysis_do_not_survive(captured_testbed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(captured_testbed.run, run)
    store = RunStore(run)
    store.write_table("matches", pl.DataFrame({"domain": ["stale"]}))
    result = analyze_run(run, accuracy=captured_testbed.testbed.accuracy_file, progress=False)
    written = sorted(p.stem for p in (run / "tables").glob("*.parquet"))
    assert written == sorted(result.tables) and "matches" not in written
    assert any("group pairing skipped" in note for note in result.notes)
    steps = [n for n in result.notes if n.startswith("accuracy steps")]
    assert steps == [
        f"accuracy steps {', '.join(map(str, store.steps))}: from field 'step' of "
        f"{captured_testbed.testbed.accuracy_file.name} (1 file(s))"
    ]


def test_analyze_without_test_items_does_not_import_torch(captured_testbed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(captured_testbed.run, run)
    code = (
        "import sys; from pathwatch.analysis import analyze_run; "
        f"analyze_run({str(run)!r}, progress=False, write=False); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
