"""Virtual pathways for dense models — an extension beyond the paper, which covers MoE models only.

A dense transformer has no router, so pathwatch gives each MLP layer K *virtual experts*:

1. **Clusters, fixed once per run.** The intermediate neurons of each MLP layer are split into K
   clusters by spherical k-means (scipy ``kmeans2``, k-means++ seeding, seed fixed) on their *input
   rows* — the row of the gate projection in gated MLPs (Llama, Mistral, Qwen2, OLMo, Gemma), of the
   first projection in plain ones. The row is the direction a neuron reads from the residual stream,
   like a router row; the gate row has no sign ambiguity (``silu`` is not odd), unlike the up and
   down projections, whose signs can flip together without changing the function. Neuron order is
   arbitrary in a trained MLP, so contiguous blocks would be random clusters; k-means groups neurons
   that read similar directions. Clusters are fitted on the first checkpoint of a run and reused for
   every later one (``capture_run`` stores them in ``RUN/virtual_experts.safetensors``).
2. **Routing weights.** For a token with activations ``a`` entering the down projection (I values),
   the weight of virtual expert k is its share of activation mass: ``Σ_{n∈k} |a_n| / Σ_n |a_n|``.
   These sum to 1 per token and are averaged over the sample's real tokens (padding masked), exactly
   as router probabilities are, giving ``mean_weights`` of shape (N, L, K).
3. **Expert embeddings** for pathway consistency: the mean input row of each cluster, (K, H).

Everything downstream (pathways, distance, consistency, onsets, correlations) is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pathwatch._validate import check_array, check_int, is_int
from pathwatch.capture.hooks import MaskedMeanRecorder
from pathwatch.errors import IntegrityError, UnsupportedModelError, invalid_parameter
from pathwatch.store import RunStore

__all__ = [
    "FAMILY",
    "FILE",
    "MLP_PROJECTIONS",
    "VirtualExperts",
    "VirtualRecorder",
    "dense_mlps",
    "fit_virtual_experts",
    "read_virtual_experts",
    "write_virtual_experts",
]

#: family key of captures and runs with virtual experts
FAMILY = "virtual"
#: the run file of a dense-model run's clusters: fitted on its first checkpoint, reused for all
FILE = "virtual_experts.safetensors"

#: (input, down) attribute names of a dense MLP's ``nn.Linear`` projections, first present pair wins:
#: the input projection holds the neurons' input rows (I, H) — the gate of gated MLPs (Llama, Mistral,
#: Qwen2, OLMo, Gemma: gate_proj / down_proj), else the first projection (Phi, OPT: fc1 / fc2;
#: GPT-NeoX: dense_h_to_4h / dense_4h_to_h) — and the down projection reads the I activations.
MLP_PROJECTIONS = (
    ("gate_proj", "down_proj"),
    ("w1", "w2"),
    ("fc1", "fc2"),
    ("dense_h_to_4h", "dense_4h_to_h"),
)

_KMEANS_ITERATIONS = 20
_EPS = 1e-12


@dataclass(frozen=True)
class _Mlp:
    """One dense MLP: its decoder-layer index, the input projection and the down projection."""

    layer: int
    inputs: nn.Linear
    down: nn.Linear


def dense_mlps(model: nn.Module) -> list[_Mlp]:
    """The MLP of every decoder layer of a dense causal LM, in layer order.

    Raises
    ------
    UnsupportedModelError
        No decoder layers, or a layer without an MLP of :data:`MLP_PROJECTIONS`.
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise UnsupportedModelError(
            f"{type(model).__name__}: cannot find the decoder layers (model.get_decoder().layers) "
            "whose MLPs give virtual experts."
        )
    mlps = []
    for index, layer in enumerate(layers):
        found = next(
            (
                _Mlp(index, getattr(module, names[0]), getattr(module, names[1]))
                for module in layer.modules()
                for names in MLP_PROJECTIONS
                if all(isinstance(getattr(module, name, None), nn.Linear) for name in names)
            ),
            None,
        )
        if found is None or found.down.in_features != found.inputs.out_features:
            raise UnsupportedModelError(
                f"{type(model).__name__}: decoder layer {index} has no dense MLP with nn.Linear "
                f"projections named {' / '.join(MLP_PROJECTIONS[0])} (or "
                f"{', '.join(' / '.join(p) for p in MLP_PROJECTIONS[1:])}); virtual experts need "
                "one per layer (MoE models: capture without virtual_experts)."
            )
        mlps.append(found)
    return mlps


