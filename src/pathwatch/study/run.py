"""Run the validation study: one worker process per (arm, seed), then the tables and the report.

Every (arm, seed) is its own testbed and run directory, and its series table is written
atomically when it is done; a series that reads back whole marks the unit done, so an
interrupted study resumes where it stopped.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import polars as pl

from pathwatch._validate import check_bool, check_instance, check_path
from pathwatch.errors import StoreError
from pathwatch.evaluation.correlate import SIGNALS as METRICS
from pathwatch.report.study import write_study_report
from pathwatch.store import RunStore, read_table, write_table
from pathwatch.study.config import Arm, StudyConfig, Variant
from pathwatch.study.tables import study_tables

#: columns of the study's ``regime`` table after ``arm`` and ``seed``
REGIME_COLUMNS = ("condition", "domain", "value", "threshold", "holds", "note")
UNITS_SCHEMA = {
    "key": pl.String,
    "train_seconds": pl.Float64,
    "train_cpu_seconds": pl.Float64,
    "seconds": pl.Float64,
    "cpu_seconds": pl.Float64,
    "steps": pl.Int64,
}


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
    headline : str
        The pooled correlation of every metric on the reference arm (a Markdown table).
    """

    out: Path
    report: Path
    tables: dict[str, pl.DataFrame]
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    headline: str = ""


def _key(arm: Arm, seed: int) -> str:
    return f"{arm.name}-s{seed}"


def _series_path(out: Path, key: str) -> Path:
    return out / "series" / f"{key}.parquet"


def _regime_path(out: Path, key: str) -> Path:
    return out / "regime" / f"{key}.parquet"


def _finished(path: Path) -> bool:
    """Whether the table at ``path`` exists and reads back whole."""
    try:
        read_table(path)
    except StoreError:
        return False
    return True


def _unit_regime(out: Path, arm: Arm, seed: int, seconds: float | None) -> pl.DataFrame:
    """The regime conditions A1–A7 of a finished (arm, seed) unit (A7 from its wall ``seconds``),
    from its testbed and its reference analysis's tables; written to ``out/regime/``."""
    from pathwatch.evaluation.regime import regime_conditions
    from pathwatch.testbed.presets import train

    key = _key(arm, seed)
    testbed = train(out / "testbeds" / key, config=arm.config, seed=seed, progress=False)
    store = RunStore(out / "runs" / key)
    tables = {
        name: read_table(store.table_path(name)) for name in ("epsilon", "onsets", "group_metrics")
    }
    table = regime_conditions(testbed, tables, seconds=seconds).table.select(
        pl.lit(arm.name).alias("arm"), pl.lit(seed, pl.Int64).alias("seed"), *REGIME_COLUMNS
    )
    write_table(table, _regime_path(out, key))
    return table


