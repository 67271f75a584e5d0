"""The run directory: manifest, capture units, router weights, sample table and derived tables.

::

    RUN/manifest.json
    RUN/samples.parquet
    RUN/units/step-<step:08>/shard-<shard:05>.safetensors
    RUN/routers/step-<step:08>.safetensors
    RUN/tables/<name>.parquet

:class:`RunStore` owns the directory: creating, resuming, locking and cleaning it, claiming its
files for distributed workers, and reading and writing every file of it. :func:`write_atomic` and
:func:`write_table` are the crash-safe writes for files elsewhere that mark progress.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pathwatch._validate import check_path
from pathwatch.errors import InputError, IntegrityError, StoreError
from pathwatch.store._io import (
    LOCK_NAME,
    TEMP_SUFFIX,
    claim,
    exclusive_lock,
    remove_temporaries,
    replace_directory,
    shared_lock,
    store_error,
    write_atomic,
)
from pathwatch.store.manifest import MANIFEST_NAME, Manifest
from pathwatch.store.tables import read_schema, read_table, table_bytes, write_table
from pathwatch.store.units import (
    CheckpointData,
    _load,
    _save,
    read_router_weights,
    read_unit,
    unit_path,
    write_router_weights,
    write_unit,
)

if TYPE_CHECKING:
    import polars as pl

__all__ = ["CheckpointData", "Manifest", "RunStore", "read_table", "write_atomic", "write_table"]

SAMPLES_TABLE = "samples.parquet"
TABLE_DIR = "tables"


class RunStore:
    """A run directory written by ``pathwatch capture``.

    Parameters
    ----------
    path : the run directory; it must hold a ``manifest.json``.

    Examples
    --------
    >>> store = RunStore("runs/demo")  # doctest: +SKIP
    >>> store.steps  # doctest: +SKIP
    (100, 200, 300)
    >>> store.load_checkpoint(200).mean_weights.shape  # doctest: +SKIP
    (1000, 2, 8)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = check_path("RunStore", "path", path)
        self.manifest = Manifest.read(self.path)

    @classmethod
    def create(cls, path: str | Path, manifest: Manifest) -> RunStore:
        """Start a run directory by writing its manifest."""
        manifest.write(Path(path))
        return cls(path)

    @classmethod
    def resume(cls, path: str | Path, manifest: Manifest) -> RunStore | None:
        """The run at ``path`` to resume with ``manifest``, or None when ``path`` is free for a new one.

        Nothing is written. A directory holding only what a capture killed before its manifest
        left behind (the lock, temporary files) counts as free.

        Raises
        ------
        InputError
            ``path`` is a file, a non-empty directory that is no run, or a run of other inputs.
        """
        out = Path(path)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} is a file; pass a directory for the run.")
        if not (out / MANIFEST_NAME).exists():
            if out.exists() and any(not _is_ours(p.name) for p in out.iterdir()):
                raise InputError(
                    f"--out {out} is a non-empty directory without a {MANIFEST_NAME}; pass a new or "
                    "empty directory for the run."
                )
            return None
        store = cls(out)
        difference = store.manifest.first_difference(manifest)
        if difference is not None:
            field, stored, wanted = difference
            raise InputError(
                f"{out / MANIFEST_NAME}: this run was captured with {field} = {stored!r}, not "
                f"{wanted!r}; re-run with the original inputs to resume, or pass a new --out."
            )
        return store

    @staticmethod
    @contextlib.contextmanager
    def lock(path: str | Path, *, shared: bool = False) -> Iterator[None]:
        """Create the run directory if needed and hold its lock for the block.

        Exclusive for a single-process writer; shared by the workers of a distributed capture,
        which then claim each file on its own (:meth:`claim`). StoreError when the other kind
        holds it, or when the directory cannot be created.
        """
        out = Path(path)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(out, "creating", exc) from exc
        with shared_lock(out) if shared else exclusive_lock(out):
            yield

    def remove_temporaries(self) -> int:
        """Delete the temporary files killed writers left in the run; returns how many.

        Only under an exclusive :meth:`lock`: under a shared one, other workers' files are in flight.
        """
        return remove_temporaries(self.path)

    def claim(self, target: Path, *, wait: bool) -> contextlib.AbstractContextManager[bool]:
        """Claim the right to write ``target``, a file of this run: yields whether this process holds it.

        The claim is an advisory lock on ``RUN/.claims/<target>.claim`` that the OS drops when its
        holder dies; with ``wait`` it blocks until the holder finishes, else it yields False at once.
        """
        return claim(self.path, target, wait=wait)

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r}, steps={list(self.steps)})"

    @property
    def steps(self) -> tuple[int, ...]:
        """Checkpoint steps of the run, ascending."""
        return self.manifest.steps

    @property
    def n_shards(self) -> int:
        """Number of sample shards per checkpoint."""
        return self.manifest.samples.n_shards

    def _check_step(self, step: int) -> None:
        if step not in self.steps:
            raise StoreError(
                f"{self.path}: no checkpoint at step {step!r}. Steps of this run: {list(self.steps)}."
            )

    def read_unit(self, step: int, shard: int) -> CheckpointData:
        """Read and verify one (step, shard) unit; IntegrityError if it is truncated or corrupt."""
        self._check_step(step)
        model = self.manifest.model
        return read_unit(
            self.path,
            step,
            shard,
            sample_range=self.manifest.samples.shard_bounds(shard),
            n_layers=len(model.moe_layers),
            n_experts=model.n_experts,
        )

    def write_unit(self, step: int, shard: int, data: CheckpointData) -> Path:
        """Write one unit atomically; ``data`` holds the shard's samples in order."""
        self._check_step(step)
        start, stop = self.manifest.samples.shard_bounds(shard)
        if len(data.loss) != stop - start:
            raise StoreError(
                f"unit (step {step}, shard {shard}) must hold {stop - start} samples, got "
                f"{len(data.loss)}."
            )
        return write_unit(self.path, step, shard, data, np.arange(start, stop))

    def unit_ok(self, step: int, shard: int) -> bool:
        """Whether the unit exists and verifies."""
        try:
            self.read_unit(step, shard)
        except IntegrityError:
            return False
        except StoreError:
            if unit_path(self.path, step, shard).exists():
                raise
            return False
        return True

    def missing_units(self) -> list[tuple[int, int]]:
        """(step, shard) of every unit that is absent or does not verify, in capture order."""
        return [
            (step, shard)
            for step in self.steps
            for shard in range(self.n_shards)
            if not self.unit_ok(step, shard)
        ]

    def load_checkpoint(self, step: int) -> CheckpointData:
        """All samples of one checkpoint, shards concatenated in sample order.

        Returns
        -------
        CheckpointData with ``mean_weights`` of shape (N, L, E) and (N,) ``loss``, ``n_tokens``,
        ``truncated``.

        Raises
        ------
        StoreError
            A unit of ``step`` is missing; IntegrityError (a StoreError) if one does not verify.
        """
        self._check_step(step)
        shards = range(self.n_shards)
        missing = [s for s in shards if not unit_path(self.path, step, s).exists()]
        if missing:
            raise StoreError(
                f"{self.path}: step {step} is incomplete ({len(missing)} of {self.n_shards} shards "
                "missing). Re-run `pathwatch capture` with the same arguments to resume."
            )
        bounds = self.manifest.samples.shard_bounds
        return CheckpointData.gather(
            ((slice(*bounds(s)), self.read_unit(step, s)) for s in shards),
            self.manifest.samples.count,
        )

    def router_weights(self, step: int) -> list[np.ndarray]:
        """The router weight matrix of each MoE layer at ``step``: a list of L arrays of shape (E, H)."""
        self._check_step(step)
        return read_router_weights(self.path, step, self.manifest.model.moe_layers)

    def has_router_weights(self, step: int) -> bool:
        """Whether the router weights of ``step`` exist and verify."""
        try:
            self.router_weights(step)
        except StoreError:
            return False
        return True

    def write_router_weights(self, step: int, weights: list[np.ndarray]) -> Path:
        """Store the L router matrices (E, H) of ``step``, keyed by true layer index."""
        self._check_step(step)
        return write_router_weights(self.path, step, list(self.manifest.model.moe_layers), weights)

    def write_tensors(
        self, name: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]
    ) -> Path:
        """Write ``RUN/<name>`` (safetensors) atomically, with a checksum beside ``metadata``."""
        path = self.path / name
        _save(path, tensors, dict(metadata))
        return path

    def read_tensors(self, name: str, metadata: Mapping[str, str]) -> dict[str, np.ndarray]:
        """Read and verify ``RUN/<name>``: its checksum and the ``metadata`` it must carry.

        Raises StoreError if it is missing, IntegrityError if it does not verify.
        """
        return _load(self.path / name, metadata)

    def write_samples(self, frame: pl.DataFrame) -> Path:
        """Write the sample table (sample_index, id, domain) atomically."""
        return write_table(frame, self.path / SAMPLES_TABLE)

    def samples(self) -> pl.DataFrame:
        """The sample table: ``sample_index``, ``id``, ``domain``, one row per sample in capture order."""
        return read_table(self.path / SAMPLES_TABLE)

    def table_path(self, name: str) -> Path:
        """``RUN/tables/<name>.parquet``."""
        return self.path / TABLE_DIR / f"{name}.parquet"

    def write_table(self, name: str, frame: pl.DataFrame) -> Path:
        """Write ``RUN/tables/<name>.parquet`` atomically."""
        return write_table(frame, self.table_path(name))

    def replace_tables(self, tables: Mapping[str, pl.DataFrame]) -> Path:
        """Make ``tables`` the run's whole set of derived tables: ``RUN/tables/`` afterwards holds
        exactly these, so no table of an earlier analysis survives beside them.

        The set is written to a hidden temporary directory, fsync'd, and swapped in by two renames
        (old set aside, new set in), then the old set is deleted: a reader sees the old set or the
        new one, never a mixture. A crash between the renames leaves the old set as
        ``RUN/.tables.old``, which the next call removes.
        """
        target = self.path / TABLE_DIR
        return replace_directory(
            target, {f"{name}.parquet": table_bytes(frame) for name, frame in tables.items()}
        )

    def read_table(self, name: str, *, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Read ``RUN/tables/<name>.parquet`` (only ``columns``, if given).

        Raises StoreError if it is missing, IntegrityError if it is damaged or lacks a column.
        """
        return read_table(self.table_path(name), columns=columns)

    def table_columns(self, name: str) -> list[str]:
        """The column names of ``RUN/tables/<name>.parquet``, read from its footer alone."""
        return list(read_schema(self.table_path(name)))

    def has_table(self, name: str) -> bool:
        """Whether ``RUN/tables/<name>.parquet`` exists (an analysis writes some tables only
        with ground truth)."""
        return self.table_path(name).exists()


def _is_ours(name: str) -> bool:
    """Whether a file name is one a capture creates before its manifest (lock, temporary files)."""
    return name == LOCK_NAME or name.endswith(TEMP_SUFFIX)
