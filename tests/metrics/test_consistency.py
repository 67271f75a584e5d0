"""Consistency, smoothness and adjacent cosine against a per-sample loop of the SPEC §1 formula."""

from __future__ import annotations

import importlib
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pathwatch as pw
from pathwatch.errors import InputError
from pathwatch.metrics import adjacent_cosine, consistency_metrics, layer_cosines


def reference(mean_weights, router_weights):
    """Literal formula, one sample and one layer at a time: (cosines, C)."""
    cosines, values = [], []
    for sample in mean_weights:
        embeddings = [
            sum(weight * router[k] for k, weight in enumerate(row))
            for row, router in zip(sample, router_weights, strict=True)
        ]
        c = [
            float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))
            for x, y in itertools.pairwise(embeddings)
        ]
        top = max(c)
        value = 1 - sum(ci / (top + 1e-8) for ci in c) / len(c)
        cosines.append(c)
        values.append(math.nan if len(embeddings) < 3 or top <= 0 else value)
    return np.array(cosines), np.array(values)


def make(seed, n=6, n_layers=4, n_experts=5, hidden=7, shared=0.0):
    """Random weights; ``shared`` mixes a common router into every layer to make cosines positive."""
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(n_experts), size=(n, n_layers))
    common = rng.normal(size=(n_experts, hidden))
    routers = [shared * common + rng.normal(size=(n_experts, hidden)) for _ in range(n_layers)]
    return w, routers


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shared", [0.0, 3.0])
def test_matches_loop_reference(seed, shared):
    w, routers = make(seed, shared=shared)
    want_c, want = reference(w, routers)
    m = consistency_metrics(w, routers)
    np.testing.assert_allclose(m.cosines, want_c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.consistency, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pw.consistency(w, routers), want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.adjacent_cosine, want_c.mean(axis=1), rtol=1e-10)
    assert m.n_undefined == int(np.isnan(want).sum())


@pytest.mark.parametrize("chunk", [1, 13, 2**22])
def test_chunks_do_not_change_the_result(monkeypatch, chunk):
    module = importlib.import_module("pathwatch.metrics.consistency")

    w, routers = make(4, n=25, shared=2.0)
    want = reference(w, routers)[1]
    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", chunk)
    np.testing.assert_allclose(pw.consistency(w, routers), want, rtol=1e-9, atol=1e-12)


def test_float32_inputs_and_stacked_routers_agree():
    w, routers = make(3, shared=2.0)
    a = pw.consistency(w.astype(np.float32), [r.astype(np.float32) for r in routers])
    b = pw.consistency(w, np.stack(routers))
    np.testing.assert_allclose(a, b, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.lists(st.floats(0.01, 100.0), min_size=4, max_size=4))
def test_invariant_to_scaling_each_router(seed, scale):
    w, routers = make(seed, shared=2.0)
    scaled = [s * r for s, r in zip(scale, routers, strict=True)]
    np.testing.assert_allclose(
        pw.consistency(w, scaled), pw.consistency(w, routers), rtol=1e-9, atol=1e-12
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_layers=st.integers(1, 5))
def test_smoothness_is_one_minus_consistency(seed, n_layers):
    w, routers = make(seed, n_layers=n_layers, shared=1.0)
    c, s = pw.consistency(w, routers), pw.smoothness(w, routers)
    np.testing.assert_array_equal(np.isnan(c), np.isnan(s))
    np.testing.assert_allclose(s[~np.isnan(s)], 1 - c[~np.isnan(c)], rtol=1e-12)


def test_consistency_formula_bounds():
    # non-negative routers give positive cosines; then c_l / max in (0, 1] so C lies in [0, 1)
    w, routers = make(5, n=50)
    routers = [np.abs(r) for r in routers]
    m = consistency_metrics(w, routers)
    assert (m.cosines > 0).all()
    assert ((m.consistency >= 0) & (m.consistency < 1)).all()
    # identical embeddings in every layer: all cosines 1, C = 0 up to the 1e-8 stabilizer
    same = [routers[0]] * 4
    w_same = np.repeat(w[:, :1], 4, axis=1)
    np.testing.assert_allclose(pw.consistency(w_same, same), 0.0, atol=1e-7)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_nan_with_fewer_than_three_layers(n_layers):
    w, routers = make(0, n_layers=n_layers, shared=3.0)
    m = consistency_metrics(w, routers)
    assert np.isnan(m.consistency).all() and m.n_undefined == len(w)
    assert m.cosines.shape == (len(w), n_layers - 1)
    assert np.isnan(m.adjacent_cosine).all() == (n_layers == 1)


def test_nan_when_max_cosine_is_not_positive():
    # experts of adjacent layers point in opposite directions: every c_l = -1
    base = np.eye(3, 4)
    routers = [base, -base, base]
    w = np.array([[[1.0, 0, 0]] * 3, [[0.2, 0.5, 0.3]] * 3])
    m = consistency_metrics(w, routers)
    np.testing.assert_allclose(m.cosines, -1.0)
    assert np.isnan(m.consistency).all()
    np.testing.assert_allclose(adjacent_cosine(w, routers), [-1.0, -1.0])
    # a zero embedding has no direction: NaN cosine, NaN consistency, counted
    routers = [base, np.zeros((3, 4)), base]
    assert np.isnan(layer_cosines(w, routers)).all()
    assert consistency_metrics(w, routers).n_undefined == 2


@pytest.mark.parametrize(
    ("mean_weights", "routers", "message"),
    [
        (
            np.full((4, 5), 0.2),
            [np.ones((5, 7))] * 4,
            "The 'mean_weights' parameter of consistency must be an array of shape (N, L, E)",
        ),
        (
            np.full((2, 3, 5), 0.2),
            [np.ones((5, 7))] * 2,
            "The 'router_weights' parameter of consistency must be 3 numeric arrays of one shape (5, H)",
        ),
        (
            np.full((2, 3, 5), 0.2),
            [np.ones((5, 7)), np.ones((5, 6)), np.ones((5, 7))],
            "Got [(5, 7), (5, 6), (5, 7)] instead.",
        ),
        (
            np.full((2, 3, 5), 0.2),
            [np.ones((4, 7))] * 3,
            "must have 5 rows (experts) per layer to match mean_weights (2, 3, 5). Got shape (4, 7)",
        ),
        (np.full((2, 3, 5), 0.2), np.ones((3, 5)), "'router_weights' parameter of consistency"),
        (
            np.full((2, 3, 5), np.nan),
            [np.ones((5, 7))] * 3,
            "must be finite. Got NaN or inf values instead.",
        ),
    ],
)
def test_bad_input(mean_weights, routers, message):
    with pytest.raises(InputError) as info:
        pw.consistency(mean_weights, routers)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
