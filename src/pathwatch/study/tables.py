"""The study's statistics from its series table: correlations, pooling, lead/lag, detector, grokking."""

from __future__ import annotations

import numpy as np
import polars as pl

from pathwatch.errors import InputError
from pathwatch.evaluation.correlate import SIGNALS as METRICS
from pathwatch.evaluation.correlate import correlation_table, pooled_correlations
from pathwatch.evaluation.leadlag import (
    crossing_step,
    detect_generalization,
    detection_lead,
    lagged_correlation,
)
from pathwatch.evaluation.trends import TREND_SCHEMA, trend_table
from pathwatch.study.config import DEFAULT_ANALYSIS, DETECTOR_SIGNALS, StudyConfig

#: what correlation_table records a metric needs: the training data, or held-out data
_NEEDS_FOR_TABLE = {
    m: "training data" if n == "training data" else "held-out data" for m, (n, _) in METRICS.items()
}


def study_tables(series: pl.DataFrame, config: StudyConfig) -> dict[str, pl.DataFrame]:
    """The study's statistics from its series table (no training): what ``run_study`` writes.

    Parameters
    ----------
    series : polars.DataFrame
        One row per (arm, seed, analysis, domain, step): ``accuracy``, ``train_accuracy`` and the
        metric columns of :data:`METRICS` present. The detector and the lead/lag use the rows of
        analysis ``"t0.7-char"``; ``distance_tracked`` marks the first memorization (its first
        finite value).
    config : StudyConfig
        ``level``, ``max_lag``, the detector parameters and ``n_boot``.

    Returns
    -------
    dict of str to polars.DataFrame
        ``series``, ``crossings`` (arm, seed, domain, crossed), ``correlations`` (per seed, with
        bootstrap CIs, ``kind``, ``needs`` and ``grokked``: accuracy crossed ``level``), ``pooled``
        (over seeds; ``domain == "grokked"`` pools every run that crossed, ``"clean"`` and
        ``"overlap"`` split those by the testbed's grokking verdict), ``leadlag`` (arm, seed, domain, metric, lag, r),
        ``detections`` (arm, seed, domain, signal, memorization_onset, fired, crossed, lead),
        ``overlap`` (train accuracy at the crossing), ``grokking`` (the testbed's own verdict
        per arm, seed and domain: ``testbed.grokking.grokking_table``) and ``trends`` (T1–T6 of
        :func:`pathwatch.evaluation.trends.trend_table` for every metric and baseline, per arm and,
        with several arms, over all of them as arm ``"all arms"``).
    """
    if series.is_empty():
        raise InputError("the study produced no series; check the testbed configuration")
    crossed = _generalizers(series, config.level)
    corr = (
        _correlations(series, config)
        .join(
            crossed.select("arm", "seed", "domain", grokked=pl.col("crossed").is_not_null()),
            on=["arm", "seed", "domain"],
            how="left",
        )
        .with_columns(pl.col("grokked").fill_null(False))
    )
    grokking = _grokking(series)
    train = corr.filter(pl.col("domain") != "all").join(
        grokking.select("arm", "seed", "domain", clean="grokked"),
        on=["arm", "seed", "domain"],
        how="left",
    )
    crossed_runs = train.filter(pl.col("grokked"))
    by = ["arm", "analysis", "metric"]
    pooled = pl.concat(
        [
            pooled_correlations(train, by=[*by, "domain"]),
            pooled_correlations(crossed_runs, by=by).with_columns(domain=pl.lit("grokked")),
            # the runs that crossed, split by the testbed's own verdict: memorized at chance first
            # ("clean"), or generalizing while still memorizing ("overlap")
            pooled_correlations(crossed_runs.filter(pl.col("clean")), by=by).with_columns(
                domain=pl.lit("clean")
            ),
            pooled_correlations(crossed_runs.filter(~pl.col("clean")), by=by).with_columns(
                domain=pl.lit("overlap")
            ),
        ],
        how="diagonal_relaxed",
    )
    return {
        "series": series,
        "crossings": crossed,
        "correlations": corr,
        "pooled": pooled,
        "leadlag": _leadlag(series, crossed, config),
        "detections": _detections(series, crossed, config),
        "overlap": _overlap(series, crossed),
        "grokking": grokking,
        "trends": _trends(series, config),
    }