def _unit_series(out: Path, arm: Arm, seed: int, variants: tuple[Variant, ...]) -> dict:
    """Train, capture and analyse one (arm, seed); write its series table. Runs in a worker."""
    import torch

    from pathwatch.analysis import analyze_run
    from pathwatch.capture.run import capture_run
    from pathwatch.testbed.presets import train

    torch.set_num_threads(1)
    key = _key(arm, seed)
    clock, cpu = time.perf_counter(), time.process_time()
    testbed = train(out / "testbeds" / key, config=arm.config, seed=seed, progress=False)
    samples = testbed.write_probes(out / "testbeds" / key / "probes.jsonl")
    curves = pl.DataFrame(
        [c for c in testbed.curves if c["domain"] != "validation"],
        infer_schema_length=None,
    ).select(
        "step",
        "domain",
        pl.col("heldout_loss").cast(pl.Float64),
        pl.col("train_accuracy").cast(pl.Float64),
    )
    runs: dict[Any, Path] = {}  # one captured run per capture setting
    frames = []
    for i, variant in enumerate(variants):
        if variant.capture not in runs:
            runs[variant.capture] = out / "runs" / f"{key}{variant.run_suffix()}"
            capture_run(
                list(testbed.checkpoints),
                samples,
                runs[variant.capture],
                config=variant.capture,
                progress=False,
            )
        analysis = analyze_run(
            runs[variant.capture],
            config=variant.analysis,
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
                arm=pl.lit(arm.name), seed=pl.lit(seed, pl.Int64), analysis=pl.lit(variant.name)
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
    write_table(table, _series_path(out, key))
    return {
        "key": key,
        "train_seconds": testbed.train_seconds,
        "train_cpu_seconds": testbed.cpu_seconds,
        "seconds": time.perf_counter() - clock,
        "cpu_seconds": time.process_time() - cpu,
        "steps": len(testbed.steps),
    }


def _run_units(
    out: Path, config: StudyConfig, todo: list[tuple[Arm, int]], progress: bool
) -> list[dict]:
    """Run the unfinished (arm, seed) units, ``config.jobs`` worker processes at a time."""
    total = sum(len(a.seeds) for a in config.arms)
    if progress:
        print(
            f"study: {total - len(todo)}/{total} units reused, {len(todo)} to run", file=sys.stderr
        )
    variants = config.variants()
    reference = variants[:1]
    variant_seeds = config.arms[0].seeds[: config.variant_seeds]
    jobs = [
        (out, arm, seed, variants if arm is config.arms[0] and seed in variant_seeds else reference)
        for arm, seed in todo
    ]
    records: list[dict] = []

    def note(record: dict) -> None:
        records.append(record)
        if progress:
            print(
                f"study: {total - len(todo) + len(records)}/{total} {record['key']} done "
                f"({record['seconds']:.0f} s wall, training {record['train_cpu_seconds']:.0f} CPU-s)",
                file=sys.stderr,
                flush=True,
            )

    if config.jobs == 1 or len(jobs) <= 1:
        for job in jobs:
            note(_unit_series(*job))
    else:
        with ProcessPoolExecutor(config.jobs, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(_unit_series, *job) for job in jobs]):
                note(future.result())
    return records


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
        ``regime/`` (each unit's regime conditions A1–A7),
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
    out = check_path("run_study", "out", out)
    config = check_instance("run_study", "config", config, StudyConfig, allow_none=True)
    check_bool("run_study", "progress", progress)
    config = config or StudyConfig.default()
    clock = time.perf_counter()
    keys = [_key(arm, seed) for arm in config.arms for seed in arm.seeds]
    todo = [
        (arm, seed)
        for arm in config.arms
        for seed in arm.seeds
        if not _finished(_series_path(out, _key(arm, seed)))
    ]
    records = _run_units(out, config, todo, progress)
    units = pl.DataFrame(records, schema=UNITS_SCHEMA)
    units_path = out / "tables" / "units.parquet"
    if units_path.is_file():
        done = read_table(units_path)
        units = pl.concat([done.filter(~pl.col("key").is_in(units["key"].to_list())), units])
    wall = dict(units.select("key", "seconds").rows())
    regime = [
        read_table(_regime_path(out, _key(arm, seed)))
        if _finished(_regime_path(out, _key(arm, seed)))
        else _unit_regime(out, arm, seed, wall.get(_key(arm, seed)))
        for arm in config.arms
        for seed in arm.seeds
    ]
    series = pl.concat([read_table(_series_path(out, k)) for k in keys], how="diagonal_relaxed")
    tables = study_tables(series, config)
    tables["units"] = units
    tables["regime"] = pl.concat(regime)
    for name, table in tables.items():
        write_table(table, out / "tables" / f"{name}.parquet")
    design = config.design()
    report, figures = write_study_report(out, tables, design)
    if progress:
        print(f"study: report written to {report}", file=sys.stderr)
    return StudyResult(
        out, report, tables, figures, time.perf_counter() - clock, design.headline(tables)
    )
