"""Helpers of the distributed-capture tests: the real CLI as a subprocess, run comparison."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# one thread everywhere, so every process computes bit-identical numbers
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
CLI = [sys.executable, "-m", "pathwatch"]


def run(
    args: list[str], *, prefix: list[str] = CLI, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run a command to completion with one thread per process; returns it, output captured."""
    return subprocess.run(
        [*prefix, *args], env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


def stored(run_dir: Path) -> dict[str, tuple[dict, dict]]:
    """Every safetensors file of a run: relative path -> (metadata, tensors)."""
    from safetensors import safe_open

    files = {}
    for path in sorted(run_dir.rglob("*.safetensors")):
        with safe_open(path, "np") as handle:
            files[str(path.relative_to(run_dir))] = (
                handle.metadata(),
                {name: handle.get_tensor(name) for name in handle.keys()},  # noqa: SIM118
            )
    return files


def assert_same_run(run_dir: Path, reference_dir: Path) -> None:
    """Same manifest, sample table, and files with the same metadata and tensors, bit for bit."""
    from pathwatch.store import RunStore

    assert RunStore(run_dir).manifest == RunStore(reference_dir).manifest
    assert (run_dir / "samples.parquet").read_bytes() == (
        reference_dir / "samples.parquet"
    ).read_bytes()
    got, want = stored(run_dir), stored(reference_dir)
    assert got.keys() == want.keys()
    for rel, (meta, tensors) in want.items():
        assert got[rel][0] == meta, rel
        assert got[rel][1].keys() == tensors.keys(), rel
        for name, array in tensors.items():
            other = got[rel][1][name]
            assert other.dtype == array.dtype and other.tobytes() == array.tobytes(), (rel, name)
    assert list(run_dir.rglob("*.tmp")) == []
