"""Statistics that a shared trend cannot pass, applied identically to every metric and baseline.

A routing metric and accuracy that both drift over training correlate whatever the metric means;
so does the training loss. The six tests here ask more of a signal, each with thresholds fixed in
:class:`TrendCriteria` before any run:

- **T1** changes: Pearson r of the step-to-step changes, Δmetric against Δaccuracy, per run;
  Fisher-z mean over runs, t-test of the runs' z against 0.
- **T2** partial: Pearson r of metric and accuracy after both are regressed on step and training
  loss (``numpy.linalg.lstsq``), per run; pooled as T1.
- **T3** matched minus mismatched: each run's metric against its own accuracy and against the
  accuracy of the other runs of the same domain (over their common steps); the gap of the mean
  correlations, signed by the matched one, with a permutation p-value (runs' accuracy series
  shuffled within each domain).
- **T4** timing: over at least ``t4_min_runs`` runs, Spearman ρ between the step the detector
  (:func:`pathwatch.evaluation.leadlag.detect_generalization`, which watches for a *fall*) fires
  on the metric and the step accuracy first reaches ``level``.
- **T5** prediction: leave one seed out, predict next-checkpoint accuracy from step and training
  loss by least squares (per domain), with and without the metric; the metric must lower the
  held-out squared error by ``t5_min_gain`` (relative) in ``t5_min_fold_fraction`` of the folds.
- **T6** control: on the control domains (memorize-only, accuracy at chance) the T1 correlation
  must be ≈ 0: ``|r| <= t6_max_abs_r``.

T1–T5 use the other (skill) domains. A run is one (``runs`` columns, domain) series. T1–T3 and
T6 are sign-free (a metric may fall or rise with accuracy); T4's detector watches for a fall
relative to the running maximum, as the study's detector does, so a metric that rises with accuracy
is tested there through its mirror (``smoothness`` = 1 − ``consistency``), and a metric that can be
negative (``churn_excess``) is tested as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import NDArray
from scipy import stats

from pathwatch._validate import check_float, check_int
from pathwatch.errors import InputError, invalid_parameter
from pathwatch.evaluation.leadlag import crossing_step, detect_generalization

TESTS = ("T1", "T2", "T3", "T4", "T5", "T6")
TREND_SCHEMA = {
    "metric": pl.String,
    "test": pl.String,
    "statistic": pl.Float64,
    "p_value": pl.Float64,
    "n": pl.Int64,
    "passed": pl.Boolean,
    "detail": pl.String,
}


@dataclass(frozen=True)
class TrendCriteria:
    """The thresholds of T1–T6, fixed before the runs (defaults: the study's).

    Attributes
    ----------
    alpha : float, default 0.05
        Largest p-value of a pass (T1, T2, T3, T4).
    t1_min_r, t2_min_r : float, default 0.3
        Smallest |pooled r| of the changes (T1) and of the partial correlation (T2).
    t3_min_gap : float, default 0.1
        Smallest matched − mismatched gap of the mean correlations (in r).
    t3_permutations : int, default 2000
    t4_min_runs : int, default 8
        Runs where the detector fired and accuracy crossed, at least.
    t4_min_rho : float, default 0.5
    t5_min_gain : float, default 0.01
        Relative fall of the held-out squared error that counts as lower (T5).
    t5_min_fold_fraction : float, default 0.8
        Fraction of the folds in which the error must fall (4 of 5).
    t6_max_abs_r : float, default 0.2
    level : float, default 0.5
        Accuracy level of the crossing (T4).
    control_domains : tuple of str, default ("facts",)
        Domains that cannot generalize: T6 only.
    detector_run, detector_min_drop, detector_window
        The detector's parameters (T4), as in the study.
    seed : int, default 0
        Seed of the permutations.

    Examples
    --------
    >>> TrendCriteria().t4_min_runs
    8
    >>> TrendCriteria(alpha=2)
    Traceback (most recent call last):
    ...
    pathwatch.errors.InputError: The 'alpha' parameter of TrendCriteria must be a float in (0, 1). Got 2 instead.
    """

    alpha: float = 0.05
    t1_min_r: float = 0.3
    t2_min_r: float = 0.3
    t3_min_gap: float = 0.1
    t3_permutations: int = 2000
    t4_min_runs: int = 8
    t4_min_rho: float = 0.5
    t5_min_gain: float = 0.01
    t5_min_fold_fraction: float = 0.8
    t6_max_abs_r: float = 0.2
    level: float = 0.5
    control_domains: tuple[str, ...] = ("facts",)
    detector_run: int = 3
    detector_min_drop: float = 0.05
    detector_window: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        func = "TrendCriteria"
        open_unit = {"low": 0, "high": 1, "low_open": True, "high_open": True}
        for name in ("alpha", "level"):
            check_float(func, name, getattr(self, name), **open_unit)
        for name in ("t1_min_r", "t2_min_r", "t4_min_rho", "t6_max_abs_r"):
            check_float(func, name, getattr(self, name), low=0, high=1)
        check_float(func, "t3_min_gap", self.t3_min_gap, low=0, high=2)
        check_float(func, "t5_min_gain", self.t5_min_gain, low=0, high=1, high_open=True)
        check_float(func, "t5_min_fold_fraction", self.t5_min_fold_fraction, low=0, high=1)
        check_int(func, "t3_permutations", self.t3_permutations, low=1)
        check_int(func, "t4_min_runs", self.t4_min_runs, low=3)
        domains = self.control_domains
        if (
            isinstance(domains, str)
            or not isinstance(domains, Iterable)
            or not all(isinstance(d, str) and d for d in domains)
        ):
            raise invalid_parameter(func, "control_domains", "a tuple of domain names", domains)
        object.__setattr__(self, "control_domains", tuple(domains))
        check_int(func, "detector_run", self.detector_run, low=1)
        check_float(
            func, "detector_min_drop", self.detector_min_drop, low=0, high=1, high_open=True
        )
        check_int(func, "detector_window", self.detector_window, low=1)
        check_int(func, "seed", self.seed, low=0)

    def describe(self) -> str:
        """The criteria in one line, as the study's report states them."""
        return (
            f"T1 |r(Δmetric, Δaccuracy)| ≥ {self.t1_min_r:g}; T2 |partial r| ≥ {self.t2_min_r:g} "
            f"(step and training loss controlled); T3 matched − mismatched ≥ {self.t3_min_gap:g} "
            f"({self.t3_permutations} permutations); T1–T3 with p ≤ {self.alpha:g}; T4 Spearman ρ "
            f"≥ {self.t4_min_rho:g} (p ≤ {self.alpha:g}) over ≥ {self.t4_min_runs} runs between "
            f"the detector's firing and accuracy reaching {self.level:g}; T5 next-checkpoint "
            f"accuracy error lower by ≥ {self.t5_min_gain:.0%} with the metric in ≥ "
            f"{self.t5_min_fold_fraction:.0%} of the leave-one-seed-out folds; T6 |r(Δmetric, "
            f"Δaccuracy)| ≤ {self.t6_max_abs_r:g} on the control domains "
            f"({', '.join(self.control_domains) or 'none'})."
        )


@dataclass(frozen=True)
class _Run:
    """One run's series, sorted by step."""

    key: tuple
    seed: int
    domain: str
    steps: NDArray[np.int64]
    accuracy: NDArray[np.float64]
    loss: NDArray[np.float64]
    columns: dict[str, NDArray[np.float64]]


def _pearson(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """Pearson r over the pairs finite on both sides; NaN with < 3 pairs or a constant side."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.pearsonr(x, y).statistic)


def _pooled(r: Sequence[float]) -> tuple[float, float, int]:
    """Fisher-z mean of per-run r (as r), the t-test p-value of the z against 0, the run count."""
    z = np.arctanh(np.clip(np.asarray([v for v in r if np.isfinite(v)]), -0.9999, 0.9999))
    if z.size == 0:
        return math.nan, math.nan, 0
    if z.size < 2:
        p = math.nan
    elif np.ptp(z) == 0:  # every run agrees exactly: the t statistic is infinite (or 0 / 0)
        p = 0.0 if z[0] != 0 else 1.0
    else:
        p = float(stats.ttest_1samp(z, 0.0).pvalue)
    return float(np.tanh(z.mean())), p, int(z.size)


def _changes_r(run: _Run, metric: str) -> float:
    """T1 of one run: r of step-to-step changes of the metric and of accuracy; 0 where the
    metric does not change at all (it cannot move with accuracy), NaN where it is undefined."""
    change, acc_change = np.diff(run.columns[metric]), np.diff(run.accuracy)
    finite = np.isfinite(change) & np.isfinite(acc_change)
    if finite.sum() >= 3 and np.all(change[finite] == 0):
        return 0.0
    return _pearson(change, acc_change)


def _residual(design: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """y minus its least-squares fit on ``design``; NaN where nothing is left of y."""
    fit, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ fit
    spread = np.linalg.norm(y - y.mean())
    if spread == 0 or np.linalg.norm(residual) <= 1e-9 * spread:
        return np.full(y.shape, np.nan)
    return residual


def _partial_r(run: _Run, metric: str) -> float:
    """T2 of one run: r of metric and accuracy with step and training loss regressed out."""
    values = run.columns[metric]
    keep = np.isfinite(values) & np.isfinite(run.accuracy) & np.isfinite(run.loss)
    if keep.sum() < 5:
        return math.nan
    design = np.column_stack([np.ones(keep.sum()), run.steps[keep], run.loss[keep]])
    return _pearson(_residual(design, values[keep]), _residual(design, run.accuracy[keep]))


def _cross_r(metric_run: _Run, accuracy_run: _Run, metric: str) -> float:
    """r of one run's metric against another run's accuracy, over their common steps."""
    _, i, j = np.intersect1d(metric_run.steps, accuracy_run.steps, return_indices=True)
    return _pearson(metric_run.columns[metric][i], accuracy_run.accuracy[j])


def _matched_gap(runs: list[_Run], metric: str, criteria: TrendCriteria) -> dict:
    """T3: matched − mismatched mean correlation, signed by the matched mean, with a permutation p."""
    matrices = []
    for domain in sorted({r.domain for r in runs}):
        group = [r for r in runs if r.domain == domain]
        if len(group) >= 2:
            z = np.array([[_cross_r(a, b, metric) for b in group] for a in group])
            matrices.append(np.arctanh(np.clip(z, -0.9999, 0.9999)))
    if not matrices:
        return _row(metric, "T3", detail="needs 2 runs of a domain")
    rng = np.random.default_rng(criteria.seed)

    def gaps(assignments: list[NDArray[np.int64]]) -> NDArray[np.float64]:
        """Mean matched minus mean mismatched z, for each row of assignments (P, ·) per domain."""
        hit_sum = hit_n = all_sum = all_n = 0.0
        for z, perm in zip(matrices, assignments, strict=True):
            picked = z[np.arange(z.shape[0]), perm]  # (P, R)
            finite = np.isfinite(picked)
            hit_sum = hit_sum + np.where(finite, picked, 0).sum(axis=1)
            hit_n = hit_n + finite.sum(axis=1)
            all_sum += np.nansum(z)
            all_n += np.isfinite(z).sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            matched = hit_sum / hit_n
            mismatched = (all_sum - hit_sum) / (all_n - hit_n)
        return np.tanh(matched), np.tanh(mismatched)

    identity = [np.arange(z.shape[0])[None] for z in matrices]
    matched, mismatched = (float(v[0]) for v in gaps(identity))
    if not (np.isfinite(matched) and np.isfinite(mismatched)):
        return _row(metric, "T3", detail="no finite matched and mismatched correlations")
    sign = 1.0 if matched >= 0 else -1.0
    observed = sign * (matched - mismatched)
    shuffled = [
        rng.permuted(np.tile(np.arange(z.shape[0]), (criteria.t3_permutations, 1)), axis=1)
        for z in matrices
    ]
    perm_matched, perm_mismatched = gaps(shuffled)
    null = sign * (perm_matched - perm_mismatched)
    p = float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))
    n = sum(z.shape[0] for z in matrices)
    return _row(
        metric,
        "T3",
        statistic=observed,
        p_value=p,
        n=n,
        passed=observed >= criteria.t3_min_gap and p <= criteria.alpha,
        detail=f"matched r {matched:+.2f}, mismatched r {mismatched:+.2f}",
    )


def _timing(runs: list[_Run], metric: str, onset: str | None, criteria: TrendCriteria) -> dict:
    """T4: Spearman ρ of the detector's firing step and accuracy's crossing step over runs."""
    fired, crossed = [], []
    for run in runs:
        cross = crossing_step(run.steps, run.accuracy, level=criteria.level)
        start = None
        if onset is not None:
            marks = run.steps[np.isfinite(run.columns[onset])]
            if not marks.size:
                continue
            start = int(marks[0])
        signal = run.columns[metric]
        if cross is None or not np.isfinite(signal).any():
            continue
        fire = detect_generalization(
            run.steps,
            signal,
            onset=start,
            run=criteria.detector_run,
            min_drop=criteria.detector_min_drop,
            window=criteria.detector_window,
        )
        if fire is not None:
            fired.append(fire)
            crossed.append(cross)
    n = len(fired)
    detail = f"fired in {n} runs that crossed {criteria.level:g}"
    if n < 3 or np.ptp(fired) == 0 or np.ptp(crossed) == 0:
        return _row(metric, "T4", n=n, detail=detail)
    rho = stats.spearmanr(fired, crossed)
    statistic, p = float(rho.statistic), float(rho.pvalue)
    passed = None
    if n >= criteria.t4_min_runs:
        passed = statistic >= criteria.t4_min_rho and p <= criteria.alpha
    else:
        detail += f" (< {criteria.t4_min_runs}: undecided)"
    return _row(metric, "T4", statistic=statistic, p_value=p, n=n, passed=passed, detail=detail)


def _fold_errors(train: list[_Run], test: list[_Run], metric: str) -> tuple[float, float] | None:
    """T5 of one fold: held-out squared error of next-checkpoint accuracy without / with the
    metric, summed over domains (least squares per domain); None when nothing can be fit."""
    sse = np.zeros(2)
    used = False
    for domain in sorted({r.domain for r in test}):
        fit_rows = _next_rows([r for r in train if r.domain == domain], metric)
        held_rows = _next_rows([r for r in test if r.domain == domain], metric)
        if held_rows.shape[0] == 0 or fit_rows.shape[0] <= 5:
            continue
        for k, width in enumerate((3, 4)):  # intercept, step, loss (+ metric)
            fit, *_ = np.linalg.lstsq(fit_rows[:, :width], fit_rows[:, -1], rcond=None)
            sse[k] += float(np.sum((held_rows[:, :width] @ fit - held_rows[:, -1]) ** 2))
        used = True
    return (float(sse[0]), float(sse[1])) if used else None


def _next_rows(runs: list[_Run], metric: str) -> NDArray[np.float64]:
    """Rows (1, step, loss, metric, next accuracy) of the runs' checkpoints, finite only."""
    parts = [
        np.column_stack(
            [np.ones(r.steps.size - 1), r.steps[:-1], r.loss[:-1], r.columns[metric][:-1]]
        )
        for r in runs
        if r.steps.size >= 2
    ]
    targets = [r.accuracy[1:] for r in runs if r.steps.size >= 2]
    if parts:
        rows = np.column_stack([np.concatenate(parts), np.concatenate(targets)])
    else:
        rows = np.empty((0, 5))
    return rows[np.isfinite(rows).all(axis=1)]


def _prediction(runs: list[_Run], metric: str, criteria: TrendCriteria) -> dict:
    """T5: leave-one-seed-out folds in which the metric lowers the next-accuracy error."""
    gains = []
    for seed in sorted({r.seed for r in runs}):
        errors = _fold_errors(
            [r for r in runs if r.seed != seed], [r for r in runs if r.seed == seed], metric
        )
        if errors is not None and errors[0] > 0:
            gains.append(1 - errors[1] / errors[0])
    if len(gains) < 2:
        return _row(metric, "T5", n=len(gains), detail="needs 2 seeds with a fit")
    better = int(np.sum(np.asarray(gains) > criteria.t5_min_gain))
    need = math.ceil(criteria.t5_min_fold_fraction * len(gains) - 1e-9)
    return _row(
        metric,
        "T5",
        statistic=float(np.median(gains)),
        n=len(gains),
        passed=better >= need,
        detail=f"error lower in {better} of {len(gains)} folds (need {need})",
    )


def _row(
    metric: str,
    test: str,
    *,
    statistic: float = math.nan,
    p_value: float = math.nan,
    n: int = 0,
    passed: bool | None = None,
    detail: str = "",
) -> dict:
    return {
        "metric": metric,
        "test": test,
        "statistic": statistic,
        "p_value": p_value,
        "n": n,
        "passed": None if passed is None else bool(passed),
        "detail": detail,
    }


def _runs(series: pl.DataFrame, runs: Sequence[str], metrics: list[str], columns: list[str]):
    out = []
    for key, part in series.sort("step").group_by([*runs, "domain"], maintain_order=True):
        values = {
            c: part[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in {*metrics, *columns}
        }
        out.append(
            _Run(
                key=tuple(key),
                seed=int(part["seed"][0]),
                domain=str(key[-1]),
                steps=part["step"].to_numpy().astype(np.int64),
                accuracy=part["accuracy"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                loss=part["train_loss"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                columns=values,
            )
        )
    return out


def trend_table(
    series: pl.DataFrame,
    *,
    metrics: Sequence[str],
    criteria: TrendCriteria | None = None,
    runs: Sequence[str] = ("seed",),
    onset: str | None = None,
) -> pl.DataFrame:
    """T1–T6 of every metric, one row per metric and test.

    Parameters
    ----------
    series : polars.DataFrame
        Long table, one row per run, domain and checkpoint: the ``runs`` columns (``seed`` among
        them), ``domain``, ``step``, ``accuracy``, ``train_loss`` and the ``metrics``.
    metrics : sequence of str
        Columns to test: routing metrics and loss baselines alike.
    criteria : TrendCriteria, optional
    runs : sequence of str, default ("seed",)
        Columns that name a run (with ``domain``); T5's folds leave one ``seed`` out.
    onset : str, optional
        A column whose first finite value per run is where T4's detector starts watching (e.g.
        ``distance_tracked``: the first memorization); runs where it never is are left out of T4.
        None watches from the first checkpoint.

    Returns
    -------
    polars.DataFrame
        ``metric, test, statistic, p_value, n, passed, detail``; ``passed`` is null where the
        test cannot decide (too few runs, no control domain).

    Examples
    --------
    >>> steps = np.arange(10)
    >>> acc = 1 / (1 + np.exp(-(steps - 5.0)))
    >>> table = pl.DataFrame({"seed": 0, "domain": "add", "step": steps, "accuracy": acc,
    ...                       "train_loss": 2 - 0.1 * steps, "lead": -acc})
    >>> t1 = trend_table(table, metrics=["lead"]).filter(pl.col("test") == "T1")
    >>> round(t1["statistic"][0], 2), t1["n"][0], t1["passed"][0]  # one run: undecided
    (-1.0, 1, None)
    """
    func = "trend_table"
    if not isinstance(series, pl.DataFrame):
        raise invalid_parameter(func, "series", "a polars DataFrame", type(series).__name__)
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise invalid_parameter(func, "metrics", "a sequence of column names", metrics)
    if criteria is None:
        criteria = TrendCriteria()
    if not isinstance(criteria, TrendCriteria):
        raise invalid_parameter(func, "criteria", "a TrendCriteria", criteria)
    if isinstance(runs, str) or "seed" not in runs:
        raise invalid_parameter(func, "runs", "a sequence of columns holding 'seed'", runs)
    if onset is not None and not isinstance(onset, str):
        raise invalid_parameter(func, "onset", "None or a column name", onset)
    need = [*runs, "domain", "step", "accuracy", "train_loss", *metrics]
    need += [onset] if onset is not None else []
    missing = [c for c in dict.fromkeys(need) if c not in series.columns]
    if missing:
        raise InputError(
            f"trend_table: the series lacks column(s) {missing}; it has {series.columns}. Give one "
            "row per run, domain and step with accuracy, train_loss and the metrics."
        )
    all_runs = _runs(series, runs, list(metrics), [onset] if onset else [])
    skill = [r for r in all_runs if r.domain not in criteria.control_domains]
    control = [r for r in all_runs if r.domain in criteria.control_domains]
    rows = []
    for metric in metrics:
        # T1, T2 decide with 2 skill runs or more (a metric undefined in every run fails)
        for test, per_run, least in (
            ("T1", _changes_r, criteria.t1_min_r),
            ("T2", _partial_r, criteria.t2_min_r),
        ):
            r, p, n = _pooled([per_run(run, metric) for run in skill])
            passed = None if len(skill) < 2 else abs(r) >= least and p <= criteria.alpha
            rows.append(_row(metric, test, statistic=r, p_value=p, n=n, passed=passed))
        rows.append(_matched_gap(skill, metric, criteria))
        rows.append(_timing(skill, metric, onset, criteria))
        rows.append(_prediction(skill, metric, criteria))
        r6, p6, n6 = _pooled([_changes_r(run, metric) for run in control])
        passed = None if not control else bool(abs(r6) <= criteria.t6_max_abs_r)
        detail = "" if control else "no control domain"
        rows.append(
            _row(metric, "T6", statistic=r6, p_value=p6, n=n6, passed=passed, detail=detail)
        )
    return pl.DataFrame(rows, schema=TREND_SCHEMA)
