"""Spreading the units of a capture over processes (``accelerate launch``) and machines (Ray).

The work of a capture is a deterministic list of units (:func:`all_units`): per checkpoint, its
router weights, then one unit per shard of samples. Every worker writes straight into the shared
run directory; a unit is written only under its claim (:meth:`pathwatch.store.RunStore.claim`, an
advisory lock the OS drops when the holder dies), and is re-checked after the claim is taken, so
two workers -- of one launch or of two overlapping ones -- never write the same unit and a unit
that verifies is never recomputed. Results do not depend on who computed what: each unit is a pure
function of its checkpoint and shard.

- ``accelerate launch -m pathwatch capture ...``: every process validates the inputs, process 0
  writes the manifest and sample table, all wait, then each process takes a contiguous slice of
  the unit list (:func:`run_units`) and, once done, helps with whatever is left.
- ``pathwatch capture --backend ray [--ray-address ADDR]``: the driver writes the manifest, then one
  Ray task per batch of a checkpoint's missing units (:func:`run_ray`), each loading the
  checkpoint once.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathwatch.errors import InputError
from pathwatch.store import RunStore
from pathwatch.store.units import router_path, unit_path

__all__ = [
    "Processes",
    "Unit",
    "all_units",
    "is_main_process",
    "launched_processes",
    "run_ray",
    "run_units",
]


@dataclass(frozen=True)
class Unit:
    """One piece of capture work: the router weights (``shard is None``) or one shard of a step."""

    step: int
    shard: int | None

    def target(self, run: Path) -> Path:
        """The file this unit writes."""
        return (
            router_path(run, self.step)
            if self.shard is None
            else unit_path(run, self.step, self.shard)
        )

    def done(self, store: RunStore) -> bool:
        """Whether the unit's file exists and verifies."""
        if self.shard is None:
            return store.has_router_weights(self.step)
        return store.unit_ok(self.step, self.shard)


# A worker: captures and writes one unit into the store, returns the samples it captured.
Worker = Callable[[RunStore, Unit], int]


def all_units(store: RunStore) -> list[Unit]:
    """Every unit of the run in capture order: per step, its router weights, then its shards."""
    return [Unit(step, shard) for step in store.steps for shard in (None, *range(store.n_shards))]


@dataclass(frozen=True)
class Processes:
    """The processes of one launch: this one's rank, how many, and a barrier."""

    rank: int
    size: int
    wait: Callable[[], None]

    @property
    def is_main(self) -> bool:
        """Whether this is process 0, the one that writes the run's shared files."""
        return self.rank == 0


def launched_processes() -> Processes:
    """This process's place in an ``accelerate launch`` (or ``torchrun``); one process otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes(0, 1, lambda: None)
    try:
        from accelerate import PartialState
    except ImportError as exc:
        raise ImportError(
            'A multi-process capture needs accelerate: pip install "pathwatch[trainer]".'
        ) from exc
    state = PartialState()
    return Processes(state.process_index, state.num_processes, state.wait_for_everyone)


def is_main_process() -> bool:
    """Whether this process prints for the launch (rank 0, or not launched at all)."""
    return int(os.environ.get("RANK", "0")) == 0


def run_units(
    store: RunStore,
    worker: Worker,
    *,
    rank: int = 0,
    size: int = 1,
    progress: bool = False,
) -> None:
    """Capture every unit of the run that is absent or does not verify, as process ``rank`` of ``size``.

    The process first works through its contiguous slice of :func:`all_units` (claims that another
    worker holds are skipped), then helps: it takes any unit still absent, from the end of the
    list, and waits for the units others hold. On return every unit of the run exists.
    """
    units = all_units(store)
    mine = units[rank * len(units) // size : (rank + 1) * len(units) // size]
    with _Progress(store, progress) as bar:
        for unit in mine:
            _attempt(store, worker, unit, wait=False, bar=bar)
        _help_until_complete(store, worker, units, bar)


def run_ray(
    store: RunStore,
    worker: Worker,
    *,
    address: str | None = None,
    progress: bool = False,
) -> None:
    """Capture the run's missing units as Ray tasks on the cluster at ``address`` (None: a local one).

    Tasks write into the run directory themselves, so on a cluster it must be on a filesystem every
    node mounts at the same path, as must the checkpoints and the sample file. One task per batch
    of one checkpoint's units, enough batches to keep every GPU (or CPU) busy; one GPU per task when
    the cluster has GPUs. Units whose claim another launch holds are finished here afterwards.
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError('--backend ray needs Ray: pip install "pathwatch[ray]".') from exc

    todo = [unit for unit in all_units(store) if not unit.done(store)]
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:
            raise InputError(
                f"--ray-address {address}: cannot connect to a Ray cluster ({exc}). Start one with "
                "`ray start --head` or leave --ray-address out for a local one."
            ) from exc
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        slots = gpus or max(1, int(resources.get("CPU", 1)))
        task = ray.remote(_ray_task).options(num_cpus=1, num_gpus=1 if gpus else 0)
        worker_ref = ray.put(worker)
        pending = [
            task.remote(str(store.path), worker_ref, batch) for batch in _batches(todo, slots)
        ]
        with _Progress(store, progress) as bar:
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                try:
                    bar.advance(ray.get(finished[0]))
                except ray.exceptions.RayTaskError as exc:  # the worker's own one-line error
                    raise exc.cause from None
            _help_until_complete(store, worker, all_units(store), bar)
    finally:
        if started_here:
            ray.shutdown()


