"""Tiny saved OLMoE checkpoints, a sample file, and the real CLI as a subprocess, for the tests of
distributed and interrupted captures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from distributed_helpers import run

from tiny_models import build_tiny_model, build_tiny_tokenizer


@dataclass(frozen=True)
class Series:
    """Three tiny OLMoE checkpoints (steps 100, 200, 300) and 48 text samples in two domains."""

    checkpoints: list[Path]
    samples: Path

    def capture_args(self, out: Path, *extra: str) -> list[str]:
        """Arguments of ``pathwatch capture`` for this series into ``out`` (4 samples per unit)."""
        args = ["capture", "--samples", str(self.samples), "--out", str(out), "--batch-size", "4"]
        args += ["--max-length", "32", "--shard-size", "4", "--no-progress", *extra]
        for path in self.checkpoints:
            args += ["--checkpoint", str(path)]
        return args


@pytest.fixture(scope="session")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("series")
    tokenizer = build_tiny_tokenizer()
    checkpoints = []
    for seed, step in enumerate((100, 200, 300)):
        path = root / f"step-{step}"
        build_tiny_model("olmoe", seed=seed).save_pretrained(path)
        tokenizer.save_pretrained(path)
        checkpoints.append(path)
    rows = [
        {"id": f"m{i}", "domain": "math", "text": f"{i % 50} + {i % 7} = {i % 50 + i % 7}"}
        if i % 2 == 0
        else {"id": f"t{i}", "domain": "text", "text": f"the cat sat on the mat {i % 13}"}
        for i in range(48)
    ]
    samples = root / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Series(checkpoints, samples)


@pytest.fixture(scope="session")
def reference(series: Series, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted single-process capture of the series, through the real CLI."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = run(series.capture_args(out))
    assert result.returncode == 0, result.stderr
    return out
