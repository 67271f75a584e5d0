"""Distributed captures (`accelerate launch`, Ray, overlapping workers) equal a single-process one."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from distributed_helpers import CLI, assert_same_run, run

from pathwatch.distributed import Unit, all_units, run_units
from pathwatch.store import CheckpointData, RunStore
from pathwatch.store.manifest import CheckpointInfo, Manifest, ModelInfo, SamplesInfo, Settings

ACCELERATE = ["-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
ACCELERATE += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def test_two_accelerate_processes_equal_one_process(
    series, reference: Path, tmp_path: Path
) -> None:
    pytest.importorskip(
        "accelerate", reason='needs the trainer extra: pip install "pathwatch[trainer]"'
    )
    out = tmp_path / "run"
    result = run(
        ["-m", "pathwatch", *series.capture_args(out)], prefix=[CLI[0], *ACCELERATE], timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Captured 3 checkpoint(s)") == 1  # one summary per launch
    assert_same_run(out, reference)


def test_ray_backend_equals_one_process(series, reference: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason='needs the ray extra: pip install "pathwatch[ray]"')
    out = tmp_path / "run"
    result = run(series.capture_args(out, "--backend", "ray"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(out, reference)


def test_unknown_backend_is_one_line(series, tmp_path: Path) -> None:
    result = run(series.capture_args(tmp_path / "run", "--backend", "rey"))
    assert result.returncode == 2
    error, hint = result.stderr.splitlines()
    assert "PATHWATCH_DEBUG=1" in hint
    assert (
        error == "pathwatch: error: Unknown backend 'rey'. Did you mean 'ray'? Valid: local, ray."
    )
    assert not (tmp_path / "run").exists()


# ---- the claim protocol on plain arrays: workers of two overlapping launches in threads (a flock
# held through one open file conflicts with another open of the same file, even in one process)

STEPS, COUNT, SHARD, L, E = (10, 20, 30), 10, 2, 3, 4


def _unit_data(step: int, start: int, stop: int) -> CheckpointData:
    rng = np.random.default_rng([step, start])
    weights = rng.random((stop - start, L, E), dtype=np.float32)
    return CheckpointData(
        weights / weights.sum(-1, keepdims=True),
        rng.random(stop - start, dtype=np.float32),
        np.arange(start, stop),
        np.zeros(stop - start, bool),
    )


class RecordingWorker:
    """Writes deterministic arrays for a unit after a pause, and records every unit it wrote."""

    def __init__(self) -> None:
        self.written: list[Unit] = []
        self.lock = threading.Lock()

    def __call__(self, store: RunStore, unit: Unit) -> int:
        time.sleep(0.01)
        with self.lock:
            self.written.append(unit)
        if unit.shard is None:
            store.write_router_weights(unit.step, [np.full((E, 5), unit.step, np.float32)] * L)
            return 0
        bounds = store.manifest.samples.shard_bounds(unit.shard)
        store.write_unit(unit.step, unit.shard, _unit_data(unit.step, *bounds))
        return bounds[1] - bounds[0]


@pytest.fixture
def synthetic(tmp_path: Path) -> RunStore:
    manifest = Manifest(
        model=ModelInfo("olmoe", "olmoe", L, tuple(range(L)), E, 2),
        checkpoints=tuple(CheckpointInfo(s, f"/ckpt/step-{s}", f"step-{s}") for s in STEPS),
        samples=SamplesInfo("samples.jsonl", "ab" * 32, COUNT, SHARD),
        settings=Settings(batch_size=4, max_length=32),
    )
    store = RunStore.create(tmp_path / "run", manifest)
    store.write_samples(pl.DataFrame({"sample_index": range(COUNT)}))
    return store


@pytest.mark.parametrize("launches", [[2, 1], [3, 3], [1, 1, 1]])
def test_overlapping_workers_write_every_unit_exactly_once(
    synthetic: RunStore, launches: list[int]
) -> None:
    before = RecordingWorker()
    before(synthetic, Unit(20, 1))  # finished before the launches: never redone
    before(synthetic, Unit(20, 3))
    damaged = Unit(20, 3).target(synthetic.path)
    damaged.write_bytes(damaged.read_bytes()[:-5])  # truncated: redone exactly once
    worker = RecordingWorker()
    threads = [
        threading.Thread(
            target=run_units,
            args=(RunStore(synthetic.path), worker),
            kwargs={"rank": r, "size": size},
        )
        for size in launches
        for r in range(size)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = [u for u in all_units(synthetic) if u != Unit(20, 1)]
    assert Counter(worker.written) == Counter(expected)  # every unit once, the finished one never
    for step in STEPS:
        got = synthetic.load_checkpoint(step)
        want = CheckpointData.concatenate(
            [_unit_data(step, *synthetic.manifest.samples.shard_bounds(s)) for s in range(5)]
        )
        np.testing.assert_array_equal(got.mean_weights, want.mean_weights)
        assert synthetic.has_router_weights(step)
    assert list(synthetic.path.rglob("*.tmp")) == []
