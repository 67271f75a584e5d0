"""kill -9 at random moments: a resumed capture equals an uninterrupted one, and analyze never leaves
a half-written table; analyze refuses a run whose capture is still writing."""

from __future__ import annotations

import errno
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed_helpers import CLI, ENV, assert_same_run, run

from pathwatch.cli import main
from pathwatch.store import RunStore, _io
from pathwatch.store.tables import read_table


def _kill_after(args: list[str], delay: float) -> None:
    """Start the real CLI, SIGKILL it after ``delay`` seconds (unless it finished first)."""
    process = subprocess.Popen(
        [*CLI, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_capture_killed_at_a_random_moment_resumes_identical(
    seed: int, series, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # start-up (imports, validation) takes a few seconds, the capture a few more: cover both
    _kill_after(series.capture_args(out), random.Random(seed).uniform(1.0, 12.0))
    result = run(series.capture_args(out))
    assert result.returncode == 0, result.stderr
    assert_same_run(out, reference)


@pytest.fixture(scope="module")
def analyzed(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the reference run, analyzed to completion."""
    out = tmp_path_factory.mktemp("analyzed") / "run"
    shutil.copytree(reference, out)
    result = run(["analyze", str(out), "--no-progress"])
    assert result.returncode == 0, result.stderr
    return out


def _tables(run_dir: Path) -> dict:
    return {p.stem: read_table(p) for p in sorted((run_dir / "tables").glob("*.parquet"))}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_analyze_killed_at_a_random_moment_leaves_whole_tables(
    seed: int, analyzed: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    _kill_after(["analyze", str(out), "--no-progress"], random.Random(seed).uniform(1.0, 8.0))
    for name, table in _tables(out).items():  # whatever is there reads whole
        assert table.equals(_tables(analyzed)[name]), name
    assert all(p.name.startswith(".") for p in out.rglob("*.tmp"))  # a temporary is hidden
    result = run(["analyze", str(out), "--no-progress"])
    assert result.returncode == 0, result.stderr
    got, want = _tables(out), _tables(analyzed)
    assert got.keys() == want.keys()
    for name, table in want.items():
        assert got[name].equals(table), name


def test_analyze_during_capture_names_the_missing_units(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    for shard in (5, 7):  # not written yet by a capture still running
        (out / f"units/step-00000200/shard-{shard:05d}.safetensors").unlink()
    started = time.monotonic()
    result = run(["analyze", str(out), "--no-progress"])
    assert result.returncode == 1
    error = result.stderr.splitlines()[0]
    assert "2 of 36 capture units are missing (first: step 200, shard 5)" in error, error
    assert "Let `pathwatch capture` finish" in error
    assert not (out / "tables").exists()
    assert time.monotonic() - started < 60
    assert len(RunStore(out).missing_units()) == 2


@pytest.mark.parametrize("fails", ["samples.parquet", "step-00000200.safetensors", "shard-00011"])
def test_full_disk_on_any_file_is_one_line_and_resumes_identical(
    fails: str, series, reference: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    write = _io._write_bytes

    def full_disk(handle, data: bytes) -> None:
        if fails in Path(handle.name).name:
            write(handle, data[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")
        write(handle, data)

    out = tmp_path / "run"
    monkeypatch.setattr(_io, "_write_bytes", full_disk)
    monkeypatch.setattr(sys, "argv", ["pathwatch", *series.capture_args(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    error, hint = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 1 and "PATHWATCH_DEBUG=1" in hint
    assert error.startswith("pathwatch: error: ") and fails in error
    assert "No space left on device. Fix: free disk space and re-run the same command" in error
    assert list(out.rglob("*.tmp")) == []  # nothing half-written
    assert not [p for p in out.rglob(f"*{fails}*") if ".claims" not in p.parts]

    monkeypatch.setattr(_io, "_write_bytes", write)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert_same_run(out, reference)
