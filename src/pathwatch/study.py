"""A multi-seed validation study: does routing tell about generalization better than the baselines?

``run_study`` trains the CPU testbed over several seeds and configurations ("arms"), captures and
analyses each run (with several analysis settings on the first arm), and writes one report:

- per metric, the correlation with held-out accuracy per seed and domain (bootstrap CIs), pooled over
  seeds (Fisher-z mean with a t interval over seeds), next to the baselines, each labelled with what
  it needs (training data only, or held-out data of the same or of a different distribution);
- sample selection: all samples of a domain vs memorized (any t*) vs tracked (memorized by the step);
- lead/lag: correlation of each metric with accuracy k checkpoints later, k in −K … K;
- a test-free detector (:func:`pathwatch.evaluation.leadlag.detect_generalization`) per seed and
  domain: checkpoints before accuracy crosses 0.5, and its alarms on domains that never cross.

Every (arm, seed) is its own testbed and run directory, and its series table is written when it is
done, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from pathwatch.errors import InputError, invalid_parameter
from pathwatch.evaluation.correlate import correlation_table
from pathwatch.evaluation.leadlag import (
    crossing_step,
    detect_generalization,
    detection_lead,
    lagged_correlation,
)

#: Every metric of the study: (what it needs, what kind of signal it is).
METRICS: dict[str, tuple[str, str]] = {
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
}
#: Training-only signals the detector is run on (the routing one first).
DETECTOR_SIGNALS = ("distance_tracked", "distance_memorized", "distance", "train_loss_ma")
_NEEDS_FOR_TABLE = {
    m: "training data" if n == "training data" else "held-out data" for m, (n, _) in METRICS.items()
}
DEFAULT_ANALYSIS = "t0.7-char"


@dataclass(frozen=True)
class Arm:
    """One training configuration of the study and the seeds it runs.

    Attributes
    ----------
    name : str
        Short name, used in directory names and tables.
    config : TestbedConfig
    seeds : tuple of int
    """

    name: str
    config: Any
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if (
            not self.name
            or not self.name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise invalid_parameter("Arm", "name", "letters, digits, '-', '_' or '.'", self.name)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise invalid_parameter("Arm", "seeds", "distinct seeds, at least one", self.seeds)


def study_testbed() -> Any:
    """The testbed of the study: the demo configuration of 2026-11-26, pinned here so that later
    changes of the demo defaults do not change the study. p = 47, domains add, sub, mul, train
    fraction 0.7, hidden 64, 3 MoE layers, E = 8, top-2, AdamW lr 6e-3 with weight decay 0.75,
    stop once two domains reach 0.9 held-out accuracy (at most 5,000 steps, a checkpoint every 200).
    """
    from pathwatch.testbed import TestbedConfig

    return TestbedConfig(
        prime=47,
        domains=("add", "sub", "mul"),
        train_fraction=0.7,
        hidden_size=64,
        intermediate_size=64,
        num_layers=3,
        num_heads=4,
        num_experts=8,
        top_k=2,
        lr=6e-3,
        weight_decay=0.75,
        batch_size=512,
        max_steps=5000,
        checkpoint_every=200,
        stop_accuracy=0.9,
        stop_domains=2,
    )


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs and how it evaluates.

    Attributes
    ----------
    arms : tuple of Arm
        Training configurations; the first is the reference arm.
    thresholds : tuple of float, default (0.5, 0.6, 0.7, 0.8)
        Pathway thresholds analysed on the reference arm (char unit), reusing its captured runs.
    units : tuple of str, default ("char", "expert")
        Distance units analysed on the reference arm (threshold 0.7).
    variant_seeds : int, default 1
        Seeds of the reference arm (its first ones) that get the other analysis settings.
    weights : tuple of str, default ("softmax", "topk")
        Router weightings captured on those seeds (``capture_run(weights=...)``; "softmax" is
        the SPEC's and every other analysis's).
    max_lag : int, default 4
        K of the lead/lag cross-correlation, in checkpoints.
    detector_run, detector_min_drop, detector_window
        Parameters of :func:`pathwatch.evaluation.leadlag.detect_generalization`, fixed before any
        study run (not tuned on its seeds).
    level : float, default 0.5
        Accuracy level whose crossing the detector should anticipate.
    n_boot : int, default 1000
        Bootstrap replicates of the per-seed correlation CIs.
    jobs : int, default 2
        (arm, seed) units run in parallel, one torch thread each.
    """

    arms: tuple[Arm, ...]
    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)
    units: tuple[str, ...] = ("char", "expert")
    variant_seeds: int = 1
    weights: tuple[str, ...] = ("softmax", "topk")
    max_lag: int = 4
    detector_run: int = 3
    detector_min_drop: float = 0.05
    detector_window: int = 3
    level: float = 0.5
    n_boot: int = 1000
    jobs: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", tuple(self.arms))
        if not self.arms:
            raise invalid_parameter("StudyConfig", "arms", "at least one Arm", self.arms)
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise invalid_parameter("StudyConfig", "arms", "distinct names", names)
        if not (isinstance(self.jobs, int) and self.jobs >= 1):
            raise invalid_parameter("StudyConfig", "jobs", "an int ≥ 1", self.jobs)
        if not 0 < self.level < 1:
            raise invalid_parameter("StudyConfig", "level", "a float in (0, 1)", self.level)

    def analyses(self) -> dict[str, dict[str, Any]]:
        """Analysis variants of the reference arm, by name: AnalyzeConfig keyword arguments."""
        out = {f"t{t:g}-char": {"threshold": float(t), "unit": "char"} for t in self.thresholds}
        out |= {f"t0.7-{u}": {"threshold": 0.7, "unit": u} for u in self.units}
        out |= {
            f"t0.7-char-{w}": {"threshold": 0.7, "unit": "char", "weights": w}
            for w in self.weights
            if w != "softmax"
        }
        return {
            DEFAULT_ANALYSIS: out.pop(DEFAULT_ANALYSIS, {"threshold": 0.7, "unit": "char"})
        } | out

    @classmethod
    def default(cls, *, seeds: int = 5, base: Any = None, jobs: int = 2) -> StudyConfig:
        """The study of docs/validation.md: ``seeds`` seeds of ``base`` and a few of five variants.

        Variants, 2 seeds each: the random-``facts`` control domain added (a domain that can never
        generalize, for the detector's false alarms), the OLMoE load-balancing loss on (coefficient
        0.01), twice the experts; 1 seed each: one more MoE layer, top-1 routing.
        ``base`` defaults to :func:`study_testbed`.
        """
        base = base or study_testbed()
        few, one = tuple(range(min(2, seeds))), (0,)
        return cls(
            arms=(
                Arm("default", base, tuple(range(seeds))),
                Arm("facts", dataclasses.replace(base, domains=(*base.domains, "facts")), few),
                Arm("aux0.01", dataclasses.replace(base, router_aux_loss_coef=0.01), few),
                Arm(
                    f"experts{2 * base.num_experts}",
                    dataclasses.replace(base, num_experts=2 * base.num_experts),
                    few,
                ),
                Arm(
                    f"layers{base.num_layers + 1}",
                    dataclasses.replace(base, num_layers=base.num_layers + 1),
                    one,
                ),
                Arm("top1", dataclasses.replace(base, top_k=1), one),
            ),
            jobs=jobs,
        )

    @classmethod
    def reduced(cls, *, seeds: int = 2, jobs: int = 1) -> StudyConfig:
        """A study of ``TestbedConfig.tiny()`` for tests: 2 thresholds, both units, seconds per seed."""
        from pathwatch.testbed import TestbedConfig

        return cls(
            arms=(Arm("tiny", TestbedConfig.tiny(), tuple(range(seeds))),),
            thresholds=(0.5, 0.7),
            max_lag=2,
            n_boot=200,
            jobs=jobs,
        )


