"""Routing churn: how much a sample's routing moves between checkpoints while its loss does not.

A signal beyond the paper, from training data only. Once a sample is memorized its loss is flat;
if the model is still reorganizing how it computes that sample (generalizing), its routing can keep
moving. The churn of a sample between two checkpoints is the Jensen–Shannon divergence (in bits,
in [0, 1]) of its mean routing weights per MoE layer, averaged over the layers; a group's churn is
the mean over its members whose loss moved by at most δ between the two checkpoints. Reported
beside it: the mean divergence between two members of a group at one checkpoint (``within``) and
between a member and a sample of the other domains (``cross``).

The divergence is computed on whole arrays as H((p + q) / 2) − (H(p) + H(q)) / 2, the entropies by
:func:`scipy.special.entr` (per-sample entropies once, then one entropy per pair); it equals
``scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2`` (the tests check it), which takes a
square root that rounding can make NaN for near-identical rows, and is ~10× slower.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import entr

from pathwatch._validate import check_array, check_float, check_int
from pathwatch.errors import invalid_parameter

#: samples or pairs per block of :func:`routing_churn` and :func:`mean_divergence`: the float64
#: temporaries stay ~ block × L × E whatever the number of samples
_BLOCK = 1024
_LN2 = math.log(2)
#: most pairs a group's divergence is averaged over in analyze: the standard error of a mean of
#: 20,000 sampled pairs is under 1% of their spread, and a pair costs a pass over L × E weights
DIVERGENCE_PAIRS = 20_000


def _entropy(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Shannon entropy in nats along the last axis."""
    return entr(p).sum(axis=-1)


def _from_entropies(
    p: NDArray[np.float64], q: NDArray[np.float64], hp: NDArray[np.float64], hq: NDArray[np.float64]
) -> NDArray[np.float64]:
    """JS divergence in bits of normalized rows p, q whose entropies are hp, hq."""
    return np.clip((_entropy((p + q) / 2) - (hp + hq) / 2) / _LN2, 0.0, 1.0)


def js_divergence(p: ArrayLike, q: ArrayLike) -> NDArray[np.float64]:
    """Jensen–Shannon divergence in bits along the last axis: ``(P..., E), (P..., E) -> (P...)``.

    Rows are probability vectors (normalized here); the result lies in [0, 1].

    Examples
    --------
    >>> float(js_divergence([1.0, 0.0], [0.0, 1.0])), float(js_divergence([0.5, 0.5], [0.5, 0.5]))
    (1.0, 0.0)
    """
    a = check_array("js_divergence", "p", p)
    b = check_array("js_divergence", "q", q)
    if a.shape != b.shape or a.ndim == 0:
        raise invalid_parameter("js_divergence", "q", f"an array of p's shape {a.shape}", b.shape)
    a = a / a.sum(axis=-1, keepdims=True)
    b = b / b.sum(axis=-1, keepdims=True)
    return _from_entropies(a, b, _entropy(a), _entropy(b))


def _weights(func: str, name: str, value: ArrayLike) -> NDArray[np.floating]:
    """A numeric (N, L, E) array, not converted: blocks are converted to float64 when used."""
    arr = check_array(func, name, value, dtype=None)
    if arr.dtype.kind not in "buif":
        raise invalid_parameter(func, name, "an array of numbers", value)
    if arr.ndim != 3:
        raise invalid_parameter(func, name, "an array of shape (N, L, E)", arr.shape)
    return arr


def _normalized(
    weights: NDArray[np.floating], rows: slice | NDArray[np.int64]
) -> NDArray[np.float64]:
    """Rows of ``weights`` in float64, normalized along the last axis."""
    x = weights[rows].astype(np.float64)
    return x / x.sum(axis=-1, keepdims=True)


def routing_churn(before: ArrayLike, after: ArrayLike) -> NDArray[np.float64]:
    """Per sample, the layer-mean JS divergence (bits) of its routing between two checkpoints.

    Parameters
    ----------
    before, after : arrays of shape (N, L, E)
        Mean routing weights of the same samples at two checkpoints (``Capture.mean_weights``).

    Returns
    -------
    array of shape (N,)
        In [0, 1]; 0 when a sample's routing did not move.

    Examples
    --------
    >>> w = np.array([[[0.5, 0.5], [1.0, 0.0]]])
    >>> routing_churn(w, w).tolist(), routing_churn(w, w[..., ::-1]).tolist()  # experts swapped
    ([0.0], [0.5])
    """
    a = _weights("routing_churn", "before", before)
    b = _weights("routing_churn", "after", after)
    if a.shape != b.shape:
        raise invalid_parameter(
            "routing_churn", "after", f"an array of before's shape {a.shape}", b.shape
        )
    out = np.empty(a.shape[0])
    for k in range(0, a.shape[0], _BLOCK):
        out[k : k + _BLOCK] = js_divergence(a[k : k + _BLOCK], b[k : k + _BLOCK]).mean(axis=1)
    return out