@dataclass(frozen=True)
class VirtualExperts:
    """K clusters of the intermediate neurons of every MLP layer of a dense model.

    Attributes
    ----------
    assignment : int64 array of shape (L, I)
        Virtual expert (cluster id in ``[0, K)``) of each neuron of each layer.
    layers : tuple of int, length L
        Decoder-layer index of each MLP layer.
    seed : int
        Seed of the k-means fit.
    """

    assignment: np.ndarray
    layers: tuple[int, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        func = "VirtualExperts"
        assignment = check_array(func, "assignment", self.assignment, dtype=np.int64)
        if assignment.ndim != 2 or assignment.size == 0 or assignment.min() < 0:
            raise invalid_parameter(
                func, "assignment", "an (L, I) array of cluster ids >= 0", self.assignment
            )
        layers = self.layers
        if (
            isinstance(layers, (str, bytes))
            or not isinstance(layers, Sequence)
            or len(layers) != len(assignment)
            or not all(is_int(i) and i >= 0 for i in layers)
        ):
            raise invalid_parameter(
                func, "layers", f"{len(assignment)} decoder-layer indices (ints >= 0)", layers
            )
        object.__setattr__(self, "assignment", assignment)
        object.__setattr__(self, "layers", tuple(int(i) for i in layers))
        object.__setattr__(self, "seed", check_int(func, "seed", self.seed, low=0))

    @property
    def n_experts(self) -> int:
        """Number of virtual experts K per layer."""
        return int(self.assignment.max()) + 1

    def check(self, mlps: list[_Mlp]) -> None:
        """UnsupportedModelError unless these clusters fit the model's MLPs (layers and widths)."""
        layers = tuple(m.layer for m in mlps)
        widths = {m.inputs.out_features for m in mlps}
        if layers != self.layers or widths != {self.assignment.shape[1]}:
            raise UnsupportedModelError(
                f"virtual experts of MLP layers {list(self.layers)} with {self.assignment.shape[1]} "
                f"neurons do not fit a model with MLP layers {list(layers)} of {sorted(widths)} "
                "neurons; fit them on a checkpoint of the same architecture."
            )

    def router_weights(self, model: nn.Module) -> list[np.ndarray]:
        """Expert embeddings: the mean input row of each cluster, one float32 (K, H) array per layer."""
        mlps = dense_mlps(model)
        self.check(mlps)
        out = []
        for mlp, labels in zip(mlps, self.assignment, strict=True):
            rows = mlp.inputs.weight.detach().float().cpu().numpy()
            onehot = np.eye(self.n_experts, dtype=np.float32)[labels]  # (I, K)
            out.append((onehot.T @ rows) / onehot.sum(axis=0)[:, None])
        return out


def _kmeans(rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Spherical k-means labels (I,) of unit rows, every cluster non-empty."""
    from scipy.cluster.vq import kmeans2

    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), _EPS)
    centroids, labels = kmeans2(
        unit.astype(np.float64),
        k,
        iter=_KMEANS_ITERATIONS,
        minit="++",
        missing="warn",
        seed=np.random.default_rng(seed),
    )
    labels = labels.astype(np.int64)
    for empty in np.setdiff1d(np.arange(k), labels):  # rare: move the worst-fitting neuron
        counts = np.bincount(labels, minlength=k)
        distance = np.linalg.norm(unit - centroids[labels], axis=1)
        distance[counts[labels] < 2] = -1.0
        labels[int(np.argmax(distance))] = empty
    return labels


def fit_virtual_experts(model: nn.Module, n_experts: int, *, seed: int = 0) -> VirtualExperts:
    """Cluster each MLP layer's neurons into ``n_experts`` virtual experts (deterministic).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A dense causal LM (see :data:`MLP_PROJECTIONS`); in a checkpoint series, the first one.
    n_experts : int
        K, at least 2 and at most the MLP width.
    seed : int, default 0

    Returns
    -------
    VirtualExperts

    Examples
    --------
    >>> experts = fit_virtual_experts(model, 8)  # doctest: +SKIP
    >>> experts.assignment.shape  # doctest: +SKIP
    (30, 1536)
    """
    mlps = dense_mlps(model)
    width = mlps[0].inputs.out_features
    check_int("fit_virtual_experts", "n_experts", n_experts, low=2, high=width)
    check_int("fit_virtual_experts", "seed", seed, low=0)
    assignment = np.stack(
        [_kmeans(m.inputs.weight.detach().float().cpu().numpy(), n_experts, seed) for m in mlps]
    )
    return VirtualExperts(assignment, tuple(m.layer for m in mlps), seed)


class VirtualRecorder(MaskedMeanRecorder):
    """Context manager that hooks every down projection and averages virtual-expert weights per sample.

    Same interface as :class:`pathwatch.capture.hooks.RoutingRecorder`: call :meth:`expect` with the
    batch's (B, S) real-token mask before each forward pass, and :meth:`means` after it for the
    (B, L, K) per-sample mean weights. Hooks are always removed.
    """

    def __init__(self, model: nn.Module, experts: VirtualExperts) -> None:
        self._mlps = dense_mlps(model)
        experts.check(self._mlps)
        super().__init__([m.layer for m in self._mlps])
        self._experts = experts
        device = self._mlps[0].down.weight.device
        # per layer (I, K) one-hot of the clusters
        self._onehot = [
            torch.nn.functional.one_hot(torch.from_numpy(labels), experts.n_experts)
            .float()
            .to(device)
            for labels in experts.assignment
        ]

    _hooked = "MLPs"

    def _register(self) -> None:
        for layer, mlp in enumerate(self._mlps):
            self._handles.append(mlp.down.register_forward_pre_hook(self._hook(layer)))

    def _hook(self, layer: int) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            activations = args[0]
            mass = activations.abs().float() @ self._onehot[layer].to(activations.device)  # (.., K)
            self._record(layer, mass / mass.sum(dim=-1, keepdim=True).clamp(min=_EPS))

        return hook


def write_virtual_experts(store: RunStore, experts: VirtualExperts) -> Path:
    """Write the clusters into the run, atomically with a checksum: ``RUN/virtual_experts.safetensors``.

    Tensors ``assignment`` (L, I), ``layers`` (L,), ``seed`` (1,), all int64; metadata K.
    """
    return store.write_tensors(
        FILE,
        {
            "assignment": experts.assignment.astype(np.int64),
            "layers": np.asarray(experts.layers, np.int64),
            "seed": np.asarray([experts.seed], np.int64),
        },
        {"n_experts": str(experts.n_experts)},
    )


def read_virtual_experts(store: RunStore) -> VirtualExperts:
    """Read and verify the clusters of a run whose manifest says K virtual experts.

    Raises
    ------
    StoreError
        The file is missing.
    IntegrityError
        The file is damaged, or holds clusters of another K.
    """
    tensors = store.read_tensors(FILE, {"n_experts": str(store.manifest.model.n_experts)})
    assignment, layers, seed = (tensors.get(k) for k in ("assignment", "layers", "seed"))
    if (
        assignment is None
        or layers is None
        or seed is None
        or assignment.ndim != 2
        or len(layers) != len(assignment)
    ):
        raise IntegrityError(
            f"{store.path / FILE}: expected 'assignment' (L, I) and 'layers' (L,). Delete the file "
            "and re-run `pathwatch capture --virtual-experts K` to refit it."
        )
    return VirtualExperts(assignment.astype(np.int64), tuple(int(i) for i in layers), int(seed[0]))