def _correlations(series: pl.DataFrame, config: StudyConfig) -> pl.DataFrame:
    frames = []
    for (arm, analysis, seed), part in series.group_by(
        ["arm", "analysis", "seed"], maintain_order=True
    ):
        metrics = {m: _NEEDS_FOR_TABLE[m] for m in METRICS if m in part.columns}
        table = correlation_table(
            part, part, metrics=metrics, n_boot=config.n_boot, seed=int(seed)
        ).with_columns(
            arm=pl.lit(arm),
            analysis=pl.lit(analysis),
            seed=pl.lit(seed, pl.Int64),
            needs=pl.col("metric").replace_strict({m: n for m, (n, _) in METRICS.items()}),
            kind=pl.col("metric").replace_strict({m: k for m, (_, k) in METRICS.items()}),
        )
        frames.append(table)
    table = pl.concat(frames)
    return table.select(
        "arm",
        "analysis",
        "seed",
        "domain",
        "metric",
        "kind",
        *[
            c
            for c in table.columns
            if c not in {"arm", "analysis", "seed", "domain", "metric", "kind"}
        ],
    )


def _generalizers(series: pl.DataFrame, level: float) -> pl.DataFrame:
    """arm, seed, domain, crossed (step accuracy first reaches ``level``, null if never)."""
    rows = []
    ref = series.filter(pl.col("analysis") == DEFAULT_ANALYSIS)
    for (arm, seed, domain), part in ref.group_by(["arm", "seed", "domain"], maintain_order=True):
        part = part.sort("step")
        rows.append(
            {
                "arm": arm,
                "seed": seed,
                "domain": domain,
                "crossed": crossing_step(part["step"], part["accuracy"], level=level),
            }
        )
    return pl.DataFrame(
        rows, schema={"arm": pl.String, "seed": pl.Int64, "domain": pl.String, "crossed": pl.Int64}
    )


def _leadlag(series: pl.DataFrame, crossed: pl.DataFrame, config: StudyConfig) -> pl.DataFrame:
    """Cross-correlation per (arm, seed, domain that crossed, metric), from the first memorization."""
    rows = []
    ref = series.filter(pl.col("analysis") == DEFAULT_ANALYSIS).join(
        crossed.filter(pl.col("crossed").is_not_null()), on=["arm", "seed", "domain"]
    )
    for (arm, seed, domain), part in ref.group_by(["arm", "seed", "domain"], maintain_order=True):
        part = part.sort("step")
        start = part.filter(
            pl.col("distance_tracked").is_not_nan() & pl.col("distance_tracked").is_not_null()
        )
        part = part.filter(
            pl.col("step") >= (start["step"][0] if start.height else part["step"][0])
        )
        acc = part["accuracy"].to_numpy()
        for metric in [m for m in METRICS if m in part.columns]:
            values = part[metric].cast(pl.Float64).fill_null(np.nan).to_numpy()
            if part.height <= config.max_lag:
                continue
            lags, r = lagged_correlation(values, acc, max_lag=config.max_lag)
            rows += [
                {"arm": arm, "seed": seed, "domain": domain, "metric": metric}
                | {"lag": int(k), "r": float(v)}
                for k, v in zip(lags, r, strict=True)
            ]
    return pl.DataFrame(
        rows,
        schema={
            "arm": pl.String,
            "seed": pl.Int64,
            "domain": pl.String,
            "metric": pl.String,
            "lag": pl.Int64,
            "r": pl.Float64,
        },
    )


