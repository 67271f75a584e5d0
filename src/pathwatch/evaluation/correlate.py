"""Validate the monitor against ground truth: the paper's Table 1, with statistics (SPEC §1, §2.3).

Per domain and metric: Pearson and Spearman correlation with accuracy over the checkpoints from the
start of accuracy's sustained rise on, with the number of checkpoints n, p-values (scipy.stats) and
percentile bootstrap confidence intervals that resample checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from pathwatch._validate import check_array, check_float, check_int, is_int
from pathwatch.errors import InputError, invalid_parameter

MIN_BOOTSTRAP_N = 4
"""Fewest pairs that get a bootstrap CI: resampling 3 points gives mostly ties and degenerate
replicates, so its intervals (e.g. [+0.69, +1.00]) would look far surer than 3 points are."""

NEEDS = ("training data", "held-out data")
"""What a metric needs: only the training data (test-free), or held-out data."""

#: The signals the validation study correlates with accuracy, in its order: what each needs (the
#: training data only, or held-out data of another or of the same distribution) and what kind of
#: signal it is (a routing metric, or a loss baseline).
SIGNALS: dict[str, tuple[str, str]] = {
    "distance": ("training data", "routing"),
    "distance_memorized": ("training data", "routing"),
    "distance_tracked": ("training data", "routing"),
    "consistency": ("training data", "routing"),
    "smoothness": ("training data", "routing"),
    "adjacent_cosine": ("training data", "routing"),
    "train_loss": ("training data", "baseline"),
    "train_loss_ma": ("training data", "baseline"),
    "validation_loss": ("held-out data, other distribution", "baseline"),
    "heldout_loss": ("held-out data, same distribution", "baseline"),
    # beyond the paper: the fixed early memorization group (last: the rows above keep their
    # bootstrap streams)
    "distance_early": ("training data", "routing"),
    # beyond the paper: routing churn of the memorized group (metrics/churn.py), minus the
    # control domains', and its divergence across domains minus within
    "churn": ("training data", "routing"),
    "churn_excess": ("training data", "routing"),
    "divergence_contrast": ("training data", "routing"),
}

CORRELATION_SCHEMA = {
    "domain": pl.String,
    "metric": pl.String,
    "needs": pl.String,
    "n": pl.Int64,
    "first_step": pl.Int64,
    "last_step": pl.Int64,
    "pearson_r": pl.Float64,
    "pearson_p": pl.Float64,
    "pearson_ci_low": pl.Float64,
    "pearson_ci_high": pl.Float64,
    "spearman_rho": pl.Float64,
    "spearman_p": pl.Float64,
    "spearman_ci_low": pl.Float64,
    "spearman_ci_high": pl.Float64,
}


def rise_start(steps: ArrayLike, accuracy: ArrayLike, *, floor: float = 0.1) -> int:
    """Checkpoint where accuracy's sustained rise begins.

    Rule: take the first checkpoint of peak accuracy and the lowest accuracy up to it; the rise
    starts at the last checkpoint before the peak whose accuracy is within ``floor`` × (peak −
    lowest) of the lowest — the last time accuracy sat on its floor before climbing to its peak.
    A flat or only falling series starts at the first checkpoint.

    Parameters
    ----------
    steps : int array of shape (T,)
        Checkpoint steps, strictly increasing.
    accuracy : array of shape (T,)
        Accuracy at each checkpoint, finite.
    floor : float, default 0.1
        Band above the lowest accuracy, as a fraction of the total rise, that still counts as floor.

    Returns
    -------
    int
        The step where the rise starts.

    Examples
    --------
    >>> rise_start([1, 2, 3, 4, 5, 6], [0.10, 0.12, 0.09, 0.30, 0.70, 0.90])
    3
    """
    step_arr = np.asarray(steps)
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.ndim != 1 or step_arr.shape != acc.shape or acc.size == 0:
        raise invalid_parameter(
            "rise_start",
            "accuracy",
            f"a non-empty 1-D array like steps {step_arr.shape}",
            acc.shape,
        )
    if not np.all(np.isfinite(acc)):
        raise invalid_parameter("rise_start", "accuracy", "finite", acc.tolist())
    if np.any(np.diff(step_arr) <= 0):
        raise invalid_parameter("rise_start", "steps", "strictly increasing", step_arr.tolist())
    if not 0 <= floor < 1:
        raise invalid_parameter("rise_start", "floor", "a float in [0, 1)", floor)
    peak = int(np.argmax(acc))
    lowest = acc[: peak + 1].min()
    on_floor = np.flatnonzero(acc[: peak + 1] <= lowest + floor * (acc[peak] - lowest))
    return int(step_arr[on_floor[-1]]) if acc[peak] > lowest else int(step_arr[0])


def moving_average(values: ArrayLike, window: int = 3) -> NDArray[np.float64]:
    """Trailing moving average, over the available points at the start (the paper's loss baseline).

    Parameters
    ----------
    values : array of shape (T,)
    window : int, default 3

    Returns
    -------
    array of shape (T,)
        ``out[t] = mean(values[max(0, t - window + 1) : t + 1])``.

    Examples
    --------
    >>> moving_average([3.0, 1.0, 2.0, 6.0]).tolist()
    [3.0, 2.0, 2.0, 3.0]
    """
    arr = check_array("moving_average", "values", values)
    if arr.ndim != 1:
        raise invalid_parameter("moving_average", "values", "a 1-D array", arr.shape)
    check_int("moving_average", "window", window, low=1)
    if arr.size == 0:
        return arr.copy()
    # sum each window directly: a running cumsum difference leaks round-off across the series,
    # so a constant series would not stay exactly constant
    padded = np.concatenate([np.zeros(window - 1), arr])
    sums = np.lib.stride_tricks.sliding_window_view(padded, window).sum(axis=1)
    return sums / np.minimum(np.arange(1, arr.size + 1), window)


def _rowwise_pearson(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pearson r of each row pair of (B, n) arrays; NaN where a row is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    r = (xc * yc).sum(axis=1) / np.where(constant, 1.0, den)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def _interval(samples: NDArray[np.float64], confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap replicates; NaN when there are none."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return np.nan, np.nan
    tail = 50 * (1 - confidence)
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def correlation_stats(
    x: ArrayLike,
    y: ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int = 0,
) -> dict[str, float]:
    """Pearson and Spearman correlation with p-values and bootstrap confidence intervals.

    Pairs with a NaN on either side are dropped. Fewer than 3 pairs, or a constant side, give NaN
    (never an error); fewer than ``MIN_BOOTSTRAP_N`` (4) give r, ρ and p but NaN intervals.

    Parameters
    ----------
    x, y : arrays of shape (n,)
    n_boot : int, default 2000
        Bootstrap replicates (pairs resampled with replacement).
    confidence : float, default 0.95
    rng : numpy Generator or int seed, default 0

    Returns
    -------
    dict
        ``n, pearson_r, pearson_p, pearson_ci_low, pearson_ci_high, spearman_rho, spearman_p,
        spearman_ci_low, spearman_ci_high``.

    Examples
    --------
    >>> out = correlation_stats([1, 2, 3, 4, 5], [2.0, 4.1, 5.9, 8.2, 9.9])
    >>> out["n"], round(out["pearson_r"], 3), round(out["spearman_rho"], 3)
    (5, 0.999, 1.0)
    """
    xa, ya = check_array("correlation_stats", "x", x), check_array("correlation_stats", "y", y)
    if xa.ndim != 1 or xa.shape != ya.shape:
        raise invalid_parameter(
            "correlation_stats", "y", f"a 1-D array of the shape of x {xa.shape}", ya.shape
        )
    _check_bootstrap("correlation_stats", n_boot, confidence)
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    n = int(xa.size)
    out = {"n": n} | dict.fromkeys(list(CORRELATION_SCHEMA)[6:], np.nan)
    if n < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return out
    pearson, spearman = stats.pearsonr(xa, ya), stats.spearmanr(xa, ya)
    out["pearson_r"], out["pearson_p"] = float(pearson.statistic), float(pearson.pvalue)
    out["spearman_rho"], out["spearman_p"] = float(spearman.statistic), float(spearman.pvalue)
    if n < MIN_BOOTSTRAP_N:
        return out
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = gen.integers(0, n, size=(n_boot, n))
    xb, yb = xa[idx], ya[idx]
    boot_r = _rowwise_pearson(xb, yb)
    boot_rho = _rowwise_pearson(stats.rankdata(xb, axis=1), stats.rankdata(yb, axis=1))
    out["pearson_ci_low"], out["pearson_ci_high"] = _interval(boot_r, confidence)
    out["spearman_ci_low"], out["spearman_ci_high"] = _interval(boot_rho, confidence)
    return out


def _check_bootstrap(func: str, n_boot: object, confidence: object) -> None:
    check_int(func, "n_boot", n_boot, low=1)
    check_float(func, "confidence", confidence, low=0, high=1, low_open=True, high_open=True)


def _require(table: pl.DataFrame, columns: list[str], name: str) -> None:
    if not isinstance(table, pl.DataFrame):
        raise invalid_parameter("correlation_table", name, "a polars DataFrame", table)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{name} lacks column(s) {missing}; it has {table.columns}. "
            "Expected step, domain and the named columns."
        )


def correlation_table(
    metrics_df: pl.DataFrame,
    accuracy_df: pl.DataFrame,
    *,
    metrics: Mapping[str, str],
    start: str | int = "auto",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pl.DataFrame:
    """Correlation of each metric with accuracy, per domain: the ``correlations`` table.

    Parameters
    ----------
    metrics_df : polars.DataFrame
        Columns ``step``, ``domain`` and one column per metric (one row per step and domain).
    accuracy_df : polars.DataFrame
        Columns ``step``, ``domain``, ``accuracy`` (see :func:`pathwatch.evaluation.read_accuracy`).
    metrics : mapping of str to str
        Metric column → what it needs, ``"training data"`` or ``"held-out data"``.
    start : "auto" or int, default "auto"
        First step of the window: per domain by :func:`rise_start`, or this step for all.
    n_boot : int, default 2000
        Bootstrap replicates; checkpoints are resampled with replacement.
    confidence : float, default 0.95
    seed : int, default 0
        Seed of the bootstrap; each (domain, metric) gets its own stream from it.

    Returns
    -------
    polars.DataFrame
        ``domain, metric, needs, n, first_step, last_step, pearson_r, pearson_p,
        pearson_ci_low, pearson_ci_high, spearman_rho, spearman_p, spearman_ci_low,
        spearman_ci_high``; n < 3 or a constant series gives NaN statistics with n reported,
        n < 4 NaN confidence intervals.

    Examples
    --------
    >>> m = pl.DataFrame({"step": [1, 2, 3, 4], "domain": "math", "distance": [9.0, 8, 6, 5]})
    >>> a = pl.DataFrame({"step": [1, 2, 3, 4], "domain": "math", "accuracy": [0.1, 0.3, 0.6, 0.9]})
    >>> correlation_table(m, a, metrics={"distance": "training data"})["spearman_rho"].to_list()
    [-1.0]
    """
    if not isinstance(metrics, Mapping):
        raise invalid_parameter(
            "correlation_table", "metrics", "a mapping metric -> needs", metrics
        )
    for metric, needs in metrics.items():
        if needs not in NEEDS:
            raise invalid_parameter(
                "correlation_table", "metrics", f"values in {NEEDS}", {metric: needs}
            )
    if not (start == "auto" or (is_int(start) and start >= 0)):
        raise invalid_parameter("correlation_table", "start", "'auto' or an int step >= 0", start)
    _check_bootstrap("correlation_table", n_boot, confidence)
    check_int("correlation_table", "seed", seed, low=0)
    _require(metrics_df, ["step", "domain", *metrics], "metrics_df")
    _require(accuracy_df, ["step", "domain", "accuracy"], "accuracy_df")
    joined = metrics_df.select("step", "domain", *metrics).join(
        accuracy_df.select("step", "domain", "accuracy"), on=["step", "domain"], how="inner"
    )
    dup = joined.filter(joined.select("step", "domain").is_duplicated())
    if dup.height:
        raise InputError(
            f"metrics_df has several rows for step {dup['step'][0]} of domain {dup['domain'][0]!r}; "
            "expected one row per step and domain."
        )
    rows = []
    for i, domain in enumerate(sorted(joined["domain"].unique().to_list())):
        part = joined.filter(pl.col("domain") == domain).sort("step")
        steps, acc = part["step"].to_numpy(), part["accuracy"].to_numpy().astype(np.float64)
        first = rise_start(steps, acc) if start == "auto" else int(start)
        window = steps >= first
        for j, (metric, needs) in enumerate(metrics.items()):
            values = part[metric].cast(pl.Float64).fill_null(np.nan).to_numpy()
            used = window & np.isfinite(values)
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, j)))
            result = correlation_stats(
                values[window], acc[window], n_boot=n_boot, confidence=confidence, rng=rng
            )
            bounds = (int(steps[used][0]), int(steps[used][-1])) if used.any() else (None, None)
            rows.append(
                {"domain": domain, "metric": metric, "needs": needs}
                | {"first_step": bounds[0], "last_step": bounds[1]}
                | result
            )
    return pl.DataFrame(rows, schema=CORRELATION_SCHEMA)


def _fisher_pool(r: np.ndarray) -> tuple[float, float, float]:
    """Mean correlation over seeds (Fisher z) with a 95% t interval over seeds; NaN CI for n < 2."""
    z = np.arctanh(np.clip(r[np.isfinite(r)], -0.9999, 0.9999))
    if z.size == 0:
        return np.nan, np.nan, np.nan
    mean = float(np.tanh(z.mean()))
    if z.size < 2:
        return mean, np.nan, np.nan
    half = stats.t.ppf(0.975, z.size - 1) * z.std(ddof=1) / np.sqrt(z.size)
    return mean, float(np.tanh(z.mean() - half)), float(np.tanh(z.mean() + half))


def pooled_correlations(per_seed: pl.DataFrame, *, by: Sequence[str]) -> pl.DataFrame:
    """Pool per-seed Pearson r over seeds: Fisher-z mean with a 95% t interval over seeds.

    Parameters
    ----------
    per_seed : polars.DataFrame
        Columns ``by`` and ``pearson_r`` (one row per seed and group).
    by : sequence of str
        Grouping columns.

    Returns
    -------
    polars.DataFrame
        ``by``, n_seeds, r_mean, r_ci_low, r_ci_high, n_negative (seeds with r < 0).

    Examples
    --------
    >>> t = pl.DataFrame({"metric": ["d"] * 3, "pearson_r": [-0.9, -0.8, -0.85]})
    >>> round(pooled_correlations(t, by=["metric"])["r_mean"][0], 2)
    -0.86
    """
    rows = []
    for keys, part in per_seed.group_by(list(by), maintain_order=True):
        r = part["pearson_r"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        mean, low, high = _fisher_pool(r)
        rows.append(
            dict(zip(by, keys, strict=True))
            | {
                "n_seeds": int(np.isfinite(r).sum()),
                "r_mean": mean,
                "r_ci_low": low,
                "r_ci_high": high,
                "n_negative": int((r < 0).sum()),
            }
        )
    schema = {c: per_seed.schema[c] for c in by} | {
        "n_seeds": pl.Int64,
        "r_mean": pl.Float64,
        "r_ci_low": pl.Float64,
        "r_ci_high": pl.Float64,
        "n_negative": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema)
