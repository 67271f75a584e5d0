"""Routing churn in analyze's tables equals the churn functions on the stored routing."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pathwatch.analysis import analyze_run
from pathwatch.dynamics import NEVER
from pathwatch.metrics import mean_divergence, routing_churn
from pathwatch.store import RunStore


@pytest.fixture(scope="module")
def analysed(captured_testbed):
    result = analyze_run(
        captured_testbed.run,
        accuracy=captured_testbed.testbed.accuracy_file,
        progress=False,
        write=False,
    )
    return result, RunStore(captured_testbed.run)


def _memorized(result, domain: str) -> pl.DataFrame:
    return result.tables["group_metrics"].filter(
        (pl.col("layer") == -1) & (pl.col("group") == "memorized") & (pl.col("domain") == domain)
    )


def test_group_churn_is_the_mean_over_members_whose_loss_stayed_within_delta(analysed):
    result, store = analysed
    onsets = result.tables["onsets"]
    delta = dict(result.tables["epsilon"].select("domain", "delta").rows())
    steps = store.steps
    checked = 0
    for domain in ("add", "facts"):
        members = onsets.filter((pl.col("domain") == domain) & (pl.col("mem_onset") != NEVER))
        index = members["sample_index"].to_numpy()
        rows = _memorized(result, domain).sort("step")
        assert np.isnan(rows["churn"][0]) and rows["churn_members"][0] == 0
        for t in range(1, len(steps)):
            before, after = store.load_checkpoint(steps[t - 1]), store.load_checkpoint(steps[t])
            churn = routing_churn(before.mean_weights[index], after.mean_weights[index])
            stable = np.abs(after.loss[index] - before.loss[index]) <= delta[domain]
            row = rows.filter(pl.col("step") == steps[t]).row(0, named=True)
            assert row["churn_members"] == stable.sum()
            expected = churn[stable].mean() if stable.any() else np.nan
            assert row["churn"] == pytest.approx(expected, nan_ok=True, rel=1e-6)
            checked += bool(stable.any())
    assert checked


def test_divergence_within_and_across_domains(analysed):
    result, store = analysed
    onsets = result.tables["onsets"].filter(pl.col("mem_onset") != NEVER)
    step = store.steps[-1]
    weights = store.load_checkpoint(step).mean_weights
    own = onsets.filter(pl.col("domain") == "add")["sample_index"].to_numpy()
    rest = onsets.filter(~pl.col("domain").is_in(["add"]))["sample_index"].to_numpy()
    row = _memorized(result, "add").filter(pl.col("step") == step).row(0, named=True)
    assert row["divergence_within"] == pytest.approx(mean_divergence(weights[own]))
    assert row["divergence_cross"] == pytest.approx(mean_divergence(weights[own], weights[rest]))


def test_churn_excess_subtracts_the_control_domain(analysed):
    result, _ = analysed
    series = result.tables["metric_series"]
    facts = series.filter(pl.col("domain") == "facts").select("step", control="churn")
    add = series.filter(pl.col("domain") == "add").join(facts, on="step")
    finite = add.filter(pl.col("churn").is_not_nan() & pl.col("control").is_not_nan())
    assert finite.height
    np.testing.assert_allclose(finite["churn_excess"], finite["churn"] - finite["control"])
    corr = result.tables["correlations"]
    assert {"churn", "churn_excess", "divergence_contrast", "distance_early"} <= set(corr["metric"])
