"""A testbed's output directory, shared by every testbed: its files, its summary and its result.

Every testbed (:mod:`pathwatch.testbed.train`, :mod:`pathwatch.testbed.text`) writes the same layout
into its ``out_dir``: ``step-<N>/`` checkpoints, the per-item ``accuracy.jsonl``, the probe set
``train_samples.jsonl``, ``validation_samples.jsonl``, optionally ``test_items.jsonl``, and the
summary ``testbed.json``; it returns a :class:`TestbedRun`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pathwatch._hf import no_hf_progress_bars

SUMMARY = "testbed.json"
ACCURACY = "accuracy.jsonl"
TRAIN_SAMPLES = "train_samples.jsonl"
VALIDATION_SAMPLES = "validation_samples.jsonl"
TEST_ITEMS = "test_items.jsonl"


@dataclass(frozen=True)
class TestbedRun:
    """What :func:`train_testbed` wrote.

    Attributes
    ----------
    out_dir : Path
    checkpoints : tuple of Path
        ``step-<N>`` model directories in step order.
    steps : tuple of int
        The step of each checkpoint.
    accuracy_file, train_samples, validation_samples, summary : Path
        ``accuracy.jsonl``, ``train_samples.jsonl``, ``validation_samples.jsonl``, ``testbed.json``.
    curves : tuple of dict
        One record per checkpoint and domain: step, seconds, cpu_seconds, domain, train_loss,
        train_accuracy, heldout_loss, heldout_accuracy; plus one per checkpoint with domain
        "validation" and its ``validation_loss``.
    train_seconds, cpu_seconds : float
        Wall and CPU time of this process spent training (evaluation and saving included), summed
        over resumptions; with one thread on a busy machine, CPU time is the uncontended wall time.
    reused : bool
        True when ``out_dir`` already held the complete run and nothing was trained.
    """

    __test__ = False

    out_dir: Path
    checkpoints: tuple[Path, ...]
    steps: tuple[int, ...]
    accuracy_file: Path
    train_samples: Path
    validation_samples: Path
    summary: Path
    curves: tuple[dict[str, Any], ...]
    train_seconds: float
    cpu_seconds: float
    reused: bool

    def accuracy(self, domain: str) -> list[float]:
        """Held-out accuracy of ``domain`` at each checkpoint."""
        return [c["heldout_accuracy"] for c in self.curves if c["domain"] == domain]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(tmp, path)


def write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


@contextmanager
def quiet_torch(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch threads and without transformers' per-save progress bars."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with no_hf_progress_bars():
            yield
    finally:
        torch.set_num_threads(previous)


def testbed_run(out: Path, summary: dict[str, Any], *, reused: bool) -> TestbedRun:
    return TestbedRun(
        out_dir=out,
        checkpoints=tuple(out / name for name in summary["checkpoints"]),
        steps=tuple(summary["steps"]),
        accuracy_file=out / ACCURACY,
        train_samples=out / TRAIN_SAMPLES,
        validation_samples=out / VALIDATION_SAMPLES,
        summary=out / SUMMARY,
        curves=tuple(summary["curves"]),
        train_seconds=summary["train_seconds"],
        cpu_seconds=summary["cpu_seconds"],
        reused=reused,
    )


def write_summary(
    out: Path,
    config: Any,
    seed: int,
    fingerprint: dict[str, Any],
    history: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """Write the complete ``testbed.json`` of a finished run (plus ``extra`` fields); return it."""
    curves = [
        {"step": r["step"], "seconds": r["spent"][0], "cpu_seconds": r["spent"][1], "domain": d}
        | values
        for r in history
        for d, values in r["domains"].items()
    ]
    seconds, cpu_seconds = history[-1]["spent"]
    summary = {
        "fingerprint": fingerprint,
        "complete": True,
        **extra,
        "seed": seed,
        "config": dataclasses.asdict(config),
        "checkpoints": [r["checkpoint"] for r in history],
        "steps": [r["step"] for r in history],
        "train_seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "torch_version": torch.__version__,
        "curves": curves,
    }
    write_json(out / SUMMARY, summary)
    return summary
