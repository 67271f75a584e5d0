"""T1–T6 on synthetic series with a known answer: a shared trend fails, a planted lead passes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pathwatch.errors import InputError
from pathwatch.evaluation.trends import TESTS, TrendCriteria, trend_table

SEEDS = range(6)
T = np.arange(40.0)


def _sigmoid(t: np.ndarray, center: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(t - center) / 2.0))


def _series() -> pl.DataFrame:
    """Two skill domains grokking at a seed- and domain-specific checkpoint, and a control.

    ``lead`` follows the run's own accuracy one checkpoint ahead; ``trend`` falls linearly in
    every run (a shared trend: it correlates with any rising accuracy); ``noise`` is noise;
    ``mirror`` tracks accuracy in every domain, the control's chance-level wiggles included.
    """
    frames = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        for k, domain in enumerate(("add", "mul", "facts")):
            if domain == "facts":
                acc = 0.02 + rng.normal(0, 0.01, T.size)
                ahead = np.full(T.size, 0.02)
            else:
                center = 10 + 4 * seed + 3 * k
                acc = _sigmoid(T, center) + rng.normal(0, 0.01, T.size)
                ahead = _sigmoid(T + 1, center)
            frames.append(
                pl.DataFrame(
                    {
                        "seed": seed,
                        "domain": domain,
                        "step": (100 * T).astype(np.int64),
                        "accuracy": acc,
                        "train_loss": np.exp(-T / 5) + rng.normal(0, 0.001, T.size),
                        "lead": 8 - 4 * ahead + rng.normal(0, 0.01, T.size),
                        "trend": 8 - 0.1 * T + rng.normal(0, 0.05, T.size),
                        "noise": rng.normal(size=T.size),
                        "mirror": 8 - 4 * acc,
                    }
                )
            )
    return pl.concat(frames)


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return trend_table(_series(), metrics=["lead", "trend", "noise", "mirror"])


def _get(table: pl.DataFrame, metric: str, test: str) -> dict:
    return table.filter((pl.col("metric") == metric) & (pl.col("test") == test)).row(0, named=True)


def test_a_shared_trend_correlates_in_levels_but_fails_t1_and_t3(table):
    series = _series().filter(pl.col("domain") != "facts")
    level = np.corrcoef(series["trend"], series["accuracy"])[0, 1]
    assert level < -0.6  # what a plain correlation would report as a strong signal
    for test in ("T1", "T3", "T5"):
        assert _get(table, "trend", test)["passed"] is False, test
    assert abs(_get(table, "trend", "T1")["statistic"]) < 0.2
    assert abs(_get(table, "trend", "T3")["statistic"]) < 0.1


def test_a_planted_lead_passes_t1_to_t5(table):
    for test in ("T1", "T2", "T3", "T4", "T5"):
        row = _get(table, "lead", test)
        assert row["passed"] is True, row
    assert _get(table, "lead", "T1")["statistic"] < -0.8
    assert _get(table, "lead", "T3")["p_value"] <= 1 / 1000
    assert _get(table, "lead", "T4")["n"] == 2 * len(SEEDS)


def test_noise_passes_nothing(table):
    for test in ("T1", "T2", "T3", "T5"):
        assert _get(table, "noise", test)["passed"] is False, test


def test_t5_leaves_one_seed_out_per_fold(table):
    row = _get(table, "lead", "T5")
    assert row["n"] == len(SEEDS)
    assert row["detail"] == f"error lower in {len(SEEDS)} of {len(SEEDS)} folds (need 5)"
    assert row["statistic"] > 0.5  # the median fold halves the error at least
    fewer = trend_table(_series().filter(pl.col("seed") < 5), metrics=["lead"])
    assert _get(fewer, "lead", "T5")["detail"].endswith("of 5 folds (need 4)")


def test_t6_is_zero_on_the_control_unless_the_metric_tracks_its_noise(table):
    assert _get(table, "lead", "T6")["passed"] is True  # lead is noise on the control
    assert abs(_get(table, "lead", "T6")["statistic"]) <= 0.2
    assert _get(table, "lead", "T6")["n"] == len(SEEDS)
    mirror = _get(table, "mirror", "T6")
    assert mirror["passed"] is False and mirror["statistic"] < -0.9
    no_control = trend_table(_series().filter(pl.col("domain") != "facts"), metrics=["lead"])
    assert _get(no_control, "lead", "T6")["passed"] is None
    # a metric that does not move at all on the control (churn minus the control's own) is ≈ 0
    flat = _series().with_columns(
        flat=pl.when(pl.col("domain") == "facts").then(0.0).otherwise(pl.col("lead"))
    )
    row = _get(trend_table(flat, metrics=["flat"]), "flat", "T6")
    assert row["passed"] is True and row["statistic"] == 0.0


def test_t4_is_undecided_below_its_run_count():
    few = trend_table(_series().filter(pl.col("seed") < 3), metrics=["lead"])
    row = _get(few, "lead", "T4")
    assert row["n"] == 6 and row["passed"] is None and "undecided" in row["detail"]


def test_the_training_loss_cannot_pass_t2_against_itself(table):
    own = trend_table(_series(), metrics=["train_loss"])
    assert _get(own, "train_loss", "T2")["passed"] is False
    assert np.isnan(_get(own, "train_loss", "T2")["statistic"])


def test_every_metric_gets_every_test(table):
    assert table.height == 4 * len(TESTS)
    assert (
        table.group_by("metric")
        .agg(pl.col("test"))["test"]
        .map_elements(sorted, return_dtype=pl.List(pl.String))
        .to_list()
        == [list(TESTS)] * 4
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alpha", 0),
        ("t1_min_r", 1.5),
        ("t3_permutations", 0),
        ("t4_min_runs", 2),
        ("t5_min_fold_fraction", -0.1),
        ("control_domains", "facts"),
        ("detector_window", 0),
    ],
)
def test_criteria_refuse_bad_thresholds(field, value):
    with pytest.raises(InputError, match=f"'{field}' parameter of TrendCriteria"):
        TrendCriteria(**{field: value})


def test_bad_series():
    with pytest.raises(InputError, match=r"lacks column\(s\) \['train_loss'\]"):
        trend_table(_series().drop("train_loss"), metrics=["lead"])
    with pytest.raises(InputError, match="'runs' parameter of trend_table"):
        trend_table(_series(), metrics=["lead"], runs=("arm",))
    with pytest.raises(InputError, match="'metrics' parameter of trend_table"):
        trend_table(_series(), metrics="lead")
