"""Routing churn against plain loops over scipy's Jensen–Shannon distance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from pathwatch.errors import InputError
from pathwatch.metrics.churn import group_churn, mean_divergence, routing_churn


def _routing(seed: int, n: int, layers: int, experts: int, sparse: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.full(experts, 0.3), size=(n, layers))
    if sparse:  # experts that get no weight at all (top-k weights)
        w[w < 0.1] = 0
        w[..., 0] += 1e-3
        w /= w.sum(axis=-1, keepdims=True)
    return w


def _loop_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Layer-mean JS divergence of one sample pair, one layer at a time, by scipy."""
    return float(np.mean([jensenshannon(a, b, base=2) ** 2 for a, b in zip(p, q, strict=True)]))


shapes = st.tuples(
    st.integers(1, 6), st.integers(1, 4), st.integers(2, 9), st.integers(0, 10**6), st.booleans()
)


@settings(max_examples=60, deadline=None)
@given(shapes)
def test_churn_matches_a_loop_over_scipy(shape):
    n, layers, experts, seed, sparse = shape
    before = _routing(seed, n, layers, experts, sparse)
    after = _routing(seed + 1, n, layers, experts, sparse)
    expected = [_loop_divergence(before[i], after[i]) for i in range(n)]
    np.testing.assert_allclose(routing_churn(before, after), expected, atol=1e-12)
    np.testing.assert_array_equal(routing_churn(before, before), np.zeros(n))
    np.testing.assert_allclose(routing_churn(after, before), expected, atol=1e-12)  # symmetric


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(1, 5))
def test_mean_divergence_matches_a_loop_over_pairs(shape, m):
    n, layers, experts, seed, sparse = shape
    a = _routing(seed, n, layers, experts, sparse)
    b = _routing(seed + 7, m, layers, experts, sparse)
    within = [_loop_divergence(a[i], a[j]) for i, j in itertools.combinations(range(n), 2)]
    cross = [_loop_divergence(a[i], b[j]) for i in range(n) for j in range(m)]
    assert mean_divergence(a) == pytest.approx(np.mean(within) if within else np.nan, nan_ok=True)
    assert mean_divergence(a, b) == pytest.approx(np.mean(cross))


def test_sampled_divergence_estimates_the_exact_one():
    a = _routing(3, 60, 3, 8, False)
    exact = mean_divergence(a)
    sampled = mean_divergence(a, max_pairs=1000, seed=1)
    assert sampled != exact and sampled == pytest.approx(exact, rel=0.05)
    assert mean_divergence(a, max_pairs=1000, seed=1) == sampled  # reproducible


def test_group_churn_keeps_members_whose_loss_stayed_within_delta():
    churn = np.array([0.1, 0.2, 0.9, np.nan])
    moved = np.array([0.0, 0.05, 0.06, 0.0])
    assert group_churn(churn, moved, 0.05) == pytest.approx((0.15, 2))
    assert group_churn(churn, moved, np.array([0.0, 0.0, 0.1, 0.1])) == pytest.approx((0.5, 2))
    value, n = group_churn(churn, moved, -0.0)
    assert (value, n) == (pytest.approx(0.1), 1)
    assert np.isnan(group_churn(churn[:0], moved[:0], 0.05)[0])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: routing_churn(np.ones((2, 3)), np.ones((2, 3))), "shape \\(N, L, E\\)"),
        (lambda: routing_churn(np.ones((2, 1, 3)), np.ones((3, 1, 3))), "'after' parameter"),
        (lambda: group_churn([0.1], [0.1, 0.2], 0.05), "'loss_moved' parameter"),
        (lambda: group_churn([0.1], [0.1], -1.0), "'delta' parameter"),
        (lambda: mean_divergence(np.ones((2, 1, 3)), np.ones((2, 2, 3))), "'b' parameter"),
        (lambda: mean_divergence(np.ones((2, 1, 3)), max_pairs=0), "'max_pairs' parameter"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()