@dataclass(frozen=True)
class StudyResult:
    """What :func:`run_study` wrote.

    Attributes
    ----------
    out : Path
        Study directory.
    report : Path
        ``out/report.md``.
    tables : dict of str to polars.DataFrame
        The study's tables (also under ``out/tables/``), by name.
    figures : list of Path
    seconds : float
        Wall time of this call.
    """

    out: Path
    report: Path
    tables: dict[str, pl.DataFrame]
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _unit_series(out: Path, arm: Arm, seed: int, analyses: Mapping[str, dict[str, Any]]) -> dict:
    """Train, capture and analyse one (arm, seed); write its series table. Runs in a worker."""
    import torch

    from pathwatch.analysis import AnalyzeConfig, analyze_run
    from pathwatch.capture.run import capture_run
    from pathwatch.testbed import train_testbed

    torch.set_num_threads(1)
    key = f"{arm.name}-s{seed}"
    clock, cpu = time.perf_counter(), time.process_time()
    testbed = train_testbed(
        out / "testbeds" / key, config=arm.config, seed=seed, progress=False, threads=1
    )
    samples = out / "testbeds" / key / "probes.jsonl"
    probes = testbed.train_samples.read_text() + testbed.validation_samples.read_text()
    if not samples.is_file() or samples.read_text() != probes:
        samples.write_text(probes)
    runs = {}
    curves = pl.DataFrame(
        [c for c in testbed.curves if c["domain"] != "validation"],
        infer_schema_length=None,
    ).select(
        "step",
        "domain",
        pl.col("heldout_loss").cast(pl.Float64),
        pl.col("train_accuracy").cast(pl.Float64),
    )
    frames = []
    for i, (name, settings) in enumerate(analyses.items()):
        settings = dict(settings)
        weights = settings.pop("weights", "softmax")
        if weights not in runs:
            runs[weights] = out / "runs" / (key if weights == "softmax" else f"{key}-{weights}")
            capture_run(
                list(testbed.checkpoints), samples, runs[weights], progress=False, weights=weights
            )
        analysis = analyze_run(
            runs[weights],
            config=AnalyzeConfig(n_boot=10, **settings),
            accuracy=testbed.accuracy_file,
            progress=False,
            write=i == 0,
        )
        series = analysis.tables["metric_series"].join(
            analysis.tables["accuracy"].select("step", "domain", "accuracy"),
            on=["step", "domain"],
            how="inner",
        )
        frames.append(
            series.join(curves, on=["step", "domain"], how="left").with_columns(
                arm=pl.lit(arm.name), seed=pl.lit(seed, pl.Int64), analysis=pl.lit(name)
            )
        )
    table = pl.concat(frames, how="diagonal_relaxed")
    table = table.select(
        "arm",
        "seed",
        "analysis",
        "domain",
        "step",
        "accuracy",
        "train_accuracy",
        *[m for m in METRICS if m in table.columns],
    )
    table.write_parquet(_series_path(out, key))
    return {
        "key": key,
        "train_seconds": testbed.train_seconds,
        "train_cpu_seconds": testbed.cpu_seconds,
        "seconds": time.perf_counter() - clock,
        "cpu_seconds": time.process_time() - cpu,
        "steps": len(testbed.steps),
    }


