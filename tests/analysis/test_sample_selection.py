"""Sample selection of the analysis: train@t* from its own t* on, and the tracked group."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from pathwatch.analysis import analyze_run
from pathwatch.dynamics import NEVER


@pytest.fixture(scope="module")
def analysed(captured_testbed, tmp_path_factory):
    run = tmp_path_factory.mktemp("selection") / "run"
    shutil.copytree(captured_testbed.run, run)
    result = analyze_run(
        run, accuracy=captured_testbed.testbed.accuracy_file, progress=False, write=False
    )
    return result, run


def _whole(result, group):
    return result.tables["group_metrics"].filter(
        (pl.col("layer") == -1) & (pl.col("group") == group)
    )


def test_memorization_groups_start_at_their_onset(analysed):
    result, _ = analysed
    steps = sorted(result.tables["group_metrics"]["step"].unique())
    train = result.tables["group_metrics"].filter(
        (pl.col("layer") == -1) & pl.col("group").str.starts_with("train@")
    )
    assert train.height
    for (domain, group), part in train.group_by(["domain", "group"]):
        onset = int(group.removeprefix("train@"))
        assert part["step"].sort().to_list() == [s for s in steps if s >= onset], domain


def test_tracked_holds_the_samples_memorized_by_each_step(analysed):
    result, _ = analysed
    onsets = result.tables["onsets"]
    tracked = _whole(result, "tracked").filter(pl.col("domain") != "all")
    for row in tracked.iter_rows(named=True):
        members = onsets.filter(
            (pl.col("domain") == row["domain"])
            & (pl.col("mem_onset") != NEVER)
            & (pl.col("mem_onset") <= row["step"])
        )
        assert row["n_samples"] == members.height
        assert row["memorized_fraction"] == pytest.approx(1.0) or members.height == 0


def test_tracked_equals_memorized_at_the_end_and_a_lone_group_at_its_start(analysed):
    result, _ = analysed
    last = result.tables["group_metrics"]["step"].max()
    end = _whole(result, "tracked").filter(pl.col("step") == last).sort("domain")
    memorized = _whole(result, "memorized").filter(pl.col("step") == last).sort("domain")
    np.testing.assert_allclose(end["distance"], memorized["distance"])
    onsets = result.tables["onsets"].filter(pl.col("mem_onset") != NEVER)
    for (domain,), part in onsets.group_by("domain"):
        first = part["mem_onset"].min()
        rows = pl.concat([_whole(result, "tracked"), _whole(result, f"train@{first}")]).filter(
            (pl.col("domain") == domain) & (pl.col("step") == first)
        )
        assert rows.height == 2
        assert rows["distance"][0] == pytest.approx(rows["distance"][1], nan_ok=True)


def test_distance_tracked_is_a_correlated_series_and_nothing_is_written(analysed):
    result, run = analysed
    series = result.tables["metric_series"]
    tracked = _whole(result, "tracked").select("step", "domain", expected="distance")
    joined = series.join(tracked, on=["step", "domain"])
    np.testing.assert_allclose(
        joined["distance_tracked"].fill_null(np.nan), joined["expected"].fill_null(np.nan)
    )
    assert "distance_tracked" in result.tables["correlations"]["metric"].to_list()
    assert not (run / "tables" / "metric_series.parquet").exists()