def group_churn(
    churn: ArrayLike, loss_moved: ArrayLike, delta: float | ArrayLike
) -> tuple[float, int]:
    """Mean churn of the members whose loss moved by at most δ, and how many they are.

    Parameters
    ----------
    churn : array of shape (n,)
        :func:`routing_churn` of the group's members.
    loss_moved : array of shape (n,)
        ``|loss(t) - loss(t - 1)|`` of each member.
    delta : float or array of shape (n,)
        δ of each member (its domain's, :func:`pathwatch.dynamics.memorization_table`).

    Returns
    -------
    (float, int)
        The mean (NaN when no member qualifies) and the number of members averaged.

    Examples
    --------
    >>> group_churn([0.1, 0.3, 0.9], [0.01, 0.02, 0.5], 0.05)
    (0.2, 2)
    """
    values = check_array("group_churn", "churn", churn)
    moved = check_array("group_churn", "loss_moved", loss_moved)
    if values.ndim != 1 or moved.shape != values.shape:
        raise invalid_parameter(
            "group_churn", "loss_moved", f"an array of churn's shape {values.shape}", moved.shape
        )
    if np.ndim(delta) == 0:
        check_float("group_churn", "delta", delta, low=0)
    stable = (moved <= np.asarray(delta, dtype=np.float64)) & np.isfinite(values)
    n = int(stable.sum())
    return (float(values[stable].mean()) if n else math.nan), n


def mean_divergence(
    a: ArrayLike,
    b: ArrayLike | None = None,
    *,
    max_pairs: int | None = None,
    seed: int = 0,
) -> float:
    """Mean layer-mean JS divergence (bits) between the routing of two samples.

    Over all pairs of distinct members of ``a`` (``b`` None: within a group), or all pairs of a
    member of ``a`` and one of ``b`` (across groups); with more pairs than ``max_pairs``, over
    ``max_pairs`` pairs drawn uniformly with ``seed``.

    Parameters
    ----------
    a : array of shape (N, L, E)
    b : array of shape (M, L, E), optional
    max_pairs : int, optional
        None: every pair.
    seed : int, default 0

    Returns
    -------
    float
        NaN when there is no pair.

    Examples
    --------
    >>> w = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]])
    >>> round(mean_divergence(w), 3), mean_divergence(w[:1], w[2:])
    (0.667, 0.0)
    """
    func = "mean_divergence"
    left = _weights(func, "a", a)
    right = None if b is None else _weights(func, "b", b)
    if right is not None and right.shape[1:] != left.shape[1:]:
        raise invalid_parameter(func, "b", f"an array of shape (M, {left.shape[1:]})", right.shape)
    check_int(func, "max_pairs", max_pairs, low=1, allow_none=True)
    check_int(func, "seed", seed, low=0)
    n = left.shape[0]
    m = n if right is None else right.shape[0]
    total = n * (n - 1) // 2 if right is None else n * m
    if total == 0:
        return math.nan
    rng = np.random.default_rng(seed)
    if max_pairs is not None and total > max_pairs:
        i = rng.integers(0, n, max_pairs)
        if right is None:  # a distinct partner, uniform among the others
            j = (i + rng.integers(1, n, max_pairs)) % n
        else:
            j = rng.integers(0, m, max_pairs)
    elif right is None:
        i, j = np.triu_indices(n, 1)
    else:
        i, j = (idx.ravel() for idx in np.meshgrid(np.arange(n), np.arange(m), indexing="ij"))
    other = left if right is None else right
    h_left, h_other = (  # (N, L), (M, L): once per sample, a block of samples at a time
        np.concatenate(
            [_entropy(_normalized(x, slice(k, k + _BLOCK))) for k in range(0, len(x), _BLOCK)]
        )
        for x in (left, other)
    )
    sums = []
    for k in range(0, i.size, _BLOCK):
        a, b = i[k : k + _BLOCK], j[k : k + _BLOCK]
        sums.append(
            _from_entropies(_normalized(left, a), _normalized(other, b), h_left[a], h_other[b])
            .mean(axis=1)
            .sum()
        )
    return float(np.sum(sums) / i.size)


def churn_columns(
    members: NDArray[np.int64],
    churn: NDArray[np.float64],
    loss_moved: NDArray[np.float64],
    delta: NDArray[np.float64],
    weights: NDArray[np.float64] | None = None,
    others: NDArray[np.int64] | None = None,
    *,
    max_pairs: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """A group's churn columns at one checkpoint (``group_metrics``): churn, churn_members and,
    given ``weights`` (N, L, E), divergence_within and divergence_cross (against ``others``), on
    at most ``max_pairs`` and :data:`DIVERGENCE_PAIRS` sampled pairs."""
    pairs = DIVERGENCE_PAIRS if max_pairs is None else min(max_pairs, DIVERGENCE_PAIRS)
    value, n = group_churn(churn[members], loss_moved[members], delta[members])
    out = {"churn": value, "churn_members": n}
    if weights is not None:
        own = weights[members]
        out["divergence_within"] = mean_divergence(own, max_pairs=pairs, seed=seed)
        out["divergence_cross"] = (
            mean_divergence(own, weights[others], max_pairs=pairs, seed=seed)
            if others is not None and others.size and members.size
            else math.nan
        )
    return out
