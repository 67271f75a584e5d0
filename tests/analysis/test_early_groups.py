"""The paper's own sample selection: fixed early groups, correlated from their own t* on."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pathwatch.analysis import analyze_run
from pathwatch.config import AnalyzeConfig
from pathwatch.dynamics import NEVER
from pathwatch.evaluation.early import early_cutoffs

LEAD = 2


@pytest.fixture(scope="module")
def analysed(captured_testbed, tmp_path_factory):
    """The tiny run with an accuracy that rises LEAD checkpoints after the latest onset of the
    domain with the most probes memorized early enough."""
    root = tmp_path_factory.mktemp("early")
    run = root / "run"
    shutil.copytree(captured_testbed.run, run, ignore=shutil.ignore_patterns("tables"))
    plain = analyze_run(run, progress=False, write=False)
    steps = sorted(plain.tables["group_metrics"]["step"].unique().to_list())
    onsets = plain.tables["onsets"]
    latest = steps[-LEAD - 2]  # leaves the rise LEAD checkpoints later and one after it
    early = onsets.filter(
        (pl.col("mem_onset") != NEVER)
        & (pl.col("mem_onset") <= latest)
        & (pl.col("domain") != "all")
    )
    domain = early.group_by("domain").len().sort("len", "domain", descending=True)["domain"][0]
    cutoff = int(early.filter(pl.col("domain") == domain)["mem_onset"].max())
    rise = steps[steps.index(cutoff) + LEAD]
    start = steps.index(rise)
    acc = pl.DataFrame(
        [
            {
                "step": s,
                "domain": d,
                "accuracy": 0.02 if i <= start else min(1.0, 0.2 * (i - start)),
            }
            for d in sorted(onsets["domain"].unique())
            for i, s in enumerate(steps)
        ]
    )
    path = root / "accuracy.csv"
    acc.write_csv(path)
    config = AnalyzeConfig(early_lead=LEAD, n_boot=50)
    result = analyze_run(run, config=config, accuracy=path, progress=False, write=False)
    return result, domain, cutoff, rise


def _whole(result, group):
    return result.tables["group_metrics"].filter(
        (pl.col("layer") == -1) & (pl.col("group") == group)
    )


def test_the_early_group_is_fixed_and_followed_once_all_are_memorized(analysed):
    result, domain, cutoff, _ = analysed
    onsets = result.tables["onsets"].filter(pl.col("domain") == domain)
    members = onsets.filter((pl.col("mem_onset") != NEVER) & (pl.col("mem_onset") <= cutoff))
    early = _whole(result, "early").filter(pl.col("domain") == domain).sort("step")
    assert early.height
    assert set(early["n_samples"]) == {members.height}
    assert early["step"].min() == members["mem_onset"].max()
    assert early["memorized_fraction"].to_list() == [1.0] * early.height
    series = result.tables["metric_series"].filter(pl.col("domain") == domain)
    joined = series.join(early.select("step", expected="distance"), on="step", how="left")
    np.testing.assert_allclose(
        joined["distance_early"].fill_null(np.nan), joined["expected"].fill_null(np.nan)
    )


def test_each_early_group_is_correlated_from_its_own_onset(analysed):
    result, domain, cutoff, rise = analysed
    table = result.tables["group_correlations"].filter(pl.col("domain") == domain)
    groups = set(table["group"])
    onsets = result.tables["onsets"].filter(pl.col("domain") == domain)["mem_onset"]
    expected = {f"train@{t}" for t in onsets.unique() if t != NEVER and t <= cutoff}
    assert groups == expected | {"early"}
    assert set(table["rise_start"]) == {rise}
    acc = result.tables["accuracy"].filter(pl.col("domain") == domain)
    checked = 0
    for row in table.iter_rows(named=True):
        metric = row["metric"]
        part = _whole(result, row["group"]).filter(pl.col("domain") == domain)
        joined = part.join(acc, on="step").filter(pl.col("step") >= row["mem_onset"]).sort("step")
        joined = joined.filter(pl.col(metric).is_not_nan())
        assert row["n"] == joined.height, (row["group"], metric)
        if row["n"] >= 3 and joined[metric].n_unique() > 1:
            assert row["first_step"] == joined["step"][0] >= row["mem_onset"]
            r = stats.pearsonr(joined[metric], joined["accuracy"]).statistic
            assert row["pearson_r"] == pytest.approx(r)
            checked += 1
    assert checked


def test_early_cutoffs_need_lead_checkpoints_before_the_rise():
    acc = pl.DataFrame(
        {"step": [0, 10, 20, 30, 40] * 2, "domain": ["a"] * 5 + ["b"] * 5}
        | {"accuracy": [0.0, 0, 0, 0.5, 1, 0, 0.5, 1, 1, 1]}
    )
    assert early_cutoffs(acc, [0, 10, 20, 30, 40], lead=2) == {"a": (20, 0)}
    assert early_cutoffs(acc, [0, 10, 20, 30, 40], lead=1, start=30) == {
        "a": (30, 20),
        "b": (30, 20),
    }
