"""Expert pathways: per sample and MoE layer, the experts that carry most of the routing weight.

SPEC §1: per layer, sort the experts by their mean routing weight (descending) and keep them until
the cumulative weight exceeds the threshold. The pathway string writes each layer's kept ids
comma-separated in rank order and joins the layers with ``-``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from numbers import Real
from typing import overload

import numpy as np
import numpy.typing as npt

from pathwatch.errors import invalid_parameter

#: One sample's pathway: per layer, the kept expert ids in rank order.
Pathway = tuple[tuple[int, ...], ...]

#: Layer boundary symbol of the ``unit="expert"`` encoding (expert ids are >= 0).
LAYER_BOUNDARY = -1


class Pathways:
    """The pathways of N samples over L MoE layers, stored as a padded id array.

    Build it with :func:`pathways` (from mean routing weights) or :meth:`Pathways.from_lists`.
    ``p[i]`` is sample i's pathway (a tuple of L tuples of expert ids in rank order); ``p[idx]``
    with a slice, an integer array or a boolean mask is the subset as a new :class:`Pathways`.

    Parameters
    ----------
    ids : ndarray of int, shape (N, L, K)
        Kept expert ids in rank order, padded with -1 after ``counts[n, l]`` entries.
    counts : ndarray of int, shape (N, L)
        Number of kept experts per sample and layer (at least 1).
    """

    def __init__(self, ids: npt.ArrayLike, counts: npt.ArrayLike) -> None:
        ids = np.asarray(ids)
        counts = np.asarray(counts)
        if ids.ndim != 3 or not np.issubdtype(ids.dtype, np.integer):
            raise invalid_parameter(
                "Pathways", "ids", "an integer array of shape (N, L, K)", ids.shape
            )
        if counts.shape != ids.shape[:2] or not np.issubdtype(counts.dtype, np.integer):
            raise invalid_parameter(
                "Pathways", "counts", f"an integer array of shape {ids.shape[:2]}", counts.shape
            )
        kept = np.arange(ids.shape[2]) < counts[..., None]
        if counts.min(initial=1) < 1:
            raise invalid_parameter(
                "Pathways", "counts", "at least 1 for every sample and layer", int(counts.min())
            )
        if ids[kept].min(initial=0) < 0:
            raise invalid_parameter(
                "Pathways", "ids", "non-negative expert ids", int(ids[kept].min())
            )
        self.ids = np.where(kept, ids, -1)
        self.counts = counts.astype(np.int64)

    @classmethod
    def from_lists(cls, pathways: PathwaysLike) -> Pathways:
        """Build from a sequence of pathways: each L sequences of expert ids, or a pathway string.

        Examples
        --------
        >>> Pathways.from_lists([[[3, 1], [5]], "0-2,4"])[1]
        ((0,), (2, 4))
        """
        if isinstance(pathways, Pathways):
            return pathways
        rows = [
            _parse(p) if isinstance(p, str) else [tuple(map(int, layer)) for layer in p]
            for p in pathways
        ]
        n_layers = {len(r) for r in rows}
        if len(n_layers) > 1:
            raise invalid_parameter(
                "Pathways.from_lists",
                "pathways",
                "pathways with the same number of layers",
                sorted(n_layers),
            )
        n, n_l = len(rows), n_layers.pop() if rows else 0
        counts = np.array([[len(layer) for layer in r] for r in rows], dtype=np.int64).reshape(
            n, n_l
        )
        ids = np.full((n, n_l, int(counts.max(initial=0))), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            for j, layer in enumerate(r):
                ids[i, j, : len(layer)] = layer
        return cls(ids, counts)

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def n_layers(self) -> int:
        """Number of MoE layers L."""
        return self.ids.shape[1]

    @overload
    def __getitem__(self, index: int) -> Pathway: ...
    @overload
    def __getitem__(self, index: slice | npt.ArrayLike) -> Pathways: ...
    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self._lists[index]
        return Pathways(self.ids[index], self.counts[index])

    def __iter__(self) -> Iterator[Pathway]:
        return iter(self._lists)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pathways):
            return NotImplemented
        return self._lists == other._lists

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Pathways(n_samples={len(self)}, n_layers={self.n_layers}, mean_kept={self.counts.mean() if self.counts.size else 0:.2f})"

    def strings(self) -> list[str]:
        """The pathway string of every sample (the paper's ``unit="char"`` sequences)."""
        return self._strings

    def layer_lists(self, layer: int) -> list[list[int]]:
        """Per sample, the kept expert ids of one layer in rank order."""
        ids, counts = self.ids[:, layer].tolist(), self.counts[:, layer].tolist()
        return [row[:c] for row, c in zip(ids, counts, strict=True)]

    def expert_sequences(self) -> list[list[int]]:
        """Per sample, the kept ids of all layers with :data:`LAYER_BOUNDARY` between layers."""
        return self._expert_sequences

    @cached_property
    def _lists(self) -> list[Pathway]:
        ids, counts = self.ids.tolist(), self.counts.tolist()
        return [
            tuple(tuple(layer[:c]) for layer, c in zip(rows, cs, strict=True))
            for rows, cs in zip(ids, counts, strict=True)
        ]

    @cached_property
    def _strings(self) -> list[str]:
        return [pathway_string(p) for p in self._lists]

    @cached_property
    def _expert_sequences(self) -> list[list[int]]:
        sequences = []
        for p in self._lists:
            seq: list[int] = []
            for j, layer in enumerate(p):
                if j:
                    seq.append(LAYER_BOUNDARY)
                seq.extend(layer)
            sequences.append(seq)
        return sequences


def pathways(mean_weights: npt.ArrayLike, threshold: float = 0.7) -> Pathways:
    """Per sample and layer, the experts kept until the cumulative weight exceeds ``threshold``.

    Experts are ranked by mean routing weight, descending; equal weights keep the lower expert id
    first (a stable order). A layer keeps the shortest prefix of that ranking whose cumulative
    weight is strictly greater than ``threshold`` (so the top expert alone may be the whole layer),
    or all E experts when no prefix exceeds it (e.g. ``threshold=1``).

    Parameters
    ----------
    mean_weights : array-like of shape (N, L, E)
        Mean router probability per sample, MoE layer and expert (``Capture.mean_weights``).
        For one sample of shape (L, E), pass ``mean_weights[None]``.
    threshold : float, default 0.7
        Cumulative-weight threshold in (0, 1]; the paper uses 0.7 and checks 0.5–0.8.

    Returns
    -------
    Pathways
        ``result[i]`` is sample i's pathway: a tuple of L tuples of expert ids in rank order.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[[0.1, 0.6, 0.3], [0.8, 0.15, 0.05]]])
    >>> pathways(w)[0]
    ((1, 2), (0,))
    >>> pathway_string(pathways(w)[0])
    '1,2-0'
    """
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 < threshold <= 1:
        raise invalid_parameter("pathways", "threshold", "a float in (0, 1]", threshold)
    try:
        w = np.asarray(mean_weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise invalid_parameter(
            "pathways",
            "mean_weights",
            "a numeric array of shape (N, L, E)",
            type(mean_weights).__name__,
        ) from exc
    if w.ndim != 3 or w.shape[2] == 0:
        hint = "; for one sample pass mean_weights[None]" if w.ndim == 2 else ""
        raise invalid_parameter(
            "pathways", "mean_weights", f"an array of shape (N, L, E){hint}", w.shape
        )
    if not np.isfinite(w).all() or (w < 0).any():
        raise invalid_parameter(
            "pathways",
            "mean_weights",
            "finite and non-negative",
            "an array with NaN, inf or negative values",
        )
    order = np.argsort(-w, axis=-1, kind="stable")
    cumulative = np.cumsum(np.take_along_axis(w, order, axis=-1), axis=-1)
    counts = np.minimum((cumulative <= threshold).sum(axis=-1) + 1, w.shape[2])
    width = int(counts.max(initial=0))
    dtype = np.int16 if w.shape[2] <= np.iinfo(np.int16).max else np.int32
    return Pathways(order[..., :width].astype(dtype), counts)


#: What the metric functions accept as a set of pathways.
PathwaysLike = Pathways | Sequence[str | Sequence[Sequence[int]]]


def _parse(text: str) -> list[tuple[int, ...]]:
    """The pathway of a pathway string such as ``"3,1,5-9,1"``."""
    try:
        return [tuple(int(e) for e in layer.split(",")) for layer in text.split("-")]
    except ValueError as exc:
        raise invalid_parameter(
            "Pathways.from_lists", "pathways", "pathway strings such as '3,1,5-9,1'", text
        ) from exc


def pathway_string(pathway: Sequence[Sequence[int]]) -> str:
    """The paper's pathway string: ids comma-separated in rank order, layers joined by ``-``.

    Parameters
    ----------
    pathway : sequence of L sequences of int
        One sample's pathway, e.g. ``pathways(w)[i]``.

    Returns
    -------
    str

    Examples
    --------
    >>> pathway_string([[3, 1, 5], [9, 1]])
    '3,1,5-9,1'
    """
    return "-".join(",".join(str(int(e)) for e in layer) for layer in pathway)
