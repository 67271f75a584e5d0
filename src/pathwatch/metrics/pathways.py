"""Expert pathways: per sample and MoE layer, the experts that carry most of the routing weight.

SPEC §1: per layer, sort the experts by their mean routing weight (descending) and keep them until
the cumulative weight exceeds the threshold. The pathway string writes each layer's kept ids
comma-separated in rank order and joins the layers with ``-``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import overload

import numpy as np
import numpy.typing as npt

from pathwatch._validate import check_float, is_int
from pathwatch.errors import InputError, invalid_parameter

#: One sample's pathway: per layer, the kept expert ids in rank order.
Pathway = tuple[tuple[int, ...], ...]

#: Layer boundary symbol of the ``unit="expert"`` encoding (expert ids are >= 0).
LAYER_BOUNDARY = -1

# Separators of the pathway string: between the ids of a layer, between layers.
_ID_SEP, _LAYER_SEP = ",", "-"

# Weights sorted at once by :func:`pathways` (a chunk of samples; bounds its working memory).
_CHUNK_ELEMENTS = 2**20


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
        Number of kept experts per sample and layer, in [1, K].
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
        if counts.size and not 1 <= counts.min() <= counts.max() <= ids.shape[2]:
            raise invalid_parameter(
                "Pathways",
                "counts",
                f"in [1, {ids.shape[2]}] for every sample and layer",
                (int(counts.min()), int(counts.max())),
            )
        kept = np.arange(ids.shape[2]) < counts[..., None]
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
        try:
            rows = [
                _parse(p) if isinstance(p, str) else [tuple(map(_expert_id, layer)) for layer in p]
                for p in pathways
            ]
        except TypeError as exc:
            raise invalid_parameter(
                "Pathways.from_lists",
                "pathways",
                "a sequence of pathways (each L sequences of int expert ids) or pathway strings",
                pathways,
            ) from exc
        n_layers = {len(r) for r in rows}
        if len(n_layers) > 1:
            raise invalid_parameter(
                "Pathways.from_lists",
                "pathways",
                "pathways with the same number of layers",
                sorted(n_layers),
            )
        empty = next((i for i, r in enumerate(rows) if not all(r)), None)
        if empty is not None:
            raise invalid_parameter(
                "Pathways.from_lists",
                "pathways",
                "pathways with at least one expert id per layer",
                rows[empty],
            )
        n, n_l = len(rows), n_layers.pop() if rows else 0
        counts = np.array([[len(layer) for layer in r] for r in rows], dtype=np.int64)
        counts = counts.reshape(n, n_l)
        ids = np.full((n, n_l, int(counts.max(initial=0))), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            for j, layer in enumerate(r):
                ids[i, j, : len(layer)] = layer
        return cls(ids, counts)

    @classmethod
    def _trusted(cls, ids: np.ndarray, counts: np.ndarray, cache: dict) -> Pathways:
        """Valid pathways (-1 padding, int64 counts) without re-validating them; ``cache`` holds
        their strings, if already built."""
        obj = object.__new__(cls)
        obj.ids, obj.counts = ids, counts
        obj.__dict__.update(cache)
        return obj

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
            ids, counts = self.ids[index].tolist(), self.counts[index].tolist()
            return tuple(tuple(layer[:c]) for layer, c in zip(ids, counts, strict=True))
        # strings already built for the whole set are sliced for a subset, not rebuilt
        cache = {name: self.__dict__[name][index] for name in _ROW_CACHES if name in self.__dict__}
        return Pathways._trusted(self.ids[index], self.counts[index], cache)

    def __iter__(self) -> Iterator[Pathway]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pathways):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kept = self.counts.mean() if self.counts.size else 0.0
        return f"Pathways(n_samples={len(self)}, n_layers={self.n_layers}, mean_kept={kept:.2f})"

    def strings(self) -> list[str]:
        """The pathway string of every sample (the paper's ``unit="char"`` sequences)."""
        return self._string_array.tolist()

    def layer_lists(self, layer: int) -> list[tuple[int, ...]]:
        """Per sample, the kept expert ids of one layer in rank order."""
        ids, counts = self.ids[:, layer].tolist(), self.counts[:, layer].tolist()
        return [tuple(row[:c]) for row, c in zip(ids, counts, strict=True)]

    def expert_sequences(self) -> list[list[int]]:
        """Per sample, the kept ids of all layers with :data:`LAYER_BOUNDARY` between layers."""
        return [
            [e for j, layer in enumerate(p) for e in ((LAYER_BOUNDARY,) if j else ()) + layer]
            for p in self
        ]

    def sequences(self, unit: str, layer: int | None = None) -> npt.NDArray[np.object_]:
        """Per sample, the string that the Levenshtein distance of ``unit`` compares (cached).

        ``unit="char"``: the pathway string, or one layer's part of it. ``unit="expert"``: one
        code point per expert id and one per layer boundary, so an edit of one expert costs 1 as on
        :meth:`expert_sequences`, but on a ``str``, which rapidfuzz compares several times faster
        than a list of ints. Built once for the whole set; subsets slice them.

        Examples
        --------
        >>> p = Pathways.from_lists(["12,3-5"])
        >>> p.sequences("char").tolist(), len(p.sequences("expert")[0]), p.sequences("char", 1)
        (['12,3-5'], 4, array(['5'], dtype=object))
        """
        if unit == "char":
            return self._string_array if layer is None else self._layer_string_array[:, layer]
        return self._symbol_array if layer is None else self._layer_symbol_array[:, layer]

    @cached_property
    def _string_array(self) -> npt.NDArray[np.object_]:
        return self._in_chunks(_decimal_strings, per_layer=False)

    @cached_property
    def _layer_string_array(self) -> npt.NDArray[np.object_]:
        return self._in_chunks(_decimal_strings, per_layer=True)

    @cached_property
    def _symbol_array(self) -> npt.NDArray[np.object_]:
        return self._in_chunks(_symbol_strings, per_layer=False)

    @cached_property
    def _layer_symbol_array(self) -> npt.NDArray[np.object_]:
        return self._in_chunks(_symbol_strings, per_layer=True)

    def _in_chunks(self, build: Callable[..., np.ndarray], *, per_layer: bool) -> np.ndarray:
        """``build(ids, counts, per_layer=...)`` over chunks of samples (bounds its temporaries),
        joined: shape (N,), or (N, L) ``per_layer``."""
        chunk = max(1, _CHUNK_ELEMENTS // max(1, self.n_layers * self.ids.shape[2]))
        out = np.empty((len(self), self.n_layers) if per_layer else len(self), dtype=object)
        for start in range(0, len(self), chunk):
            rows = slice(start, start + chunk)
            out[rows] = build(self.ids[rows], self.counts[rows], per_layer=per_layer).reshape(
                out[rows].shape
            )
        return out


def _decimal_strings(
    ids: np.ndarray, counts: np.ndarray, *, per_layer: bool
) -> npt.NDArray[np.object_]:
    """The pathway strings of (n, L, K) ids (``per_layer``: each layer's part, sample-major).

    Every kept id is followed by its separator (``,`` within a layer, ``-`` between layers,
    nothing at the end of a string); the whole run is joined once and cut at the known lengths.
    """
    kept = np.arange(ids.shape[2]) < counts[..., None]
    sample, layer, rank = np.nonzero(kept)
    kept_ids = ids[kept]
    last_in_layer = rank == counts[sample, layer] - 1
    end = last_in_layer if per_layer else last_in_layer & (layer == ids.shape[1] - 1)
    sep = np.where(end, 2, last_in_layer.astype(np.int64))
    names = [str(e) for e in range(int(kept_ids.max(initial=0)) + 1)]
    run = np.empty(2 * kept_ids.size, dtype=object)
    run[0::2] = np.array(names, dtype=object)[kept_ids]
    run[1::2] = np.array([_ID_SEP, _LAYER_SEP, ""], dtype=object)[sep]
    width = np.array([len(n) for n in names], dtype=np.int64)[kept_ids] + (sep < 2)
    owner, rows = (sample * ids.shape[1] + layer, ids.shape[0] * ids.shape[1])
    if not per_layer:
        owner, rows = sample, ids.shape[0]
    lengths = np.bincount(owner, weights=width, minlength=rows).astype(np.int64)
    return _cut("".join(run.tolist()), lengths)


def _symbol_strings(
    ids: np.ndarray, counts: np.ndarray, *, per_layer: bool
) -> npt.NDArray[np.object_]:
    """The ``unit="expert"`` strings of (n, L, K) ids (``per_layer``: each layer's, sample-major):
    one code point per kept id and, between layers, one for the boundary."""
    kept = np.arange(ids.shape[2]) < counts[..., None]
    if per_layer:
        return _cut(_decode(_code_points(ids[kept])), counts.ravel())
    # per layer its ids, then the boundary (not after the last layer); 0 marks an empty slot
    codes = np.zeros((*ids.shape[:2], ids.shape[2] + 1), dtype=np.uint32)
    codes[..., :-1][kept] = _code_points(ids[kept])
    codes[:, :-1, -1] = _BOUNDARY_CODE
    lengths = counts.sum(axis=1) + max(ids.shape[1] - 1, 0)
    return _cut(_decode(codes[codes > 0]), lengths)


#: Cached per-sample strings of a :class:`Pathways` that a subset slices instead of rebuilding.
_ROW_CACHES = ("_string_array", "_layer_string_array", "_symbol_array", "_layer_symbol_array")

# Code points of the ``unit="expert"`` strings: 1 is the layer boundary, expert e is e + 2 (with
# the UTF-16 surrogate block skipped, so that every id maps to a valid character).
_BOUNDARY_CODE = 1
_SURROGATES = (0xD800, 0xE000)


def _code_points(ids: np.ndarray) -> npt.NDArray[np.uint32]:
    """The code point of each expert id (distinct ids, distinct code points)."""
    codes = ids.astype(np.uint32) + 2
    codes[codes >= _SURROGATES[0]] += _SURROGATES[1] - _SURROGATES[0]
    if codes.size and codes.max() > 0x10FFFF:
        raise invalid_parameter("Pathways", "ids", "expert ids below 1,111,000", int(ids.max()))
    return codes


def _decode(codes: npt.NDArray[np.uint32]) -> str:
    """The string of a run of code points."""
    return codes.astype("<u4").tobytes().decode("utf-32-le")


def _cut(text: str, lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.object_]:
    """``text`` cut into consecutive pieces of the given lengths, as an object array."""
    ends = np.cumsum(lengths)
    out = np.empty(ends.size, dtype=object)
    out[:] = [text[a:b] for a, b in zip((ends - lengths).tolist(), ends.tolist(), strict=True)]
    return out


def pathways(mean_weights: npt.ArrayLike, threshold: float = 0.7) -> Pathways:
    """Per sample and layer, the experts kept until the cumulative weight exceeds ``threshold``.

    Experts are ranked by mean routing weight, descending; equal weights keep the lower expert id
    first (a stable order). A layer keeps the shortest prefix of that ranking whose cumulative
    weight is strictly greater than ``threshold`` (so the top expert alone may be the whole layer),
    or all E experts when no prefix exceeds it (e.g. ``threshold=1``). Samples are processed in
    chunks, so memory stays proportional to the result.

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
    check_float("pathways", "threshold", threshold, low=0, high=1, low_open=True)
    w = np.asarray(mean_weights)
    if w.dtype.kind not in "buif":
        raise invalid_parameter(
            "pathways", "mean_weights", "a numeric array of shape (N, L, E)", f"dtype {w.dtype}"
        )
    if w.ndim != 3 or 0 in w.shape[1:]:
        hint = "; for one sample pass mean_weights[None]" if w.ndim == 2 else ""
        raise invalid_parameter(
            "pathways", "mean_weights", f"an array of shape (N, L, E), L, E >= 1{hint}", w.shape
        )
    n, n_layers, n_experts = w.shape
    dtype = np.int16 if n_experts <= np.iinfo(np.int16).max else np.int32
    chunk = max(1, _CHUNK_ELEMENTS // (n_layers * n_experts))
    parts = []
    for start in range(0, n, chunk):
        x = w[start : start + chunk].astype(np.float64)
        if not np.isfinite(x).all() or (x < 0).any():
            raise InputError(
                "The 'mean_weights' parameter of pathways must be finite and non-negative. "
                "Got NaN, inf or negative values instead."
            )
        order = np.argsort(-x, axis=-1, kind="stable")
        cumulative = np.cumsum(np.take_along_axis(x, order, axis=-1), axis=-1)
        counts = np.minimum((cumulative <= threshold).sum(axis=-1) + 1, n_experts)
        kept = order[..., : counts.max(initial=0)]
        kept[np.arange(kept.shape[2]) >= counts[..., None]] = -1  # padding, as Pathways holds it
        parts.append((kept.astype(dtype), counts))
    width = max((ids.shape[2] for ids, _ in parts), default=0)
    ids = np.full((n, n_layers, width), -1, dtype=dtype)
    for (part, _), start in zip(parts, range(0, n, chunk), strict=True):
        ids[start : start + len(part), :, : part.shape[2]] = part
    counts = np.concatenate([c for _, c in parts]) if parts else np.zeros((0, n_layers), int)
    return Pathways._trusted(ids, counts.astype(np.int64), {})  # valid by construction


#: What the metric functions accept as a set of pathways.
PathwaysLike = Pathways | Sequence[str | Sequence[Sequence[int]]]


def _parse(text: str) -> list[tuple[int, ...]]:
    """The pathway of a pathway string such as ``"3,1,5-9,1"``."""
    try:
        return [tuple(int(e) for e in layer.split(_ID_SEP)) for layer in text.split(_LAYER_SEP)]
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
    try:
        return _LAYER_SEP.join(_ID_SEP.join(str(_expert_id(e)) for e in layer) for layer in pathway)
    except TypeError as exc:
        raise invalid_parameter(
            "pathway_string", "pathway", "L sequences of int expert ids", pathway
        ) from exc


def _expert_id(value: object) -> int:
    """An expert id: an int (Python or numpy); TypeError for anything else."""
    if not is_int(value):
        raise TypeError(f"not an expert id: {value!r}")
    return int(value)
