"""The run directory: manifest, capture units, router weights, sample table and derived tables.

::

    RUN/manifest.json
    RUN/samples.parquet
    RUN/units/step-<step:08>/shard-<shard:05>.safetensors
    RUN/routers/step-<step:08>.safetensors
    RUN/tables/<name>.parquet
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pathwatch.errors import IntegrityError, StoreError
from pathwatch.store.manifest import Manifest
from pathwatch.store.tables import read_table, write_table
from pathwatch.store.units import (
    CheckpointData,
    read_router_weights,
    read_unit,
    unit_path,
    write_router_weights,
    write_unit,
)

if TYPE_CHECKING:
    import polars as pl

__all__ = ["CheckpointData", "Manifest", "RunStore"]

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
        self.path = Path(path)
        self.manifest = Manifest.read(self.path)

    @classmethod
    def create(cls, path: str | Path, manifest: Manifest) -> RunStore:
        """Start a run directory by writing its manifest."""
        manifest.write(Path(path))
        return cls(path)

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
        return CheckpointData.concatenate([self.read_unit(step, s) for s in shards])

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

    def read_table(self, name: str) -> pl.DataFrame:
        """Read ``RUN/tables/<name>.parquet``."""
        return read_table(self.table_path(name))
