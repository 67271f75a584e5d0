"""The stream testbed's corpus: a one-pass stream of unique documents mixing equations and filler.

Every training document is ``seq_len`` words: ``n_equations`` equations ``a OP b = c`` of one domain
(the arithmetic domains of :mod:`pathwatch.testbed.corpus`, or the memorize-only ``facts`` control)
at random non-overlapping positions, the rest filler words ``w0 … w<V-1>`` drawn from the domain's
own Markov chain (its *style*). Each state of a style's chain has ``branching`` equally likely
successors, so a style's filler costs ``log(branching)`` nats a word at best, and domains of
different branching have different document-loss floors (:meth:`StreamCorpus.floor`). The filler
chain runs on across an equation: the word after it follows the word before it.

Operand pairs are split by unordered pair as in :func:`pathwatch.testbed.corpus.build_corpus`;
training documents use training pairs only. The stream holds ``n_docs`` documents, each drawn once
and unique (duplicates are redrawn), in training order; the domain of each minibatch slot follows
the ``mix`` weights exactly (largest-remainder rounding per batch). Validation documents use a
style never trained on, with equations of training pairs of the arithmetic domains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pathwatch.testbed.corpus import ARITHMETIC, OPERATORS, Corpus, build_corpus

FILLER = "w"
EQUATION_TOKENS = 5  # a OP b = c


@dataclass(frozen=True)
class Style:
    """A filler style: a Markov chain over the filler words, ``branching`` successors per state.

    ``successors[s]`` holds the words that may follow word ``s``, each with probability
    1 / branching; a chain's first word is uniform over the vocabulary.
    """

    branching: int
    successors: np.ndarray  # (V, branching) int64

    @property
    def entropy(self) -> float:
        """Nats per filler word after the first (the chain's entropy rate)."""
        return float(np.log(self.branching))


def make_style(vocab: int, branching: int, rng: np.random.Generator) -> Style:
    """A style over ``vocab`` filler words whose states have ``branching`` distinct successors."""
    successors = np.argsort(rng.random((vocab, vocab)), axis=1)[:, :branching]
    return Style(branching, successors.astype(np.int64))


def filler(style: Style, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` chains of ``length`` filler word indices of ``style``, shape (n, length)."""
    vocab = len(style.successors)
    out = np.empty((n, length), dtype=np.int64)
    out[:, 0] = rng.integers(0, vocab, size=n)
    for t in range(1, length):
        out[:, t] = style.successors[out[:, t - 1], rng.integers(0, style.branching, size=n)]
    return out


@dataclass(frozen=True)
class StreamCorpus:
    """The stream's token-id matrices and what generated them.

    Attributes
    ----------
    pairs : Corpus
        Train / held-out items per domain (split by unordered pair), from ``build_corpus``.
    domains : tuple of str
        Domain names, in configuration order (index = domain code).
    styles : tuple of Style
        One per domain.
    validation_style : Style
        The style of the validation documents, never trained on.
    seq_len, n_equations : int
        Words per document and equations in it.
    vocabulary : list of str
        Every word, in token order after the tokenizer's two special tokens.
    docs : numpy.ndarray
        (n_docs, seq_len) word indices into ``vocabulary`` of the training stream, in order.
    doc_domain : numpy.ndarray
        (n_docs,) domain code of each document.
    answer_mask : numpy.ndarray
        (n_docs, seq_len) bool, True at the equations' answer words.
    """

    pairs: Corpus
    domains: tuple[str, ...]
    styles: tuple[Style, ...]
    validation_style: Style
    seq_len: int
    n_equations: int
    vocabulary: list[str]
    docs: np.ndarray
    doc_domain: np.ndarray
    answer_mask: np.ndarray

    @property
    def filler_offset(self) -> int:
        """Index in ``vocabulary`` of filler word ``w0``."""
        return len(self.pairs.vocabulary())

    def floor(self, domain: str) -> float:
        """The lowest mean next-token loss a document of ``domain`` can reach (nats per predicted
        word): its filler's entropy plus the uniform operands, with every answer, operator and
        ``=`` and the equations' positions taken as known — a lower bound that orders the domains."""
        style = self.styles[self.domains.index(domain)]
        n_filler = self.seq_len - EQUATION_TOKENS * self.n_equations
        total = (n_filler - 1) * style.entropy + 2 * self.n_equations * np.log(self.pairs.prime)
        return float(total / (self.seq_len - 1))

    def words(self, rows: np.ndarray) -> list[str]:
        """Rows of word indices as texts (words joined by spaces)."""
        vocab = np.asarray(self.vocabulary)
        return [" ".join(vocab[row]) for row in rows]


def _equations(
    items: np.ndarray, domain: str, n: int, k: int, rng: np.random.Generator, prime: int
) -> np.ndarray:
    """``n × k`` equations of ``domain`` drawn from ``items`` (a, b, c rows) as word indices,
    shape (n, 5 k)."""
    pick = items[rng.integers(0, len(items), size=(n, k))]  # (n, k, 3)
    op = prime + list(OPERATORS).index(domain)
    equals = prime + len(OPERATORS)
    tokens = np.stack(
        [
            pick[..., 0],
            np.full(pick.shape[:2], op),
            pick[..., 1],
            np.full(pick.shape[:2], equals),
            pick[..., 2],
        ],
        axis=-1,
    )
    return tokens.reshape(n, EQUATION_TOKENS * k)


def _layout(n: int, seq_len: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, seq_len) bool: True at the equations' positions, k non-overlapping runs of 5 words."""
    free = seq_len - EQUATION_TOKENS * k
    starts = np.sort(rng.integers(0, free + 1, size=(n, k)), axis=1)
    starts = starts + EQUATION_TOKENS * np.arange(k)
    positions = starts[..., None] + np.arange(EQUATION_TOKENS)  # (n, k, 5)
    mask = np.zeros((n, seq_len), dtype=bool)
    np.put_along_axis(mask, positions.reshape(n, -1), True, axis=1)
    return mask


def compose(
    equations: np.ndarray, fill: np.ndarray, mask: np.ndarray, filler_offset: int
) -> np.ndarray:
    """Documents with ``equations`` (n, 5k) at ``mask`` and ``fill`` (n, seq_len − 5k) elsewhere,
    both in order."""
    docs = np.empty(mask.shape, dtype=np.int64)
    docs[mask] = equations.ravel()
    docs[~mask] = (fill + filler_offset).ravel()
    return docs


def domain_documents(
    corpus: StreamCorpus,
    domain: str,
    items: np.ndarray,
    n: int,
    rng: np.random.Generator,
    style: Style | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` documents of ``domain`` with equations from ``items`` in ``style`` (default the
    domain's own): (docs, answer mask)."""
    k, length = corpus.n_equations, corpus.seq_len
    style = corpus.styles[corpus.domains.index(domain)] if style is None else style
    mask = _layout(n, length, k, rng)
    eqs = _equations(items, domain, n, k, rng, corpus.pairs.prime)
    docs = compose(
        eqs, filler(style, n, length - EQUATION_TOKENS * k, rng), mask, corpus.filler_offset
    )
    answers = mask & (np.cumsum(mask, axis=1) % EQUATION_TOKENS == 0)
    return docs, answers


def batch_domains(mix: Sequence[float], batch_size: int, n_batches: int, seed: int) -> np.ndarray:
    """Domain code of every slot of ``n_batches`` batches: per batch, each domain's count is its
    ``mix`` share of ``batch_size`` by largest remainder, slots shuffled; shape (n_batches * batch_size,)."""
    share = np.asarray(mix, dtype=np.float64) / np.sum(mix) * batch_size
    counts = np.floor(share).astype(np.int64)
    extra = batch_size - counts.sum()
    counts[np.argsort(-(share - counts), kind="stable")[:extra]] += 1
    base = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng([seed, 3])
    return rng.permuted(np.tile(base, (n_batches, 1)), axis=1).ravel()


def build_stream(
    *,
    prime: int,
    domains: Sequence[str],
    branching: Sequence[int],
    validation_branching: int,
    mix: Sequence[float],
    filler_vocab: int,
    seq_len: int,
    n_equations: int,
    train_fraction: float,
    batch_size: int,
    n_batches: int,
    seed: int,
) -> StreamCorpus:
    """The stream of ``n_batches × batch_size`` unique training documents (arguments as in
    :class:`pathwatch.testbed.stream.StreamConfig`, which validates them)."""
    pairs = build_corpus(
        prime=prime,
        domains=tuple(domains),
        train_fraction=train_fraction,
        n_validation=1,
        seed=seed,
    )
    rng = np.random.default_rng([seed, 11])
    styles = tuple(make_style(filler_vocab, b, rng) for b in branching)
    validation_style = make_style(filler_vocab, validation_branching, rng)
    vocabulary = pairs.vocabulary() + [f"{FILLER}{i}" for i in range(filler_vocab)]
    empty = np.empty((0, seq_len), dtype=np.int64)
    corpus = StreamCorpus(
        pairs,
        tuple(domains),
        styles,
        validation_style,
        seq_len,
        n_equations,
        vocabulary,
        empty,
        np.empty(0, dtype=np.int64),
        empty.astype(bool),
    )
    codes = batch_domains(mix, batch_size, n_batches, seed)
    docs = np.empty((codes.size, seq_len), dtype=np.int64)
    answers = np.empty((codes.size, seq_len), dtype=bool)
    todo = np.arange(codes.size)
    while todo.size:
        for code, name in enumerate(domains):
            rows = todo[codes[todo] == code]
            docs[rows], answers[rows] = domain_documents(
                corpus, name, pairs.domain(name).train, rows.size, rng
            )
        # a document drawn twice is redrawn (its first occurrence stays)
        _, first = np.unique(docs, axis=0, return_index=True)
        keep = np.zeros(codes.size, dtype=bool)
        keep[first] = True
        todo = np.flatnonzero(~keep)
    return dataclasses.replace(corpus, docs=docs, doc_domain=codes, answer_mask=answers)


def skill_domains(domains: Sequence[str]) -> list[str]:
    """The generalizable (arithmetic) domains among ``domains``."""
    return [d for d in domains if d in ARITHMETIC]


__all__ = ["StreamCorpus", "Style", "batch_domains", "build_stream", "domain_documents"]
