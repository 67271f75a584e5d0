"""A testbed's output directory, shared by every testbed: its files, checkpoints, summary and result.

Every testbed (:mod:`pathwatch.testbed.train`, :mod:`pathwatch.testbed.text`, and any other of
:mod:`pathwatch.testbed.presets`) writes the same layout into its ``out_dir`` with these helpers:
``step-<N>/`` checkpoints (:func:`save_checkpoint`), the per-item ``accuracy.jsonl``, the probe set
``train_samples.jsonl``, ``validation_samples.jsonl``, optionally ``test_items.jsonl``, and the
summary ``testbed.json`` (:func:`write_summary`), all written atomically; a complete run of the
same configuration and seed is found again by :func:`complete_summary`. It returns a
:class:`TestbedRun`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pathwatch._hf import no_hf_progress_bars
from pathwatch._validate import check_bool, check_instance, check_int, check_path
from pathwatch.errors import InputError
from pathwatch.store import write_atomic

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

    @property
    def test_items(self) -> Path | None:
        """``test_items.jsonl`` (the held-out items' texts, for pairing groups), if the testbed has one."""
        path = self.out_dir / TEST_ITEMS
        return path if path.is_file() else None

    def write_probes(self, path: Path) -> Path:
        """Write the samples file that capture reads: the training probes, then the validation
        samples. Written atomically and only when it changed, so that a resumed capture finds the
        same file (its sha256 is in the run's manifest)."""
        probes = self.train_samples.read_bytes() + self.validation_samples.read_bytes()
        if not path.is_file() or path.read_bytes() != probes:
            write_atomic(path, probes)
        return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically."""
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write indented JSON, atomically."""
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_accuracy(
    out: Path, history: Sequence[dict[str, Any]], item_ids: Mapping[str, Sequence[str]]
) -> None:
    """Write ``accuracy.jsonl`` (what ``analyze --accuracy`` reads): per domain, per checkpoint
    record of ``history``, one row per held-out item of ``item_ids[domain]`` with its
    correctness ``record["correct"][domain]``."""
    write_jsonl(
        out / ACCURACY,
        [
            {"step": record["step"], "domain": domain, "item_id": i, "correct": int(c)}
            for domain, ids in item_ids.items()
            for record in history
            for i, c in zip(ids, record["correct"][domain].tolist(), strict=True)
        ],
    )


def stop_rule_fired(
    record: dict[str, Any],
    domains: Sequence[str],
    stop_accuracy: float | None,
    stop_domains: int | None,
) -> bool:
    """Whether a checkpoint's ``record`` ends training: ``stop_domains`` (None: all) of
    ``domains`` reached held-out accuracy ``stop_accuracy`` (None: never stop)."""
    if stop_accuracy is None or not domains:
        return False
    reached = sum(record["domains"][d]["heldout_accuracy"] >= stop_accuracy for d in domains)
    return reached >= min(stop_domains or len(domains), len(domains))


def check_training(
    func: str, config: Any, kind: type, *, seed: Any, progress: Any, threads: Any
) -> Any:
    """The options every testbed's training function checks before it trains: ``config`` (a
    ``kind`` or None, then ``kind()``), ``seed`` ≥ 0, ``progress`` and ``threads`` ≥ 1."""
    config = check_instance(func, "config", config, kind, allow_none=True)
    check_int(func, "seed", seed, low=0)
    check_bool(func, "progress", progress)
    check_int(func, "threads", threads, low=1)
    return kind() if config is None else config


def testbed_dir(func: str, path: Any) -> Path:
    """A testbed's output directory, created; InputError if the path is a file."""
    out = check_path(func, "out_dir", path)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: out_dir exists and is not a directory. Pass a directory path.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_fingerprint(config: Any, seed: int, format_version: int) -> dict[str, Any]:
    """What identifies a run, as it reads back from JSON (tuples become lists)."""
    return json.loads(
        json.dumps(
            {
                "format_version": format_version,
                "seed": seed,
                "config": dataclasses.asdict(config),
            }
        )
    )


def complete_summary(out: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a complete run of ``fingerprint`` in ``out`` (every checkpoint present), or None."""
    path = out / SUMMARY
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    if summary.get("fingerprint") != fingerprint or not summary.get("complete"):
        return None
    if not all((out / name / "model.safetensors").is_file() for name in summary["checkpoints"]):
        return None
    return summary


def save_checkpoint(out: Path, step: int, model: Any, tokenizer: Any) -> str:
    """Save ``model`` and ``tokenizer`` as ``out/step-<step>``, whole or not at all (a hidden
    temporary directory, renamed); returns the directory's name."""
    name = f"step-{step}"
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out / name, ignore_errors=True)
    os.replace(tmp, out / name)
    return name


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
