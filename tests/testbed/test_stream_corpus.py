"""The stream corpus's invariants: unique documents, the pair split, filler entropies, the mix."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pathwatch.testbed.corpus import OPERATORS
from pathwatch.testbed.stream_corpus import EQUATION_TOKENS, batch_domains, build_stream

DOMAINS = ("add", "sub", "mul", "facts")


def _stream(seed: int, branching=(2, 4, 6, 3), mix=(0.4, 0.3, 0.2, 0.1), n_batches=40, **kw):
    args = (
        dict(
            prime=11,
            domains=DOMAINS,
            branching=branching,
            validation_branching=5,
            mix=mix,
            filler_vocab=12,
            seq_len=24,
            n_equations=3,
            train_fraction=0.7,
            batch_size=20,
            n_batches=n_batches,
            seed=seed,
        )
        | kw
    )
    return build_stream(**args)


def _equations(corpus, rows: np.ndarray) -> np.ndarray:
    """(n, k, 5) equation words of documents ``rows`` (the non-filler words, in order)."""
    docs = corpus.docs[rows]
    words = docs[docs < corpus.filler_offset]
    return words.reshape(len(rows), corpus.n_equations, EQUATION_TOKENS)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_every_training_document_is_unique(seed: int) -> None:
    corpus = _stream(seed, branching=(1, 1, 1, 1))  # low entropy: duplicates are drawn, redrawn
    assert np.unique(corpus.docs, axis=0).shape[0] == corpus.docs.shape[0]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_no_heldout_unordered_pair_in_any_training_document(seed: int) -> None:
    corpus = _stream(seed)
    p = corpus.pairs.prime
    for code, name in enumerate(corpus.domains):
        rows = np.flatnonzero(corpus.doc_domain == code)
        eq = _equations(corpus, rows).reshape(-1, EQUATION_TOKENS)
        assert (eq[:, 1] == p + list(OPERATORS).index(name)).all()  # the domain's operator
        split = corpus.pairs.domain(name)
        key = lambda a, b: np.minimum(a, b) * p + np.maximum(a, b)  # noqa: E731
        heldout = set(key(split.test[:, 0], split.test[:, 1]).tolist())
        trained = set(key(eq[:, 0], eq[:, 2]).tolist())
        assert not heldout & trained
        # and every answer is the pair's own (the rule, or the fact)
        answers = {(a, b): c for a, b, c in split.train.tolist()}
        assert all(answers[(a, b)] == c for a, _, b, _, c in eq.tolist())


def _conditional_entropy(corpus, code: int) -> float:
    """Empirical entropy (nats) of a filler word given the filler word before it, in documents of
    domain ``code``."""
    docs = corpus.docs[corpus.doc_domain == code]
    fill = docs[docs >= corpus.filler_offset].reshape(len(docs), -1) - corpus.filler_offset
    v = len(corpus.styles[0].successors)
    counts = np.zeros((v, v))
    np.add.at(counts, (fill[:, :-1].ravel(), fill[:, 1:].ravel()), 1)
    p = counts / counts.sum(1, keepdims=True).clip(1)
    h = -(p * np.log(np.where(p > 0, p, 1))).sum(1)
    return float((h * counts.sum(1)).sum() / counts.sum())


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), branching=st.permutations([1, 2, 4, 8]))
def test_filler_entropies_and_floors_are_ordered_as_configured(seed: int, branching) -> None:
    corpus = _stream(seed, branching=tuple(branching), n_batches=60)
    order = np.argsort(branching)
    measured = [_conditional_entropy(corpus, c) for c in range(len(DOMAINS))]
    assert np.all(np.diff(np.asarray(measured)[order]) > 0)
    floors = [corpus.floor(d) for d in DOMAINS]
    assert np.all(np.diff(np.asarray(floors)[order]) > 0)
    # the entropy rate of a style is log(branching), and the samples come close to it
    assert np.allclose(measured, np.log(branching), atol=0.25)


@settings(max_examples=25, deadline=None)
@given(
    mix=st.lists(st.floats(0.05, 5.0), min_size=2, max_size=5),
    batch_size=st.integers(1, 64),
    seed=st.integers(0, 100),
)
def test_every_batch_follows_the_mix(mix: list[float], batch_size: int, seed: int) -> None:
    codes = batch_domains(mix, batch_size, 7, seed).reshape(7, batch_size)
    share = np.asarray(mix) / sum(mix) * batch_size
    for batch in codes:
        counts = np.bincount(batch, minlength=len(mix))
        assert counts.sum() == batch_size
        assert np.all(np.abs(counts - share) < 1)  # largest remainder: within one document


def test_default_floors_span_the_papers_range() -> None:
    from pathwatch.testbed.stream import StreamConfig

    corpus = StreamConfig(max_steps=20, n_probe=1).corpus(0)
    floors = {d: corpus.floor(d) for d in corpus.domains}
    assert all(0.9 <= f <= 1.8 for f in floors.values()), floors
    assert max(floors.values()) - min(floors.values()) >= 0.2, floors
