"""Group similarity and the one-to-one assignment against brute force."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pathwatch.dynamics import group_similarity, match_groups
from pathwatch.errors import InputError


def cosine_reference(a, b):
    """Mean cosine over all pairs, one pair at a time."""
    return np.mean([[x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a])


def best_total_reference(sim):
    """Best total similarity of a one-to-one assignment, over every injection of the smaller side."""
    if sim.shape[0] > sim.shape[1]:
        sim = sim.T
    rows = range(sim.shape[0])
    return max(
        sum(sim[r, c] for r, c in zip(rows, perm, strict=True))
        for perm in permutations(range(sim.shape[1]), sim.shape[0])
    )


@st.composite
def grouped_embeddings(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, m, d = draw(st.integers(1, 14)), draw(st.integers(1, 14)), draw(st.integers(2, 5))
    train_on = rng.choice([-1, 100, 200, 300, 400], size=n)
    test_on = rng.choice([-1, 150, 250, 500, 900, 1200], size=m)
    return rng.normal(size=(n, d)), train_on, rng.normal(size=(m, d)), test_on


@settings(max_examples=150, deadline=None)
@given(grouped_embeddings())
def test_similarity_is_mean_pairwise_cosine(case):
    train, train_on, test, test_on = case
    g, h, sim = group_similarity(train, train_on, test, test_on)
    np.testing.assert_array_equal(g, np.unique(train_on[train_on != -1]))
    np.testing.assert_array_equal(h, np.unique(test_on[test_on != -1]))
    for i, a in enumerate(g):
        for j, b in enumerate(h):
            ref = cosine_reference(train[train_on == a], test[test_on == b])
            assert sim[i, j] == pytest.approx(ref, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(grouped_embeddings())
def test_assignment_is_optimal_and_one_to_one(case):
    train, train_on, test, test_on = case
    _, _, sim = group_similarity(train, train_on, test, test_on)
    table = match_groups(train, train_on, test, test_on)
    assert table.height == min(sim.shape)
    assert table["train_group"].n_unique() == table.height == table["test_group"].n_unique()
    if table.height:
        assert table["similarity"].sum() == pytest.approx(best_total_reference(sim), abs=1e-9)
    assert (table["delay"] == table["gen_onset"] - table["mem_onset"]).all()
    assert table["mem_onset"].is_sorted()
    for row in table.iter_rows(named=True):
        assert row["train_group"] == f"train@{row['mem_onset']}"
        assert row["test_group"] == f"test@{row['gen_onset']}"
        assert row["n_train"] == np.count_nonzero(train_on == row["mem_onset"])
        assert row["n_test"] == np.count_nonzero(test_on == row["gen_onset"])


def test_topics_pair_up_and_delays_are_read_off():
    rng = np.random.default_rng(0)
    topics = np.eye(3) * 5
    train = np.repeat(topics, 4, axis=0) + rng.normal(scale=0.3, size=(12, 3))
    test = np.repeat(topics[[2, 0, 1]], 3, axis=0) + rng.normal(scale=0.3, size=(9, 3))
    train_on = np.repeat([1000, 2000, 3000], 4)
    test_on = np.repeat([9000, 4000, 8000], 3)
    table = match_groups(train, train_on, test, test_on)
    assert table.select("mem_onset", "gen_onset", "delay").rows() == [
        (1000, 4000, 3000),
        (2000, 8000, 6000),
        (3000, 9000, 6000),
    ]
    assert (table["similarity"] > 0.9).all()


def test_no_groups_on_one_side_gives_an_empty_table():
    table = match_groups(np.ones((3, 2)), [-1, -1, -1], np.ones((2, 2)), [5, 6])
    assert table.height == 0
    assert table.columns[:7] == [
        "train_group",
        "test_group",
        "mem_onset",
        "gen_onset",
        "delay",
        "similarity",
        "n_train",
    ]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (
            (np.ones((3, 2)), [1, 2], np.ones((2, 2)), [5, 6]),
            r"'train_embeddings' .* shape \(2, D\)",
        ),
        ((np.ones((2, 2)), [1, 2], np.ones((2, 3)), [5, 6]), "same width; got 2 and 3"),
        ((np.array([[1.0, 0], [0, 0]]), [1, 2], np.ones((2, 2)), [5, 6]), "row 1 is zero"),
        ((np.ones((2, 2)), [1.5, 2], np.ones((2, 2)), [5, 6]), "'train_onsets' .* integer"),
        ((np.ones((2, 2)), [1, 2], np.full((2, 2), np.nan), [5, 6]), "row 0 is not finite"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(InputError, match=match):
        match_groups(*args)