def _series_path(out: Path, key: str) -> Path:
    return out / "series" / f"{key}.parquet"


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
    -0.85
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


def _split_cells(pooled: pl.DataFrame, metric: str, group: str) -> tuple[str, int]:
    """Pooled r with its interval and the number of runs of one metric in one pooled group."""
    row = pooled.filter((pl.col("metric") == metric) & (pl.col("domain") == group))
    if row.is_empty():
        return "–", 0
    return _ci(*row.select("r_mean", "r_ci_low", "r_ci_high").row(0)), int(row["n_seeds"][0])


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _ci(mean: float, low: float, high: float) -> str:
    return f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}]"


def _figures(tables: dict[str, pl.DataFrame], out: Path, ref_arm: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    corr = tables["correlations"].filter(
        (pl.col("arm") == ref_arm) & (pl.col("analysis") == DEFAULT_ANALYSIS) & pl.col("grokked")
    )
    pooled = tables["pooled"].filter(
        (pl.col("arm") == ref_arm)
        & (pl.col("analysis") == DEFAULT_ANALYSIS)
        & (pl.col("domain") == "grokked")
    )
    metrics = [m for m in METRICS if m in corr["metric"].to_list()]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(metrics) + 1.2))
    for i, metric in enumerate(metrics):
        r = corr.filter(pl.col("metric") == metric)["pearson_r"].to_numpy()
        ax.scatter(r, np.full(r.size, i) + np.linspace(-0.15, 0.15, r.size), s=12, color="#7f7f7f")
        row = pooled.filter(pl.col("metric") == metric)
        if row.height:
            m, lo, hi = row["r_mean"][0], row["r_ci_low"][0], row["r_ci_high"][0]
            ax.errorbar(
                [m],
                [i],
                xerr=[[m - lo], [hi - m]] if np.isfinite(lo) else None,
                fmt="o",
                color="#d62728" if METRICS[metric][1] == "routing" else "#1f77b4",
            )
    ax.axvline(0, color="black", lw=0.5)
    ax.set_yticks(range(len(metrics)), [f"{m} ({METRICS[m][0].split(',')[0]})" for m in metrics])
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(
        "Pearson r with held-out accuracy\n(dots: seed × domain that crossed; marker: pooled, 95% CI)"
    )
    ax.invert_yaxis()
    fig.tight_layout()
    paths.append(out / "figures" / "validation-correlations.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    lag = tables["leadlag"].filter(pl.col("arm") == ref_arm)
    if lag.height:
        fig, ax = plt.subplots(figsize=(7, 4))
        for metric in (
            "distance_tracked",
            "distance",
            "train_loss_ma",
            "validation_loss",
            "heldout_loss",
        ):
            part = (
                lag.filter(pl.col("metric") == metric)
                .group_by("lag")
                .agg(pl.col("r").filter(pl.col("r").is_not_nan()).mean())
                .sort("lag")
            )
            if part.height:
                ax.plot(part["lag"], part["r"], marker="o", label=metric)
        ax.axvline(0, color="black", lw=0.5)
        ax.set_xlabel("lag k (metric at t vs accuracy at t + k; k > 0: metric leads)")
        ax.set_ylabel("mean Pearson r over seeds × domains")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "figures" / "validation-leadlag.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def _report(
    tables: dict[str, pl.DataFrame], config: StudyConfig, units: pl.DataFrame, figures: list[Path]
) -> str:
    ref = config.arms[0].name
    pooled = tables["pooled"]
    corr = tables["correlations"]
    lines = [
        "# pathwatch validation study",
        "",
        "Every number below is computed by `pathwatch study` from the tables in `tables/`.",
        "",
        "## Runs",
        "",
        _markdown(
            ["arm", "seeds", "config changes", "train CPU s (mean)"],
            [
                [
                    a.name,
                    ", ".join(map(str, a.seeds)),
                    ", ".join(
                        f"{k}={v}"
                        for k, v in dataclasses.asdict(a.config).items()
                        if v != dataclasses.asdict(config.arms[0].config)[k]
                    )
                    or "(reference)",
                    float(
                        units.filter(pl.col("key").str.starts_with(f"{a.name}-s"))[
                            "train_cpu_seconds"
                        ].mean()
                        or np.nan
                    ),
                ]
                for a in config.arms
            ],
        ),
        "",
        f"Accuracy crossings (step where held-out accuracy first reaches {config.level}; – never):",
        "",
    ]
    crossed = tables["crossings"].filter(pl.col("domain") != "all")
    domains = sorted(crossed["domain"].unique().to_list())
    lines += [
        _markdown(
            ["arm", "seed", *domains],
            [
                [
                    arm,
                    seed,
                    *[dict(part.select("domain", "crossed").rows()).get(d) for d in domains],
                ]
                for (arm, seed), part in crossed.group_by(["arm", "seed"], maintain_order=True)
            ],
        ),
        "",
        f"## Correlation with held-out accuracy, reference arm `{ref}`",
        "",
        "Window: from the start of accuracy's sustained rise (per seed and domain) on. Pooled over "
        "every (seed, domain) whose accuracy crossed the level: Fisher-z mean of Pearson r, 95% t "
        "interval over those runs; `neg` counts runs with r < 0.",
        "",
    ]
    lines.append(headline(tables, ref))
    per_domain = pooled.filter(
        (pl.col("arm") == ref)
        & (pl.col("analysis") == DEFAULT_ANALYSIS)
        & ~pl.col("domain").is_in(["grokked", "clean", "overlap"])
    )
    split = pooled.filter((pl.col("arm") == ref) & (pl.col("analysis") == DEFAULT_ANALYSIS))
    lines += [
        "",
        "Split by the testbed's own grokking verdict (section *Did each run grok?*): `clean` = "
        "runs that crossed after memorizing at chance, `overlap` = runs that crossed while still "
        "being memorized:",
        "",
        _markdown(
            ["metric", "clean: pooled r [95% CI]", "runs", "overlap: pooled r [95% CI]", "runs"],
            [
                [m, *_split_cells(split, m, "clean"), *_split_cells(split, m, "overlap")]
                for m in METRICS
                if m in split["metric"].to_list()
            ],
        ),
    ]
    lines += ["", "Per domain (all seeds, whether or not the domain crossed):", ""]
    pd_domains = sorted(per_domain["domain"].unique().to_list())
    lines.append(
        _markdown(
            ["metric", *pd_domains],
            [
                [
                    m,
                    *[
                        _ci(
                            *per_domain.filter((pl.col("metric") == m) & (pl.col("domain") == d))
                            .select("r_mean", "r_ci_low", "r_ci_high")
                            .row(0)
                        )
                        for d in pd_domains
                    ],
                ]
                for m in METRICS
                if m in per_domain["metric"].to_list()
            ],
        )
    )
    lines += ["", "Per seed (Pearson r [bootstrap 95% CI over checkpoints], n checkpoints):", ""]
    seed_rows = corr.filter(
        (pl.col("arm") == ref)
        & (pl.col("analysis") == DEFAULT_ANALYSIS)
        & (pl.col("domain") != "all")
    ).sort("seed", "domain")
    shown = [
        m
        for m in (
            "distance",
            "distance_memorized",
            "distance_tracked",
            "train_loss_ma",
            "validation_loss",
            "heldout_loss",
        )
        if m in seed_rows["metric"].to_list()
    ]
    lines.append(
        _markdown(
            ["seed", "domain", "n", *shown],
            [
                [
                    seed,
                    domain,
                    part["n"].max(),
                    *[
                        _ci(
                            *part.filter(pl.col("metric") == m)
                            .select("pearson_r", "pearson_ci_low", "pearson_ci_high")
                            .row(0)
                        )
                        for m in shown
                    ],
                ]
                for (seed, domain), part in seed_rows.group_by(
                    ["seed", "domain"], maintain_order=True
                )
            ],
        )
    )
    variants = pooled.filter(
        (pl.col("domain") == "grokked")
        & pl.col("metric").is_in(
            ["distance", "distance_tracked", "train_loss_ma", "validation_loss", "heldout_loss"]
        )
    )
    lines += [
        "",
        "## Configurations and analysis settings",
        "",
        "Pooled r over the runs that crossed (as above), per arm (default analysis) and per analysis "
        f"setting of `{ref}` (threshold, distance unit).",
        "",
        _markdown(
            ["arm", "analysis", "metric", "pooled r [95% CI]", "runs"],
            [
                [
                    r["arm"],
                    r["analysis"],
                    r["metric"],
                    _ci(r["r_mean"], r["r_ci_low"], r["r_ci_high"]),
                    r["n_seeds"],
                ]
                for r in variants.sort("arm", "analysis", "metric").iter_rows(named=True)
            ],
        ),
        "",
        f"## Lead / lag (max lag {config.max_lag} checkpoints)",
        "",
        "Metric at checkpoint t against accuracy at t + k, from the domain's first memorization on, "
        "runs that crossed. Best lag: the k of largest |r| per run; median over runs.",
        "",
    ]
    lag = tables["leadlag"].filter(pl.col("r").is_not_nan())
    best = (
        lag.with_columns(absr=pl.col("r").abs())
        .sort("absr", descending=True)
        .group_by(["arm", "seed", "domain", "metric"], maintain_order=True)
        .first()
    )
    lines.append(
        _markdown(
            ["arm", "metric", "r at lag 0 (mean)", "best lag (median)", "best lags", "runs"],
            [
                [
                    arm,
                    metric,
                    float(
                        lag.filter(
                            (pl.col("arm") == arm)
                            & (pl.col("metric") == metric)
                            & (pl.col("lag") == 0)
                        )["r"].mean()
                        or np.nan
                    ),
                    float(part["lag"].median()),
                    " ".join(map(str, part.sort("seed")["lag"].to_list())),
                    part.height,
                ]
                for (arm, metric), part in best.sort("arm").group_by(
                    ["arm", "metric"], maintain_order=True
                )
            ],
        )
    )
    det = tables["detections"]
    lines += [
        "",
        "## Detector: generalization under way, from training data only",
        "",
        f"Fires at the first checkpoint after the domain's first memorization onset where the signal's "
        f"{config.detector_window}-checkpoint moving average fell {config.detector_run} checkpoints in "
        f"a row and lies ≥ {config.detector_min_drop:.0%} below its maximum since the onset. "
        "Parameters fixed before any study run, not tuned. Lead: checkpoints from firing to accuracy "
        f"crossing {config.level} (> 0: before). A false alarm: fired in a run whose accuracy never "
        "crossed (the never-generalizing control domain, or a seed that did not grok).",
        "",
    ]
    summary_rows = []
    for (arm, signal), part in det.group_by(["arm", "signal"], maintain_order=True):
        hit = part.filter(pl.col("crossed").is_not_null())
        miss = part.filter(pl.col("crossed").is_null())
        leads = hit["lead"].drop_nulls()
        summary_rows.append(
            [
                arm,
                signal,
                hit.height,
                int((leads > 0).sum()),
                int((leads <= 0).sum()),
                hit["fired"].null_count(),
                float(leads.median()) if leads.len() else np.nan,
                f"{int(miss['fired'].is_not_null().sum())} / {miss.height}",
            ]
        )
    lines.append(
        _markdown(
            [
                "arm",
                "signal",
                "runs crossed",
                "fired before",
                "fired at/after",
                "never fired",
                "median lead",
                "false alarms",
            ],
            summary_rows,
        )
    )
    lines += ["", "Per run (reference arm, signal distance_tracked):", ""]
    lines.append(
        _markdown(
            ["seed", "domain", "memorization onset", "fired", "crossed", "lead"],
            [
                [
                    r["seed"],
                    r["domain"],
                    r["memorization_onset"],
                    r["fired"],
                    r["crossed"],
                    r["lead"],
                ]
                for r in det.filter(
                    (pl.col("arm") == ref) & (pl.col("signal") == "distance_tracked")
                )
                .sort("seed", "domain")
                .iter_rows(named=True)
            ],
        )
    )
    from pathwatch.testbed.grokking import MEMORIZED

    grok = tables["grokking"]
    lines += [
        "",
        "## Did each run grok?",
        "",
        f"From each testbed's own curves: memorized = first checkpoint with training accuracy ≥ "
        f"{MEMORIZED:g} (held-out accuracy then); grokked = held-out ≤ 0.1 at that moment and ≥ 0.9 "
        "later. Grokked (seed, domain) pairs per arm: "
        + "; ".join(
            f"{arm} {int(part['grokked'].sum())} of {part.height}"
            for (arm,), part in grok.group_by(["arm"], maintain_order=True)
        )
        + ".",
        "",
        _markdown(
            [
                "arm",
                "seed",
                "domain",
                "memorized at",
                "held-out then",
                "held-out ≥ 0.5 at",
                "≥ 0.9 at",
                "delay",
                "final held-out",
                "grokked",
            ],
            grok.select(
                "arm",
                "seed",
                "domain",
                "memorized_step",
                "heldout_at_memorized",
                "step_half",
                "step_generalized",
                "delay",
                "final_heldout",
                pl.when("grokked").then(pl.lit("yes")).otherwise(pl.lit("no")),
            ).rows(),
        ),
    ]
    lines += [
        "",
        "## Overlap of memorization and generalization",
        "",
        "Training accuracy of the domain at the checkpoint where its held-out accuracy crossed.",
        "",
        _markdown(
            ["arm", "seed", "domain", "crossed", "train accuracy", "held-out accuracy"],
            tables["overlap"].rows(),
        ),
        "",
        "## Figures",
        "",
        *[f"![{p.stem}](figures/{p.name})" for p in figures],
        "",
    ]
    return "\n".join(lines)


