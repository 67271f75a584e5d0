"""Pathway consistency: how the routing embedding of a sample turns from layer to layer.

SPEC §1: the sample's embedding at layer l is e_l = Σ_k w̄_l[k] · W_l[k] (W_l the router weight
matrix, E × H); with c_l = cos(e_l, e_{l+1}) over the L−1 adjacent layer pairs,
C = 1 − (1/(L−1)) Σ_l c_l / (max_l c_l + 1e-8). C is NaN when L < 3 (it is identically 0 there)
and when max_l c_l ≤ 0. ``smoothness`` = 1 − C; ``adjacent_cosine`` = mean_l c_l is reported beside
them because C can rise only because the cosines fall. Count undefined values with
``np.isnan(consistency(...)).sum()`` or :attr:`ConsistencyMetrics.n_undefined`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pathwatch.errors import InputError, invalid_parameter

#: The stabilizer of the paper's formula.
EPS = 1e-8

# Mean weights converted to float64 at once (a chunk of samples; bounds the working memory).
_CHUNK_ELEMENTS = 2**20


@dataclass(frozen=True)
class ConsistencyMetrics:
    """Per-sample consistency, smoothness and adjacent-layer cosines (see :func:`consistency_metrics`).

    Attributes
    ----------
    cosines : ndarray of float64, shape (N, L-1)
        c_l = cos(e_l, e_{l+1}) for each adjacent layer pair.
    consistency : ndarray of float64, shape (N,)
        The paper's C; NaN where undefined.
    smoothness : ndarray of float64, shape (N,)
        1 − consistency.
    adjacent_cosine : ndarray of float64, shape (N,)
        Mean of ``cosines`` over layer pairs (NaN when L < 2).
    """

    cosines: npt.NDArray[np.float64]
    consistency: npt.NDArray[np.float64]
    smoothness: npt.NDArray[np.float64]
    adjacent_cosine: npt.NDArray[np.float64]

    @property
    def n_undefined(self) -> int:
        """Number of samples whose consistency is NaN (L < 3, max_l c_l ≤ 0, or a zero embedding)."""
        return int(np.isnan(self.consistency).sum())


def layer_cosines(
    mean_weights: npt.ArrayLike, router_weights: Sequence[npt.ArrayLike] | npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Cosine between the routing embeddings of adjacent MoE layers, per sample.

    Computed through E × E Gram matrices (W_l W_{l+1}ᵀ, W_l W_lᵀ), so the (N, L, H) embeddings are
    never materialized. A zero embedding gives NaN.

    Parameters
    ----------
    mean_weights : array-like of shape (N, L, E)
        Mean router probabilities (``Capture.mean_weights``).
    router_weights : sequence of L arrays of shape (E, H), or an array of shape (L, E, H)
        Router weight matrix of each MoE layer (``Capture.router_weights``).

    Returns
    -------
    ndarray of float64, shape (N, L-1)

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> W = [np.eye(2), np.eye(2)]
    >>> layer_cosines(w, W)
    array([[0.]])
    """
    return _cosines("layer_cosines", mean_weights, router_weights)