def _detections(series: pl.DataFrame, crossed: pl.DataFrame, config: StudyConfig) -> pl.DataFrame:
    """Detector per (arm, seed, domain, training-only signal): fired step, crossing, lead."""
    rows = []
    ref = series.filter(pl.col("analysis") == DEFAULT_ANALYSIS).join(
        crossed, on=["arm", "seed", "domain"]
    )
    for (arm, seed, domain), part in ref.group_by(["arm", "seed", "domain"], maintain_order=True):
        if domain == "all":
            continue
        part = part.sort("step")
        steps = part["step"].to_numpy()
        tracked = part["distance_tracked"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        onset = int(steps[np.isfinite(tracked)][0]) if np.isfinite(tracked).any() else None
        cross = part["crossed"][0]
        for signal in [m for m in DETECTOR_SIGNALS if m in part.columns]:
            values = part[signal].cast(pl.Float64).fill_null(np.nan).to_numpy()
            fired = (
                detect_generalization(
                    steps,
                    values,
                    onset=onset,
                    run=config.detector_run,
                    min_drop=config.detector_min_drop,
                    window=config.detector_window,
                )
                if onset is not None
                else None
            )
            rows.append(
                {"arm": arm, "seed": seed, "domain": domain, "signal": signal}
                | {"memorization_onset": onset, "fired": fired, "crossed": cross}
                | {"lead": detection_lead(steps, fired, cross)}
            )
    return pl.DataFrame(
        rows,
        schema={
            "arm": pl.String,
            "seed": pl.Int64,
            "domain": pl.String,
            "signal": pl.String,
            "memorization_onset": pl.Int64,
            "fired": pl.Int64,
            "crossed": pl.Int64,
            "lead": pl.Int64,
        },
    )


def _overlap(series: pl.DataFrame, crossed: pl.DataFrame) -> pl.DataFrame:
    """Train accuracy at the checkpoint where held-out accuracy crosses: memorization overlap."""
    ref = series.filter(pl.col("analysis") == DEFAULT_ANALYSIS).join(
        crossed.filter(pl.col("crossed").is_not_null()), on=["arm", "seed", "domain"]
    )
    return (
        ref.filter(pl.col("step") == pl.col("crossed"))
        .select("arm", "seed", "domain", "crossed", "train_accuracy", "accuracy")
        .sort("arm", "seed", "domain")
    )


def _grokking(series: pl.DataFrame) -> pl.DataFrame:
    """Per (arm, seed, domain): the testbed's own grokking verdict from its train and held-out
    accuracy curves (:func:`pathwatch.testbed.grokking.grokking_table`)."""
    from pathwatch.testbed.grokking import GROKKING_SCHEMA, grokking_table

    curves = series.filter(
        (pl.col("analysis") == DEFAULT_ANALYSIS) & pl.col("train_accuracy").is_not_null()
    ).select("arm", "seed", "domain", "step", "train_accuracy", heldout_accuracy="accuracy")
    parts = [
        grokking_table(part.to_dicts()).select(
            pl.lit(arm).alias("arm"), pl.lit(seed, pl.Int64).alias("seed"), pl.all()
        )
        for (arm, seed), part in curves.group_by(["arm", "seed"], maintain_order=True)
    ]
    schema = {"arm": pl.String, "seed": pl.Int64, **GROKKING_SCHEMA}
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)


#: arm label of the trend tests over the runs of every arm together
ALL_ARMS = "all arms"


def _trends(series: pl.DataFrame, config: StudyConfig) -> pl.DataFrame:
    """T1–T6 of every metric present, on the reference analysis, per arm and over all arms."""
    ref = series.filter((pl.col("analysis") == DEFAULT_ANALYSIS) & (pl.col("domain") != "all"))
    metrics = [m for m in METRICS if m in ref.columns and ref[m].is_not_null().any()]
    onset = "distance_tracked" if "distance_tracked" in ref.columns else None
    criteria = config.trend_criteria()
    arms = [(arm, part) for (arm,), part in ref.group_by("arm", maintain_order=True)]
    if len(arms) > 1:
        arms.append((ALL_ARMS, ref))
    frames = [
        trend_table(
            part, metrics=metrics, criteria=criteria, runs=("arm", "seed"), onset=onset
        ).with_columns(
            arm=pl.lit(arm),
            kind=pl.col("metric").replace_strict({m: k for m, (_, k) in METRICS.items()}),
        )
        for arm, part in arms
    ]
    schema = {"arm": pl.String, "kind": pl.String} | TREND_SCHEMA
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames).select(list(schema))
