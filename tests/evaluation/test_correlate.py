"""Table 1: correlations with n, p-values and bootstrap intervals; rise detection; moving average."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from pathwatch.errors import InputError
from pathwatch.evaluation import correlation_stats, correlation_table, moving_average, rise_start
from pathwatch.evaluation.correlate import _rowwise_pearson

COLUMNS = [
    "domain", "metric", "needs", "n", "first_step", "last_step",
    "pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high",
    "spearman_rho", "spearman_p", "spearman_ci_low", "spearman_ci_high",
]  # fmt: skip


def test_point_estimates_and_p_values_are_scipys():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = x + rng.normal(size=12)
    out = correlation_stats(x, y, n_boot=200)
    assert out["n"] == 12
    assert out["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert out["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue)
    assert out["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert out["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    assert out["pearson_ci_low"] <= out["pearson_r"] <= out["pearson_ci_high"]
    assert correlation_stats(x, y, n_boot=200) == out  # seeded


@settings(max_examples=100, deadline=None)
@given(
    st.integers(2, 9).flatmap(
        lambda n: arrays(np.float64, (2, 5, n), elements=st.integers(-3, 3).map(float))
    )
)
def test_rowwise_pearson_matches_corrcoef(pair):
    x, y = pair
    got = _rowwise_pearson(x, y)
    for b in range(x.shape[0]):
        if np.ptp(x[b]) == 0 or np.ptp(y[b]) == 0:
            assert np.isnan(got[b])
        else:
            assert got[b] == pytest.approx(np.corrcoef(x[b], y[b])[0, 1], abs=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "n"),
    [
        ([1.0, 2.0], [3.0, 4.0], 2),
        ([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, np.nan], 2),
        ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], 4),
        ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0], 3),
        ([], [], 0),
    ],
)
def test_too_few_points_or_constant_series_give_nan_not_a_crash(x, y, n):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = correlation_stats(x, y)
    assert out["n"] == n
    assert all(np.isnan(v) for k, v in out.items() if k != "n")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_covers_the_true_correlation(seed):
    rho = 0.8
    rng = np.random.default_rng(seed)
    xy = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=40)
    out = correlation_stats(xy[:, 0], xy[:, 1], rng=seed)
    assert out["pearson_ci_low"] < rho < out["pearson_ci_high"]
    # Spearman's population value for a bivariate normal
    rho_s = 6 / np.pi * np.arcsin(rho / 2)
    assert out["spearman_ci_low"] < rho_s < out["spearman_ci_high"]
    assert out["pearson_ci_high"] - out["pearson_ci_low"] < 0.5


def test_independent_series_mostly_cover_zero():
    rng = np.random.default_rng(7)
    covered = []
    for trial in range(40):
        x, y = rng.normal(size=(2, 15))
        out = correlation_stats(x, y, n_boot=1000, rng=trial)
        covered.append(out["pearson_ci_low"] < 0 < out["pearson_ci_high"])
    assert np.mean(covered) >= 0.8


@pytest.mark.parametrize(
    ("accuracy", "start"),
    [
        ([0.10, 0.12, 0.09, 0.30, 0.70, 0.90], 3),  # floor, then a sustained rise
        ([0.10, 0.30, 0.50, 0.70], 1),  # rising from the first checkpoint
        (
            [0.10, 0.11, 0.10, 0.50, 0.20, 0.80, 0.90],
            3,
        ),  # a dip inside the rise does not restart it
        ([0.50, 0.50, 0.50], 1),  # flat: everything
        ([0.90, 0.50, 0.20], 1),  # only falling: everything
        ([0.2, 0.1, 0.9, 0.1, 0.2], 2),  # after the peak nothing counts
    ],
)
def test_rise_start(accuracy, start):
    assert rise_start(np.arange(1, len(accuracy) + 1), accuracy) == start


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 15), elements=st.floats(0, 1)))
def test_rise_start_is_the_last_floor_point_before_the_peak(acc):
    steps = np.arange(acc.size) * 10
    start = rise_start(steps, acc)
    i, peak = start // 10, int(np.argmax(acc))
    assert i <= peak
    lowest = acc[: peak + 1].min()
    band = lowest + 0.1 * (acc[peak] - lowest)
    if acc[peak] > lowest:
        assert acc[i] <= band
        assert np.all(acc[i + 1 : peak + 1] > band)  # never back on the floor once it rose
    else:
        assert i == 0


def test_rise_start_bad_input():
    with pytest.raises(InputError, match="'accuracy' parameter of rise_start must be finite"):
        rise_start([1, 2], [0.1, np.nan])
    with pytest.raises(
        InputError, match="'steps' parameter of rise_start must be strictly increasing"
    ):
        rise_start([2, 1], [0.1, 0.2])


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 20), elements=st.floats(-100, 100)), st.integers(1, 6))
def test_moving_average_is_the_trailing_mean(values, window):
    expected = [values[max(0, t - window + 1) : t + 1].mean() for t in range(values.size)]
    np.testing.assert_allclose(moving_average(values, window), expected, atol=1e-9)


def test_moving_average_keeps_a_constant_exact_and_a_nan_local():
    np.testing.assert_array_equal(
        moving_average([-683.2054556071237] * 5, 1), [-683.2054556071237] * 5
    )
    np.testing.assert_array_equal(
        moving_average([1.0, np.nan, 2.0, 3.0, 4.0], 2), [1.0, np.nan, np.nan, 2.5, 3.5]
    )


def series():
    """Two domains: math rises from step 400 on and distance falls with it; code has 2 checkpoints."""
    steps = np.arange(100, 1100, 100)
    acc = np.r_[0.1, 0.1, 0.11, 0.1, 0.3, 0.45, 0.6, 0.7, 0.85, 0.9]
    rng = np.random.default_rng(0)
    distance = 10 - 5 * acc + rng.normal(scale=0.05, size=10)
    distance[:4] = [8.0, 9.0, 9.5, 9.8]  # rises while memorizing, before accuracy moves
    consistency = np.r_[np.nan, np.nan, rng.uniform(size=8)]
    metrics = pl.DataFrame(
        {
            "step": np.r_[steps, 100, 200],
            "domain": ["math"] * 10 + ["code"] * 2,
            "distance": np.r_[distance, 1.0, 2.0],
            "consistency": np.r_[consistency, 0.1, 0.2],
        }
    )
    accuracy = pl.DataFrame(
        {
            "step": np.r_[steps, 100, 200],
            "domain": ["math"] * 10 + ["code"] * 2,
            "accuracy": np.r_[acc, 0.2, 0.4],
        }
    )
    return metrics, accuracy


def test_correlation_table_windows_from_the_rise():
    metrics, accuracy = series()
    table = correlation_table(
        metrics,
        accuracy,
        metrics={"distance": "training data", "consistency": "training data"},
        n_boot=500,
    )
    assert table.columns == COLUMNS
    math = table.filter(pl.col("domain") == "math", pl.col("metric") == "distance").row(
        0, named=True
    )
    assert (math["n"], math["first_step"], math["last_step"]) == (7, 400, 1000)
    assert math["pearson_r"] < -0.95 and math["spearman_rho"] < -0.9 and math["pearson_ci_high"] < 0
    whole = correlation_table(
        metrics, accuracy, metrics={"distance": "training data"}, start=100, n_boot=500
    )
    assert whole.filter(pl.col("domain") == "math")["n"].item() == 10
    assert whole.filter(pl.col("domain") == "math")["pearson_r"].item() > math["pearson_r"]
    code = table.filter(pl.col("domain") == "code")
    assert code["n"].to_list() == [2, 2] and code["pearson_r"].is_nan().all()


def test_nan_metric_values_are_left_out_and_counted():
    metrics, accuracy = series()
    table = correlation_table(
        metrics, accuracy, metrics={"consistency": "training data"}, start=200, n_boot=100
    )
    math = table.filter(pl.col("domain") == "math").row(0, named=True)
    assert (math["n"], math["first_step"]) == (8, 300)


def test_correlation_table_is_seeded_and_needs_is_carried():
    metrics, accuracy = series()
    kwargs = {"metrics": {"distance": "held-out data"}, "n_boot": 300}
    a = correlation_table(metrics, accuracy, seed=3, **kwargs)
    assert a.equals(correlation_table(metrics, accuracy, seed=3, **kwargs))
    assert not a.equals(correlation_table(metrics, accuracy, seed=4, **kwargs))
    assert a["needs"].unique().to_list() == ["held-out data"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"metrics": {"distance": "test data"}},
            r"'metrics' parameter of correlation_table must be values in",
        ),
        ({"metrics": {"loss": "training data"}}, r"metrics_df lacks column\(s\) \['loss'\]"),
        ({"metrics": {"distance": "training data"}, "start": "late"}, r"'start' parameter"),
    ],
)
def test_correlation_table_bad_input(kwargs, match):
    metrics, accuracy = series()
    with pytest.raises(InputError, match=match):
        correlation_table(metrics, accuracy, **kwargs)


def test_duplicate_rows_are_refused():
    metrics, accuracy = series()
    with pytest.raises(InputError, match="several rows for step 100 of domain 'code'"):
        correlation_table(
            pl.concat([metrics, metrics.tail(1).with_columns(step=pl.lit(100, dtype=pl.Int64))]),
            accuracy,
            metrics={"distance": "training data"},
        )


def test_three_checkpoints_get_r_and_p_but_no_bootstrap_ci():
    from pathwatch.evaluation import correlation_stats

    three = correlation_stats([1.0, 2.0, 4.0], [0.1, 0.5, 0.6])
    assert np.isfinite(three["pearson_r"]) and np.isfinite(three["spearman_p"])
    assert all(np.isnan(three[k]) for k in three if "_ci_" in k)
    four = correlation_stats([1.0, 2.0, 4.0, 3.0], [0.1, 0.5, 0.6, 0.55])
    assert all(np.isfinite(four[k]) for k in four if "_ci_" in k)