def _cosines(
    func: str, mean_weights: npt.ArrayLike, router_weights: Sequence[npt.ArrayLike] | npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """:func:`layer_cosines`, with errors naming the public function ``func``."""
    w, routers = _validate(func, mean_weights, router_weights)
    n, n_layers, n_experts = w.shape
    # Gram matrices one layer at a time: never more than two routers in float64.
    cross = np.empty((n_layers - 1, n_experts, n_experts))
    gram = np.empty((n_layers, n_experts, n_experts))
    previous = None
    for layer, router in enumerate(routers):
        current = np.asarray(router, dtype=np.float64)
        if not np.isfinite(current).all():
            raise InputError(
                f"The 'router_weights' parameter of {func} must be finite. "
                f"Got NaN or inf values in layer {layer} instead."
            )
        gram[layer] = current @ current.T
        if previous is not None:
            cross[layer - 1] = previous @ current.T
        previous = current
    cosines = np.empty((n, n_layers - 1))
    chunk = max(1, _CHUNK_ELEMENTS // (n_layers * n_experts))
    for start in range(0, n, chunk):
        x = w[start : start + chunk].astype(np.float64)
        if not np.isfinite(x).all():
            raise InputError(
                f"The 'mean_weights' parameter of {func} must be finite. "
                "Got NaN or inf values instead."
            )
        dots = np.einsum("nle,lef,nlf->nl", x[:, :-1], cross, x[:, 1:], optimize=True)
        norms = np.sqrt(np.maximum(np.einsum("nle,lef,nlf->nl", x, gram, x, optimize=True), 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            cosines[start : start + chunk] = dots / (norms[:, :-1] * norms[:, 1:])
    return cosines


def consistency_metrics(
    mean_weights: npt.ArrayLike, router_weights: Sequence[npt.ArrayLike] | npt.ArrayLike
) -> ConsistencyMetrics:
    """Consistency, smoothness and mean adjacent-layer cosine of every sample in one pass.

    Parameters
    ----------
    mean_weights : array-like of shape (N, L, E)
        Mean router probabilities (``Capture.mean_weights``).
    router_weights : sequence of L arrays of shape (E, H), or an array of shape (L, E, H)
        Router weight matrix of each MoE layer (``Capture.router_weights``).

    Returns
    -------
    ConsistencyMetrics

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> w = rng.dirichlet(np.ones(4), size=(5, 3))
    >>> m = consistency_metrics(w, rng.normal(size=(3, 4, 8)))
    >>> m.consistency.shape, m.n_undefined <= 5
    ((5,), True)
    """
    return _metrics("consistency_metrics", mean_weights, router_weights)


def _metrics(
    func: str, mean_weights: npt.ArrayLike, router_weights: Sequence[npt.ArrayLike] | npt.ArrayLike
) -> ConsistencyMetrics:
    """:func:`consistency_metrics`, with errors naming the public function ``func``."""
    c = _cosines(func, mean_weights, router_weights)
    n, pairs = c.shape
    if pairs < 2:
        value = np.full(n, np.nan)
    else:
        top = c.max(axis=1, initial=-np.inf)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = 1.0 - np.mean(c / (top[:, None] + EPS), axis=1)
        value[~(top > 0)] = np.nan
    with np.errstate(invalid="ignore"):
        adjacent = c.mean(axis=1) if pairs else np.full(n, np.nan)
    return ConsistencyMetrics(c, value, 1.0 - value, adjacent)


def consistency(
    mean_weights: npt.ArrayLike, router_weights: Sequence[npt.ArrayLike] | npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """The paper's pathway consistency C per sample (SPEC §1); NaN when L < 3 or max_l c_l ≤ 0.

    Parameters
    ----------
    mean_weights : array-like of shape (N, L, E)
        Mean router probabilities (``Capture.mean_weights``).
    router_weights : sequence of L arrays of shape (E, H), or an array of shape (L, E, H)
        Router weight matrix of each MoE layer (``Capture.router_weights``).

    Returns
    -------
    ndarray of float64, shape (N,)

    Examples
    --------
    >>> import numpy as np
    >>> w = np.full((1, 3, 2), 0.5)
    >>> consistency(w, np.ones((3, 2, 4))).round(6)
    array([0.])
    """
    return _metrics("consistency", mean_weights, router_weights).consistency


def smoothness(
    mean_weights: npt.ArrayLike, router_weights: Sequence[npt.ArrayLike] | npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """1 − :func:`consistency` per sample; NaN where consistency is.

    Parameters
    ----------
    mean_weights : array-like of shape (N, L, E)
        Mean router probabilities (``Capture.mean_weights``).
    router_weights : sequence of L arrays of shape (E, H), or an array of shape (L, E, H)
        Router weight matrix of each MoE layer (``Capture.router_weights``).

    Returns
    -------
    ndarray of float64, shape (N,)

    Examples
    --------
    >>> import numpy as np
    >>> smoothness(np.full((1, 3, 2), 0.5), np.ones((3, 2, 4))).round(6)
    array([1.])
    """
    return _metrics("smoothness", mean_weights, router_weights).smoothness


def adjacent_cosine(
    mean_weights: npt.ArrayLike, router_weights: Sequence[npt.ArrayLike] | npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Mean cosine between the routing embeddings of adjacent layers, per sample (NaN when L < 2).

    Parameters
    ----------
    mean_weights : array-like of shape (N, L, E)
        Mean router probabilities (``Capture.mean_weights``).
    router_weights : sequence of L arrays of shape (E, H), or an array of shape (L, E, H)
        Router weight matrix of each MoE layer (``Capture.router_weights``).

    Returns
    -------
    ndarray of float64, shape (N,)

    Examples
    --------
    >>> import numpy as np
    >>> adjacent_cosine(np.full((1, 3, 2), 0.5), np.ones((3, 2, 4)))
    array([1.])
    """
    return _metrics("adjacent_cosine", mean_weights, router_weights).adjacent_cosine


def _validate(
    func: str, mean_weights: npt.ArrayLike, router_weights: Sequence[npt.ArrayLike] | npt.ArrayLike
) -> tuple[np.ndarray, list[npt.ArrayLike]]:
    """Mean weights as a numeric (N, L, E) array and the L routers, shapes checked, or InputError."""
    w = np.asarray(mean_weights)
    if w.dtype.kind not in "buif":
        raise invalid_parameter(
            func, "mean_weights", "a numeric array of shape (N, L, E)", f"dtype {w.dtype}"
        )
    if w.ndim != 3 or 0 in w.shape[1:]:
        raise invalid_parameter(
            func, "mean_weights", "an array of shape (N, L, E), L, E >= 1", w.shape
        )
    _, n_layers, n_experts = w.shape
    expected = f"{n_layers} numeric arrays of one shape ({n_experts}, H), one per MoE layer"
    try:
        routers = list(router_weights)
    except TypeError as exc:
        raise invalid_parameter(
            func, "router_weights", expected, type(router_weights).__name__
        ) from exc
    shapes = [np.shape(r) for r in routers]
    if (
        len(shapes) != n_layers
        or any(s != shapes[0] or len(s) != 2 for s in shapes)
        or any(np.asarray(r).dtype.kind not in "buif" for r in routers)
    ):
        raise invalid_parameter(func, "router_weights", expected, shapes)
    if shapes[0][0] != n_experts:
        raise InputError(
            f"The 'router_weights' parameter of {func} must have {n_experts} rows (experts) per "
            f"layer to match mean_weights {w.shape}. Got shape {shapes[0]} instead."
        )
    return w, routers
