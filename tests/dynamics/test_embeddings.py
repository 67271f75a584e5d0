"""The two embedders: the offline all-MiniLM-L6-v2 extra and the deterministic n-gram fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pathwatch.dynamics import embed_texts, minilm_available
from pathwatch.dynamics.embeddings import _ngram_counts
from pathwatch.errors import InputError

TEXTS = [
    "The derivative of x squared is two x.",
    "Differentiate x^2: the result is 2x.",
    "def add(a, b): return a + b",
    "Water boils at one hundred degrees Celsius at sea level.",
]


def test_ngram_fallback_is_deterministic_unit_length_and_sees_overlap():
    texts = ["12 + 35 = 47", "12 + 36 = 48", "the cat sat on the mat", "the cat sat on a hat"]
    a = embed_texts(texts, method="ngram", dim=512)
    b = embed_texts(texts[::-1], method="ngram", dim=512)
    assert a.method == "char-ngram-tfidf"
    assert a.vectors.shape == (4, 512) and a.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a.vectors, axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(a.vectors, b.vectors[::-1], rtol=1e-6)  # idf ignores order
    sim = a.vectors @ a.vectors.T
    assert sim[0, 1] > 2 * max(sim[0, 2], sim[0, 3])
    assert sim[2, 3] > 2 * max(sim[2, 0], sim[2, 1])
    case = embed_texts(["abc abc", "ABC abc"], method="ngram").vectors
    np.testing.assert_allclose(case[0] @ case[1], 1, rtol=1e-6)


def ngram_reference(text, dim):
    """Counts of hashed character 3-5-grams of one text, with Python integers."""
    data = f" {text.lower()} ".encode()
    counts = np.zeros(dim)
    for n in (3, 4, 5):
        for i in range(len(data) - n + 1):
            h = sum(b * 1_000_003 ** (n - 1 - j) for j, b in enumerate(data[i : i + n]))
            counts[(h % 2**64 + n) % 2**64 % dim] += 1
    return counts


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=6), st.sampled_from([7, 64, 1024]))
def test_ngram_counts_match_a_per_text_reference(texts, dim):
    got = _ngram_counts(texts, dim).toarray()
    expected = np.array([ngram_reference(t, dim) for t in texts]).reshape(len(texts), dim)
    np.testing.assert_array_equal(got, expected)


def test_ngram_handles_short_empty_and_non_ascii_texts():
    emb = embed_texts(["", "a", "Ωμέγα ≥ 2"], method="ngram", dim=64)
    assert emb.vectors.shape == (3, 64)
    assert np.all(np.isfinite(emb.vectors))


def test_auto_says_which_embedder_it_used():
    if minilm_available():
        assert embed_texts(TEXTS[:1]).method == "all-MiniLM-L6-v2"
    else:
        with pytest.warns(UserWarning, match=r"pathwatch\[embeddings\]"):
            assert embed_texts(TEXTS[:1]).method == "char-ngram-tfidf"


@pytest.mark.skipif(
    not minilm_available(), reason='needs the extra: pip install "pathwatch[embeddings]"'
)
def test_minilm_offline_embeds_meaning(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = embed_texts(TEXTS, method="minilm")
    assert emb.method == "all-MiniLM-L6-v2"
    assert emb.vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1, rtol=1e-5)
    sim = emb.vectors @ emb.vectors.T
    assert sim[0, 1] > 0.6 > sim[0, 3]


@pytest.mark.parametrize(
    ("texts", "kwargs", "match"),
    [
        (TEXTS, {"method": "minlm"}, "Did you mean 'minilm'"),
        ("one string", {}, "'texts' parameter of embed_texts must be a sequence of strings"),
        (["ok", [1, 2]], {}, "item 1 is list"),
        (TEXTS, {"method": "ngram", "dim": 0}, "'dim' parameter"),
    ],
)
def test_bad_input(texts, kwargs, match):
    with pytest.raises(InputError, match=match):
        embed_texts(texts, **kwargs)