def run_study(
    out: str | os.PathLike[str],
    *,
    config: StudyConfig | None = None,
    progress: bool = True,
) -> StudyResult:
    """Run the validation study (resumable) and write ``out/report.md``, tables and figures.

    Parameters
    ----------
    out : path
        Study directory: ``testbeds/<arm>-s<seed>``, ``runs/<arm>-s<seed>``, ``series/``,
        ``tables/*.parquet``, ``figures/validation-*.png``, ``report.md``. Finished (arm, seed)
        units found there are reused.
    config : StudyConfig, optional
        Default :meth:`StudyConfig.default`.
    progress : bool, default True
        One line per finished unit on stderr.

    Returns
    -------
    StudyResult

    Examples
    --------
    >>> result = run_study("study", config=StudyConfig.reduced())  # doctest: +SKIP
    >>> result.report  # doctest: +SKIP
    PosixPath('study/report.md')
    """
    config = config or StudyConfig.default()
    out = Path(out)
    for sub in ("series", "tables", "figures"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    analyses = config.analyses()
    todo = [
        (arm, seed)
        for arm in config.arms
        for seed in arm.seeds
        if not _series_path(out, f"{arm.name}-s{seed}").is_file()
    ]
    units_path = out / "tables" / "units.parquet"
    done = pl.read_parquet(units_path) if units_path.is_file() else None
    records = []
    total = sum(len(a.seeds) for a in config.arms)

    def note(record: dict) -> None:
        records.append(record)
        if progress:
            print(
                f"study: {total - len(todo) + len(records)}/{total} {record['key']} done "
                f"({record['seconds']:.0f} s wall, training {record['train_cpu_seconds']:.0f} CPU-s)",
                file=sys.stderr,
                flush=True,
            )

    if progress:
        print(
            f"study: {total - len(todo)}/{total} units reused, {len(todo)} to run", file=sys.stderr
        )
    reference = {DEFAULT_ANALYSIS: analyses[DEFAULT_ANALYSIS]}
    variant_seeds = config.arms[0].seeds[: config.variant_seeds]
    jobs = [
        (out, arm, seed, analyses if arm is config.arms[0] and seed in variant_seeds else reference)
        for arm, seed in todo
    ]
    if config.jobs == 1 or len(jobs) <= 1:
        for job in jobs:
            note(_unit_series(*job))
    else:
        with ProcessPoolExecutor(config.jobs, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(_unit_series, *job) for job in jobs]):
                note(future.result())
    units = pl.DataFrame(
        records,
        schema={
            "key": pl.String,
            "train_seconds": pl.Float64,
            "train_cpu_seconds": pl.Float64,
            "seconds": pl.Float64,
            "cpu_seconds": pl.Float64,
            "steps": pl.Int64,
        },
    )
    if done is not None:
        units = pl.concat([done.filter(~pl.col("key").is_in(units["key"].to_list())), units])
    keys = [f"{a.name}-s{s}" for a in config.arms for s in a.seeds]
    series = pl.concat(
        [pl.read_parquet(_series_path(out, k)) for k in keys], how="diagonal_relaxed"
    )
    tables = study_tables(series, config)
    tables["units"] = units
    for name, table in tables.items():
        table.write_parquet(out / "tables" / f"{name}.parquet")
    figures = _figures(tables, out, config.arms[0].name)
    report = out / "report.md"
    report.write_text(_report(tables, config, units, figures))
    if progress:
        print(f"study: report written to {report}", file=sys.stderr)
    return StudyResult(out, report, tables, figures, time.perf_counter() - clock)


