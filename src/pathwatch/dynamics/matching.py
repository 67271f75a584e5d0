"""Pair memorization groups with generalization groups and read off local grokking delays (SPEC §1).

The similarity of a train group A and a test group B is the mean pairwise cosine of their members,
computed exactly as the dot product of the mean unit vectors of A and B. A one-to-one assignment
maximizing the total similarity (Hungarian algorithm) pairs the groups; a pair's delay is t# − t*.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from pathwatch._validate import check_array
from pathwatch.dynamics.onsets import NEVER
from pathwatch.errors import InputError, invalid_parameter

MATCH_SCHEMA = {
    "train_group": pl.String,
    "test_group": pl.String,
    "mem_onset": pl.Int64,
    "gen_onset": pl.Int64,
    "delay": pl.Int64,
    "similarity": pl.Float64,
    "n_train": pl.Int64,
    "n_test": pl.Int64,
}


def _unit_rows(embeddings: ArrayLike, name: str, n: int) -> NDArray[np.float64]:
    """Validate (n, D) embeddings and scale every row to unit length."""
    arr = check_array("match_groups", name, embeddings)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise invalid_parameter("match_groups", name, f"an array of shape ({n}, D)", arr.shape)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))
    if bad.size:
        raise InputError(
            f"The {name!r} parameter of match_groups must hold finite non-zero vectors; row "
            f"{bad[0]} is {'zero' if norms[bad[0], 0] == 0 else 'not finite'} ({bad.size} such "
            "row(s)). Drop those samples or embed them again."
        )
    return arr / norms


def _onsets(onsets: ArrayLike, name: str) -> NDArray[np.int64]:
    """Validate a 1-D integer onset array."""
    arr = np.asarray(onsets)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise invalid_parameter("match_groups", name, "a 1-D integer array of onset steps", arr)
    return arr.astype(np.int64)


def _group_means(
    units: NDArray[np.float64], onsets: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Groups by onset (never-reached left out): their onsets, sizes and mean unit vectors."""
    keep = onsets != NEVER
    groups, inverse, counts = np.unique(onsets[keep], return_inverse=True, return_counts=True)
    members = sparse.csr_matrix(
        (1 / counts[inverse], (inverse, np.arange(inverse.size))), shape=(groups.size, inverse.size)
    )
    return groups, counts.astype(np.int64), np.asarray(members @ units[keep])


def _groups(
    train_embeddings: ArrayLike,
    train_onsets: ArrayLike,
    test_embeddings: ArrayLike,
    test_onsets: ArrayLike,
) -> tuple[tuple[NDArray, NDArray, NDArray], tuple[NDArray, NDArray, NDArray]]:
    """Validate both sides and return (onsets, sizes, mean unit vectors) of their groups."""
    train_on = _onsets(train_onsets, "train_onsets")
    test_on = _onsets(test_onsets, "test_onsets")
    train_units = _unit_rows(train_embeddings, "train_embeddings", train_on.size)
    test_units = _unit_rows(test_embeddings, "test_embeddings", test_on.size)
    if train_units.shape[1] != test_units.shape[1]:
        raise InputError(
            f"match_groups needs train and test embeddings of the same width; got "
            f"{train_units.shape[1]} and {test_units.shape[1]}. Embed both with the same model."
        )
    return _group_means(train_units, train_on), _group_means(test_units, test_on)


def group_similarity(
    train_embeddings: ArrayLike,
    train_onsets: ArrayLike,
    test_embeddings: ArrayLike,
    test_onsets: ArrayLike,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Mean pairwise cosine between every train group and every test group.

    Parameters
    ----------
    train_embeddings : array of shape (N, D)
    train_onsets : int array of shape (N,)
        Memorization onsets; -1 (never memorized) belongs to no group.
    test_embeddings : array of shape (M, D)
    test_onsets : int array of shape (M,)
        Generalization onsets; -1 (never generalized) belongs to no group.

    Returns
    -------
    train_groups : int array of shape (G,)
        Onset step t* of each train group, ascending.
    test_groups : int array of shape (H,)
        Onset step t# of each test group, ascending.
    similarity : array of shape (G, H)
        Mean cosine over all (train member, test member) pairs.

    Examples
    --------
    >>> group_similarity([[1, 0], [0, 1]], [5, 5], [[1, 0]], [9])[2]
    array([[0.5]])
    """
    (train_groups, _, train_means), (test_groups, _, test_means) = _groups(
        train_embeddings, train_onsets, test_embeddings, test_onsets
    )
    return train_groups, test_groups, train_means @ test_means.T


def match_groups(
    train_embeddings: ArrayLike,
    train_onsets: ArrayLike,
    test_embeddings: ArrayLike,
    test_onsets: ArrayLike,
) -> pl.DataFrame:
    """Pair train groups ``train@t*`` with test groups ``test@t#`` one to one.

    The assignment maximizes the total mean pairwise cosine (Hungarian algorithm); with unequal
    numbers of groups, the larger side keeps unmatched groups.

    Parameters
    ----------
    train_embeddings : array of shape (N, D)
        Embedding of each training sample (any model; see :func:`pathwatch.dynamics.embed_texts`).
    train_onsets : int array of shape (N,)
        Memorization onsets (-1: never memorized, left out).
    test_embeddings : array of shape (M, D)
        Embedding of each test item, same model as the training samples.
    test_onsets : int array of shape (M,)
        Generalization onsets (-1: never generalized, left out).

    Returns
    -------
    polars.DataFrame
        One row per matched pair, by ascending ``mem_onset``: ``train_group``, ``test_group``,
        ``mem_onset``, ``gen_onset``, ``delay`` (t# − t*, may be negative), ``similarity``,
        ``n_train``, ``n_test`` (group sizes). Empty when either side has no group.

    Examples
    --------
    >>> table = match_groups([[1, 0], [0, 1]], [10, 20], [[0, 1], [1, 0.1]], [50, 70])
    >>> table.select("train_group", "test_group", "delay").rows()
    [('train@10', 'test@70', 60), ('train@20', 'test@50', 30)]
    """
    (train_groups, train_sizes, train_means), (test_groups, test_sizes, test_means) = _groups(
        train_embeddings, train_onsets, test_embeddings, test_onsets
    )
    similarity = train_means @ test_means.T
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    mem, gen = train_groups[rows], test_groups[cols]
    return pl.DataFrame(
        {
            "train_group": [f"train@{t}" for t in mem],
            "test_group": [f"test@{t}" for t in gen],
            "mem_onset": mem,
            "gen_onset": gen,
            "delay": gen - mem,
            "similarity": similarity[rows, cols],
            "n_train": train_sizes[rows],
            "n_test": test_sizes[cols],
        },
        schema=MATCH_SCHEMA,
    )
