"""Capture units: one safetensors file per (checkpoint step, shard of samples), written atomically.

Each unit stores the per-sample reductions of one shard and, in its metadata, its step, its shard and
a sha256 checksum of its tensors; :func:`read_unit` recomputes the checksum, so a truncated or
corrupted file is reported (IntegrityError) instead of being read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from pathwatch.errors import IntegrityError, StoreError
from pathwatch.store._io import store_error, write_atomic

UNIT_DIR = "units"
ROUTER_DIR = "routers"

# tensor name -> dtype of a unit
UNIT_DTYPES: dict[str, np.dtype] = {
    "mean_weights": np.dtype(np.float32),
    "loss": np.dtype(np.float32),
    "n_tokens": np.dtype(np.int64),
    "truncated": np.dtype(np.uint8),
    "sample_index": np.dtype(np.int64),
}


@dataclass(frozen=True)
class CheckpointData:
    """Per-sample reductions of one checkpoint (or one shard of it), in sample order.

    Attributes
    ----------
    mean_weights : float32 array of shape (N, L, E)
    loss : float32 array of shape (N,)
    n_tokens : int64 array of shape (N,)
    truncated : bool array of shape (N,)
    """

    mean_weights: np.ndarray
    loss: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray

    @classmethod
    def concatenate(cls, parts: list[CheckpointData]) -> CheckpointData:
        """Join shards along the sample axis."""
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    @classmethod
    def gather(cls, parts: Iterable[tuple[slice, CheckpointData]], count: int) -> CheckpointData:
        """The ``count`` samples whose shards come as (sample rows, shard), each copied into place
        as it is read: one shard and the result in memory, not every shard beside the result."""
        out: dict[str, np.ndarray] = {}
        for rows, part in parts:
            for f in fields(cls):
                value = getattr(part, f.name)
                if f.name not in out:
                    out[f.name] = np.empty((count, *value.shape[1:]), value.dtype)
                out[f.name][rows] = value
        return cls(**out)


def unit_path(run_dir: Path, step: int, shard: int) -> Path:
    """``RUN/units/step-<step:08>/shard-<shard:05>.safetensors``."""
    return Path(run_dir) / UNIT_DIR / f"step-{step:08d}" / f"shard-{shard:05d}.safetensors"


def router_path(run_dir: Path, step: int) -> Path:
    """``RUN/routers/step-<step:08>.safetensors``."""
    return Path(run_dir) / ROUTER_DIR / f"step-{step:08d}.safetensors"


def checksum(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over the name, dtype, shape and bytes of each tensor, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _save(path: Path, tensors: Mapping[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Serialize tensors with a checksum in the metadata and write them atomically."""
    from safetensors.numpy import save

    tensors = {name: np.ascontiguousarray(array) for name, array in tensors.items()}
    write_atomic(path, save(tensors, metadata={**metadata, "checksum": checksum(tensors)}))


def _load(path: Path, expected: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Read a safetensors file and verify its checksum and the metadata in ``expected``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise StoreError(f"{path}: missing. Re-run `pathwatch capture` to create it.") from exc
    except OSError as exc:
        raise store_error(path, "reading", exc) from exc
    redo = "Re-run `pathwatch capture` with the same arguments to redo it."
    try:
        tensors = load(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError) as exc:
        raise IntegrityError(f"{path}: unreadable safetensors file ({exc}). {redo}") from exc
    for key, value in {**expected, "checksum": checksum(tensors)}.items():
        if metadata.get(key) != value:
            raise IntegrityError(
                f"{path}: metadata {key!r} is {metadata.get(key)!r}, expected {value!r}. {redo}"
            )
    return tensors


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` block of a serialized safetensors file."""
    import json

    header_len = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}


def write_unit(
    run_dir: Path, step: int, shard: int, data: CheckpointData, sample_index: np.ndarray
) -> Path:
    """Write one unit atomically and return its path.

    Parameters
    ----------
    data : the shard's reductions; ``mean_weights`` of shape (n, L, E).
    sample_index : int array of shape (n,), the global indices of the shard's samples.
    """
    tensors = {f.name: getattr(data, f.name) for f in fields(CheckpointData)}
    tensors["sample_index"] = sample_index
    tensors = {name: np.asarray(tensors[name], dtype=dtype) for name, dtype in UNIT_DTYPES.items()}
    path = unit_path(run_dir, step, shard)
    _save(path, tensors, {"step": str(step), "shard": str(shard)})
    return path


def read_unit(
    run_dir: Path,
    step: int,
    shard: int,
    *,
    sample_range: tuple[int, int],
    n_layers: int,
    n_experts: int,
) -> CheckpointData:
    """Read and verify one unit (checksum, step, shard, dtypes, shapes, sample indices).

    Raises IntegrityError when the file is truncated, corrupt or belongs elsewhere.
    """
    path = unit_path(run_dir, step, shard)
    tensors = _load(path, {"step": str(step), "shard": str(shard)})
    n = sample_range[1] - sample_range[0]
    shapes = {name: (n,) for name in UNIT_DTYPES} | {"mean_weights": (n, n_layers, n_experts)}
    for name, dtype in UNIT_DTYPES.items():
        array = tensors.get(name)
        if array is None or array.dtype != dtype or array.shape != shapes[name]:
            got = None if array is None else f"{array.dtype}{array.shape}"
            raise IntegrityError(
                f"{path}: tensor {name!r} should be {dtype}{shapes[name]}, got {got}. "
                "Delete the file and re-run `pathwatch capture` to redo it."
            )
    if not np.array_equal(tensors["sample_index"], np.arange(*sample_range)):
        raise IntegrityError(
            f"{path}: sample_index does not cover samples {sample_range[0]}..{sample_range[1] - 1}. "
            "Delete the file and re-run `pathwatch capture` to redo it."
        )
    return CheckpointData(
        mean_weights=tensors["mean_weights"],
        loss=tensors["loss"],
        n_tokens=tensors["n_tokens"],
        truncated=tensors["truncated"].astype(bool),
    )


def write_router_weights(
    run_dir: Path, step: int, layers: list[int], weights: list[np.ndarray]
) -> Path:
    """Write the router weight matrices of one checkpoint: ``layer_<true index>`` -> (E, H) f32."""
    tensors = {
        f"layer_{layer}": np.asarray(w, dtype=np.float32)
        for layer, w in zip(layers, weights, strict=True)
    }
    path = router_path(run_dir, step)
    _save(path, tensors, {"step": str(step)})
    return path


def read_router_weights(run_dir: Path, step: int, layers: tuple[int, ...]) -> list[np.ndarray]:
    """Read and verify the router weights of one checkpoint, one (E, H) array per MoE layer."""
    path = router_path(run_dir, step)
    tensors = _load(path, {"step": str(step)})
    names = [f"layer_{layer}" for layer in layers]
    if sorted(tensors) != sorted(names):
        raise IntegrityError(
            f"{path}: holds {sorted(tensors)}, expected {names}. "
            "Delete the file and re-run `pathwatch capture` to redo it."
        )
    return [tensors[name] for name in names]