def headline(tables: Mapping[str, pl.DataFrame], arm: str) -> str:
    """The pooled correlation of every metric on ``arm`` over the runs whose accuracy crossed.

    Parameters
    ----------
    tables : mapping of str to polars.DataFrame
        :attr:`StudyResult.tables`.
    arm : str

    Returns
    -------
    str
        A Markdown table (metric, kind, needs, pooled r [95% CI], runs).
    """
    rows = tables["pooled"].filter(
        (pl.col("arm") == arm)
        & (pl.col("analysis") == DEFAULT_ANALYSIS)
        & (pl.col("domain") == "grokked")
    )
    if rows.is_empty():
        return f"No run of {arm!r} reached the accuracy level: no pooled correlations."
    return _markdown(
        ["metric", "kind", "needs", "pooled r [95% CI]", "runs", "neg"],
        [
            [
                r["metric"],
                METRICS[r["metric"]][1],
                METRICS[r["metric"]][0],
                _ci(r["r_mean"], r["r_ci_low"], r["r_ci_high"]),
                r["n_seeds"],
                r["n_negative"],
            ]
            for r in rows.iter_rows(named=True)
        ],
    )


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
        ``overlap`` (train accuracy at the crossing) and ``grokking`` (the testbed's own verdict
        per arm, seed and domain: ``testbed.grokking.grokking_table``).
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
    }
