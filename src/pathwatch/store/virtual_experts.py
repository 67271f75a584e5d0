"""``RUN/virtual_experts.safetensors``: the neuron clusters of a dense-model run (virtual pathways).

Fitted once, on the run's first checkpoint, and reused for every checkpoint, so that all checkpoints
are read through the same virtual experts. Written atomically with a checksum like every unit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pathwatch.capture.virtual import VirtualExperts
from pathwatch.errors import IntegrityError
from pathwatch.store.units import _load, _save

VIRTUAL_EXPERTS_NAME = "virtual_experts.safetensors"


def virtual_experts_path(run_dir: Path) -> Path:
    """``RUN/virtual_experts.safetensors``."""
    return Path(run_dir) / VIRTUAL_EXPERTS_NAME


def write_virtual_experts(run_dir: Path, experts: VirtualExperts) -> Path:
    """Write the clusters: ``assignment`` (L, I), ``layers`` (L,), ``seed`` (1,), all int64; metadata K."""
    path = virtual_experts_path(run_dir)
    _save(
        path,
        {
            "assignment": experts.assignment.astype(np.int64),
            "layers": np.asarray(experts.layers, np.int64),
            "seed": np.asarray([experts.seed], np.int64),
        },
        {"n_experts": str(experts.n_experts)},
    )
    return path


def read_virtual_experts(run_dir: Path, *, n_experts: int) -> VirtualExperts:
    """Read and verify the clusters of a run whose manifest says ``n_experts`` virtual experts.

    Raises
    ------
    StoreError
        The file is missing.
    IntegrityError
        The file is damaged, or holds clusters of another K.
    """
    path = virtual_experts_path(run_dir)
    tensors = _load(path, {"n_experts": str(n_experts)})
    assignment, layers, seed = (tensors.get(k) for k in ("assignment", "layers", "seed"))
    if (
        assignment is None
        or layers is None
        or seed is None
        or assignment.ndim != 2
        or len(layers) != len(assignment)
    ):
        raise IntegrityError(
            f"{path}: expected 'assignment' (L, I) and 'layers' (L,). Delete the file and re-run "
            "`pathwatch capture --virtual-experts K` to refit it."
        )
    return VirtualExperts(assignment.astype(np.int64), tuple(int(i) for i in layers), int(seed[0]))
