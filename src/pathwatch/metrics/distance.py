"""Pathway distance: Levenshtein distance between pathways, one pair or averaged over a group.

SPEC §1: the paper's distance is on the characters of the pathway string (``unit="char"``, default);
``unit="expert"`` counts one symbol per expert id and one per layer boundary. Group averages are
exact over all unordered pairs or estimated on uniformly sampled pairs with a confidence interval.

The exact mean compares each distinct pathway once: identical pathways are merged and counted with
their multiplicity (a pair of two distinct strings i < j weighs count_i * count_j, and the
count_i * (count_i - 1) / 2 pairs of copies of one string add distance 0). rapidfuzz ``cdist`` runs
in row blocks of the upper triangle, so memory stays bounded for tens of thousands of pathways.
Sampled pairs of a group size are drawn once and reused (e.g. for every layer of a group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral

import numpy as np
import numpy.typing as npt
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein
from scipy import stats

from pathwatch._validate import check_int, is_int
from pathwatch.config import UNITS
from pathwatch.errors import invalid_parameter, unknown_name
from pathwatch.metrics.pathways import Pathways, PathwaysLike

# Memory for one block of the distance matrix; a block holds rows [start, stop) x columns [start, N).
_BLOCK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class DistanceStats:
    """Mean pairwise distance of a group with its 95% confidence interval.

    Attributes
    ----------
    mean : float
        Mean Levenshtein distance over unordered pairs of distinct samples (NaN for N < 2).
    ci_low, ci_high : float
        95% confidence interval of the exact mean; equal to ``mean`` when ``exact``.
    n_pairs : int
        Number of pairs the mean is computed from.
    n_samples : int
        Number of pathways N in the group.
    exact : bool
        True when every pair was used.
    """

    mean: float
    ci_low: float
    ci_high: float
    n_pairs: int
    n_samples: int
    exact: bool


def pathway_distance(
    a: Sequence[Sequence[int]] | str, b: Sequence[Sequence[int]] | str, unit: str = "char"
) -> int:
    """Levenshtein distance between two pathways.

    Parameters
    ----------
    a, b : sequence of L sequences of int, or str
        Two pathways (e.g. ``pathways(w)[i]``) or their pathway strings.
    unit : {"char", "expert"}, default "char"
        ``"char"``: edit distance on the characters of the pathway string (the paper's).
        ``"expert"``: one symbol per expert id and one per layer boundary.

    Returns
    -------
    int

    Examples
    --------
    >>> pathway_distance([[12, 3], [5]], [[3], [5]])
    3
    >>> pathway_distance("12,3-5", "3-5", unit="expert")
    1
    """
    _check_unit("pathway_distance", unit)
    x, y = (Pathways.from_lists([p]).sequences(unit)[0] for p in (a, b))
    return int(Levenshtein.distance(x, y))


def pairwise_distance_stats(
    pathways: PathwaysLike,
    unit: str = "char",
    *,
    layer: int | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
    workers: int = -1,
) -> DistanceStats:
    """Mean pairwise pathway distance of a group, exact or on sampled pairs, with a 95% CI.

    Exact over all N(N-1)/2 unordered pairs when ``max_pairs`` is None or at least that many.
    Otherwise ``max_pairs`` distinct pairs are drawn uniformly without replacement (deterministic
    for ``seed``) and the interval is Student's t with the finite-population correction.

    Parameters
    ----------
    pathways : Pathways or sequence of pathways
        N pathways (or pathway strings) over the same L layers.
    unit : {"char", "expert"}, default "char"
        See :func:`pathway_distance`.
    layer : int, optional
        Only this MoE layer (position 0..L-1 in the pathway); None for the whole pathway.
    max_pairs : int, optional
        Number of sampled pairs; None for the exact mean.
    seed : int, default 0
        Seed of the pair sampler.
    workers : int, default -1
        Threads for rapidfuzz; -1 uses all cores.

    Returns
    -------
    DistanceStats
        ``mean`` is NaN (with ``n_pairs == 0``) when there are fewer than 2 pathways; the interval
        is NaN when a single pair is sampled.

    Examples
    --------
    >>> s = pairwise_distance_stats([[[0, 1]], [[0, 2]], [[1, 0]]], unit="expert")
    >>> s.mean, s.n_pairs, s.exact
    (1.6666666666666667, 3, True)
    """
    func = "pairwise_distance_stats"
    p = Pathways.from_lists(pathways)
    _check_unit(func, unit)
    _check_options(func, p, layer=layer, max_pairs=max_pairs, seed=seed, workers=workers)
    n = len(p)
    total = n * (n - 1) // 2
    if total == 0:
        return DistanceStats(np.nan, np.nan, np.nan, 0, n, True)
    seqs = p.sequences(unit, layer)
    if max_pairs is None or max_pairs >= total:
        mean = _exact_sum(seqs, workers=workers) / total
        return DistanceStats(mean, mean, mean, total, n, True)
    first, second = _sample_pairs(n, max_pairs, seed)
    d = process.cpdist(
        seqs[first].tolist(),
        seqs[second].tolist(),
        scorer=Levenshtein.distance,
        dtype=_dtype(seqs),
        workers=workers,
    ).astype(np.float64)
    mean = float(d.mean())
    if max_pairs < 2:
        return DistanceStats(mean, np.nan, np.nan, max_pairs, n, False)
    fpc = np.sqrt((total - max_pairs) / (total - 1))
    half = float(stats.t.ppf(0.975, max_pairs - 1) * d.std(ddof=1) / np.sqrt(max_pairs) * fpc)
    return DistanceStats(mean, mean - half, mean + half, max_pairs, n, False)


def mean_pairwise_distance(
    pathways: PathwaysLike,
    unit: str = "char",
    *,
    max_pairs: int | None = None,
    seed: int = 0,
    workers: int = -1,
) -> float:
    """Mean Levenshtein distance over unordered pairs of distinct pathways (the paper's metric).

    Exact when ``max_pairs`` is None; see :func:`pairwise_distance_stats` for the sampled estimate
    and its confidence interval. NaN when there are fewer than 2 pathways.

    Parameters
    ----------
    pathways : Pathways or sequence of pathways
        N pathways (or pathway strings) over the same L layers.
    unit : {"char", "expert"}, default "char"
        See :func:`pathway_distance`.
    max_pairs : int, optional
        Number of uniformly sampled pairs; None for the exact mean.
    seed : int, default 0
        Seed of the pair sampler.
    workers : int, default -1
        Threads for rapidfuzz; -1 uses all cores.

    Returns
    -------
    float

    Examples
    --------
    >>> mean_pairwise_distance(["3,1-5", "3,1-5", "3-5"])
    1.3333333333333333
    """
    return pairwise_distance_stats(
        pathways, unit, max_pairs=max_pairs, seed=seed, workers=workers
    ).mean


def layer_distances(
    pathways: PathwaysLike,
    unit: str = "expert",
    *,
    max_pairs: int | None = None,
    seed: int = 0,
    workers: int = -1,
) -> npt.NDArray[np.float64]:
    """Mean pairwise distance of each layer's expert list, layer by layer.

    Parameters
    ----------
    pathways : Pathways or sequence of pathways
        N pathways (or pathway strings) over the same L layers.
    unit : {"expert", "char"}, default "expert"
        ``"expert"``: one symbol per expert id; ``"char"``: the layer's part of the pathway string.
    max_pairs : int, optional
        Number of sampled pairs per layer (the same pairs for every layer); None for exact.
    seed : int, default 0
        Seed of the pair sampler.
    workers : int, default -1
        Threads for rapidfuzz; -1 uses all cores.

    Returns
    -------
    ndarray of float64, shape (L,)
        NaN everywhere when there are fewer than 2 pathways.

    Examples
    --------
    >>> layer_distances([[[0, 1], [2]], [[0, 2], [2]]])
    array([1., 0.])
    """
    p = Pathways.from_lists(pathways)
    return np.array(
        [
            pairwise_distance_stats(
                p, unit, layer=layer, max_pairs=max_pairs, seed=seed, workers=workers
            ).mean
            for layer in range(p.n_layers)
        ],
        dtype=np.float64,
    )


def _check_unit(func: str, unit: str) -> None:
    """Raise the unknown-name error for a unit outside :data:`UNITS`."""
    if unit not in UNITS:
        raise unknown_name(f"unit of {func}", str(unit), UNITS)


def _check_options(
    func: str, p: Pathways, *, layer: int | None, max_pairs: int | None, seed: int, workers: int
) -> None:
    """Validate the keyword options of the pairwise functions."""
    if layer is not None and (
        not isinstance(layer, Integral) or isinstance(layer, bool) or not 0 <= layer < p.n_layers
    ):
        raise invalid_parameter(func, "layer", f"None or an int in [0, {p.n_layers})", layer)
    check_int(func, "max_pairs", max_pairs, low=1, allow_none=True)
    check_int(func, "seed", seed, low=0)
    if not (is_int(workers) and (workers >= 1 or workers == -1)):
        raise invalid_parameter(func, "workers", "an int >= 1, or -1 for all cores", workers)


def _dtype(seqs: npt.NDArray[np.object_]) -> type[np.integer]:
    """The smallest integer type that holds every distance between ``seqs``."""
    return np.int16 if max(map(len, seqs), default=0) <= np.iinfo(np.int16).max else np.int32


def _exact_sum(seqs: npt.NDArray[np.object_], *, workers: int) -> int:
    """Sum of the distances over all unordered pairs, each distinct string once, in row blocks.

    With the distinct strings u and their counts c, the sum is Σ_{i<j} c_i c_j d(u_i, u_j).
    Each block of rows computes its square diagonal part with the symmetric ``cdist`` (``queries
    is choices``: every pair once, mirrored; hence the halving) and its rows against all later
    columns, each weighted by the counts in int64; no pair is computed twice.
    """
    unique, counts = np.unique(seqs, return_counts=True)
    n = unique.size
    dtype = _dtype(unique)
    # the block in int64 (its weighted sum converts it) is the larger of the two copies
    rows = max(1, _BLOCK_BYTES // (n * np.dtype(np.int64).itemsize))
    total = 0
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        block, weight = unique[start:stop].tolist(), counts[start:stop]
        diagonal = process.cdist(
            block, block, scorer=Levenshtein.distance, dtype=dtype, workers=workers
        )
        total += int(weight @ diagonal.astype(np.int64) @ weight) // 2
        if stop < n:
            rest = process.cdist(
                block,
                unique[stop:].tolist(),
                scorer=Levenshtein.distance,
                dtype=dtype,
                workers=workers,
            )
            total += int(weight @ (rest.astype(np.int64) @ counts[stop:]))
    return total


@lru_cache(maxsize=8)
def _sample_pairs(
    n: int, size: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``size`` distinct unordered pairs (i < j) of range(n), uniform, deterministic for ``seed``.

    Cached (read-only arrays): every layer of a group and every group of the same size at each
    checkpoint uses the same pairs, as drawing them again with the same seed would give.
    """
    k = np.random.default_rng(seed).choice(n * (n - 1) // 2, size=size, replace=False)
    # k enumerates pairs column by column: k = j (j - 1) / 2 + i with 0 <= i < j.
    j = ((1 + np.sqrt(1 + 8 * k.astype(np.float64))) // 2).astype(np.int64)
    j -= j * (j - 1) // 2 > k
    j += (j + 1) * j // 2 <= k
    i = k - j * (j - 1) // 2
    i.flags.writeable = j.flags.writeable = False
    return i, j
