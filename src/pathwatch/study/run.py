"""Run the validation study: one worker process per (arm, seed), then the tables and the report."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import polars as pl

from pathwatch.report.study import _figures, _report
from pathwatch.study.config import DEFAULT_ANALYSIS, METRICS, Arm, StudyConfig
from pathwatch.study.tables import study_tables


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
    from pathwatch.config import CaptureConfig
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
                list(testbed.checkpoints),
                samples,
                runs[weights],
                config=CaptureConfig(weights=weights),
                progress=False,
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