def _ray_task(run: str, worker: Worker, units: list[Unit]) -> int:
    """One Ray task: capture ``units`` (one checkpoint's) into the run; returns samples captured."""
    store = RunStore(run)
    with RunStore.lock(store.path, shared=True):
        return sum(_attempt(store, worker, unit, wait=False) or 0 for unit in units)


def _batches(units: Sequence[Unit], slots: int) -> Iterator[list[Unit]]:
    """Split units into about ``slots`` batches that never span two checkpoints."""
    size = max(1, math.ceil(len(units) / slots))
    by_step: dict[int, list[Unit]] = {}
    for unit in units:
        by_step.setdefault(unit.step, []).append(unit)
    for step_units in by_step.values():
        for start in range(0, len(step_units), size):
            yield step_units[start : start + size]


def _attempt(
    store: RunStore, worker: Worker, unit: Unit, *, wait: bool, bar: _Progress | None = None
) -> int | None:
    """Capture ``unit`` if this process can claim it and it is not done: the samples captured, or
    None when another worker holds the unit or it was done already."""
    with store.claim(unit.target(store.path), wait=wait) as held:
        if not held or unit.done(store):
            return None
        done = worker(store, unit)
    if bar is not None:
        bar.advance(done)
    return done


def _help_until_complete(
    store: RunStore, worker: Worker, units: list[Unit], bar: _Progress
) -> None:
    """Take absent units from the end of the list; wait for those held by others; until none is absent."""
    while left := [unit for unit in units if not unit.target(store.path).is_file()]:
        captured = [_attempt(store, worker, unit, wait=False, bar=bar) for unit in reversed(left)]
        if all(n is None for n in captured):  # every absent unit is held by another worker
            _attempt(store, worker, left[0], wait=True, bar=bar)  # its holder ends or dies


class _Progress:
    """A tqdm bar over the run's shard units, counted from the files (all workers' progress)."""

    def __init__(self, store: RunStore, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.store = store
        self.samples = 0
        total = len(store.steps) * store.n_shards
        self.bar = tqdm(
            total=total, initial=self._finished(), unit="unit", desc="capture", disable=not enabled
        )
        self.started = time.perf_counter()

    def _finished(self) -> int:
        return sum(1 for _ in self.store.path.glob("units/step-*/shard-*.safetensors"))

    def advance(self, samples: int) -> None:
        """Record ``samples`` captured here and show the units finished by every worker."""
        self.samples += samples
        self.bar.n = self._finished()
        self.bar.set_postfix(
            samples_per_s=f"{self.samples / (time.perf_counter() - self.started):.1f}"
        )

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()
