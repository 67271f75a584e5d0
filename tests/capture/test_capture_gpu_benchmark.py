"""benchmarks/capture_gpu.py skips with one line without CUDA, and runs where a GPU is lent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "capture_gpu.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip on a machine without CUDA")
def test_without_cuda_the_benchmark_skips_with_one_line() -> None:
    done = _run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "capture_gpu: skipped, no CUDA GPU visible to torch (the benchmark needs one)."
    ]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_benchmark_measures_the_ratio_and_tokens_per_second() -> None:
    done = _run("--samples", "64", "--repeats", "2")
    assert done.returncode == 0, done.stderr
    assert "capture/bare: median" in done.stdout and "tokens/s: bare" in done.stdout
