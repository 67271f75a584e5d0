"""Pathway distance against a dynamic-programming Levenshtein, brute-force pairs and properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pathwatch as pw
from pathwatch.errors import InputError
from pathwatch.metrics import Pathways, pairwise_distance_stats


def levenshtein(a, b):
    """Textbook dynamic programme: insertions, deletions and substitutions cost 1."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def symbols(pathway, unit):
    """The paper's string for unit char; ids with a boundary marker for unit expert."""
    if unit == "char":
        return "-".join(",".join(str(e) for e in layer) for layer in pathway)
    return [s for layer in pathway for s in ("|", *layer)][1:]


def brute_mean(pathways, unit):
    pairs = list(itertools.combinations(pathways, 2))
    return sum(levenshtein(symbols(a, unit), symbols(b, unit)) for a, b in pairs) / len(pairs)


layer_st = st.lists(st.integers(0, 20), min_size=1, max_size=4)
pathway_st = st.integers(1, 3).flatmap(lambda n: st.lists(layer_st, min_size=n, max_size=n))
units = st.sampled_from(["char", "expert"])


def random_pathways(seed, n, n_layers=3, n_experts=12, threshold=0.7):
    rng = np.random.default_rng(seed)
    return pw.pathways(rng.dirichlet(np.full(n_experts, 0.3), size=(n, n_layers)), threshold)


@settings(max_examples=150, deadline=None)
@given(a=pathway_st, b=pathway_st, unit=units)
def test_pair_matches_dynamic_programme(a, b, unit):
    assert pw.pathway_distance(a, b, unit) == levenshtein(symbols(a, unit), symbols(b, unit))


@settings(max_examples=100, deadline=None)
@given(a=pathway_st, b=pathway_st, c=pathway_st, unit=units)
def test_metric_properties(a, b, c, unit):
    d = pw.pathway_distance
    assert d(a, a, unit) == 0
    assert d(a, b, unit) == d(b, a, unit)
    assert d(a, c, unit) <= d(a, b, unit) + d(b, c, unit)
    assert (d(a, b, unit) == 0) == (a == b)


@settings(max_examples=30, deadline=None)
@given(
    paths=st.lists(st.lists(layer_st, min_size=2, max_size=2), min_size=2, max_size=8),
    seed=st.integers(0, 99),
)
def test_mean_is_invariant_to_sample_order(paths, seed):
    shuffled = [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))]
    for unit in ("char", "expert"):
        assert pw.mean_pairwise_distance(shuffled, unit) == pytest.approx(
            pw.mean_pairwise_distance(paths, unit), rel=1e-12
        )
        assert pw.mean_pairwise_distance(paths, unit) == pytest.approx(brute_mean(paths, unit))


def brute_sum_over_pairs(pathways, unit):
    """Σ over i < j of the distance: the plain double loop the merged computation must equal."""
    total = 0
    for i in range(len(pathways)):
        for j in range(i + 1, len(pathways)):
            total += levenshtein(symbols(pathways[i], unit), symbols(pathways[j], unit))
    return total


@settings(max_examples=60, deadline=None)
@given(
    distinct=st.lists(st.lists(layer_st, min_size=2, max_size=2), min_size=1, max_size=6),
    picks=st.lists(st.integers(0, 5), min_size=2, max_size=25),
    unit=units,
    block_bytes=st.sampled_from([1, 64, 16 * 2**20]),
)
def test_exact_mean_with_duplicates_equals_the_double_loop(distinct, picks, unit, block_bytes):
    # many copies of few pathways: merged strings weighted by multiplicity, in any block size
    import pathwatch.metrics.distance as distance

    paths = [distinct[k % len(distinct)] for k in picks]
    n_pairs = len(paths) * (len(paths) - 1) // 2
    want = brute_sum_over_pairs(paths, unit) / n_pairs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distance, "_BLOCK_BYTES", block_bytes)
        s = pairwise_distance_stats(paths, unit)
        layers = pw.layer_distances(paths, unit)
    assert s.exact and s.n_pairs == n_pairs
    assert abs(s.mean - want) <= 1e-9
    for layer in range(2):
        one = [[p[layer]] for p in paths]
        assert abs(layers[layer] - brute_sum_over_pairs(one, unit) / n_pairs) <= 1e-9


def test_unit_expert_strings_have_one_symbol_per_expert_and_boundary():
    p = Pathways.from_lists([[[0, 55_296], [3]], [[55_296], [3]], [[2**20], [3]]])
    symbols_ = p.sequences("expert")
    assert [len(x) for x in symbols_] == [4, 3, 3]  # ids past the surrogate block stay one symbol
    assert len({*symbols_[0]}) == 4
    assert pw.pathway_distance(p[0], p[1], "expert") == 1
    assert p[[2, 0]].sequences("expert").tolist() == [symbols_[2], symbols_[0]]


def test_known_values():
    assert pw.pathway_distance([[3, 1, 5], [9, 1]], "3,1,5-9,1") == 0
    assert pw.pathway_distance([[12, 3], [5]], [[3], [5]]) == 3
    assert pw.pathway_distance([[12, 3], [5]], [[3], [5]], unit="expert") == 1
    # a layer boundary is one symbol: moving an expert across it costs 2 in unit expert
    assert pw.pathway_distance([[1, 2], [3]], [[1], [2, 3]], unit="expert") == 2
    # no ordering between the units: "1,2" -> "12" is 1 char edit but 2 expert edits
    assert pw.pathway_distance([[1, 2]], [[12]]) == 1
    assert pw.pathway_distance([[1, 2]], [[12]], unit="expert") == 2


@pytest.mark.parametrize("unit", ["char", "expert"])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_mean_equals_brute_force(unit, seed):
    p = random_pathways(seed, 40)
    assert pw.mean_pairwise_distance(p, unit) == pytest.approx(brute_mean(list(p), unit), rel=1e-12)
    assert pw.mean_pairwise_distance(list(p), unit, workers=1) == pw.mean_pairwise_distance(p, unit)


@pytest.mark.parametrize("block_bytes", [1, 7 * 40 * 2, 10**9])
def test_blocks_do_not_change_the_exact_sum(monkeypatch, block_bytes):
    import pathwatch.metrics.distance as distance

    p = random_pathways(4, 40)
    monkeypatch.setattr(distance, "_BLOCK_BYTES", block_bytes)
    assert pw.mean_pairwise_distance(p) == pytest.approx(brute_mean(list(p), "char"), rel=1e-12)


def test_exact_stats_collapse_and_count_pairs():
    p = random_pathways(5, 25)
    s = pairwise_distance_stats(p, "expert")
    assert s.exact and s.n_pairs == 300 and s.n_samples == 25
    assert s.ci_low == s.mean == s.ci_high
    # asking for at least all pairs is exact too
    assert pairwise_distance_stats(p, "expert", max_pairs=10_000) == s


@pytest.mark.parametrize("unit", ["char", "expert"])
def test_sampled_ci_covers_exact_mean(unit):
    p = random_pathways(6, 300)
    exact = pw.mean_pairwise_distance(p, unit)
    seeds = range(10)
    hits = 0
    for seed in seeds:
        s = pairwise_distance_stats(p, unit, max_pairs=2_000, seed=seed)
        assert not s.exact and s.n_pairs == 2_000
        assert s.ci_low < s.mean < s.ci_high
        assert abs(s.mean - exact) < 0.1 * exact
        hits += s.ci_low <= exact <= s.ci_high
    assert hits >= 7


def test_sampling_is_deterministic_and_uniform_over_distinct_pairs():
    from pathwatch.metrics.distance import _sample_pairs

    first, second = _sample_pairs(30, 435, seed=3)
    assert np.all(first < second) and np.all(second < 30)
    assert len(set(zip(first.tolist(), second.tolist(), strict=True))) == 435
    a = pairwise_distance_stats(random_pathways(7, 50), max_pairs=100, seed=11)
    b = pairwise_distance_stats(random_pathways(7, 50), max_pairs=100, seed=11)
    assert a == b
    # large n: the closed-form inverse of the pair index stays exact
    first, second = _sample_pairs(50_000, 10_000, seed=0)
    k = second * (second - 1) // 2 + first
    assert np.all((first >= 0) & (first < second) & (second < 50_000))
    assert len(np.unique(k)) == 10_000


def test_sampled_pairs_are_uniform():
    from pathwatch.metrics.distance import _sample_pairs

    counts = np.zeros((6, 6))
    for seed in range(300):
        i, j = _sample_pairs(6, 5, seed)
        np.add.at(counts, (i, j), 1)
    upper = counts[np.triu_indices(6, 1)]
    assert upper.sum() == 1500
    assert upper.min() > 60 and upper.max() < 140  # expectation 100 each


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_samples_is_nan(n):
    p = random_pathways(0, n)
    assert np.isnan(pw.mean_pairwise_distance(p))
    assert pairwise_distance_stats(p).n_pairs == 0
    assert np.isnan(pw.layer_distances(p)).all() and pw.layer_distances(p).shape == (3,)


@pytest.mark.parametrize("unit", ["expert", "char"])
def test_layer_distances_match_brute_force(unit):
    p = random_pathways(8, 30, n_layers=4)
    got = pw.layer_distances(p, unit)
    want = [brute_mean([(path[layer],) for path in p], unit) for layer in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    sampled = pw.layer_distances(p, unit, max_pairs=200, seed=1)
    assert sampled.shape == (4,) and np.all(np.abs(sampled - got) < 0.5 * got + 0.5)


def test_identical_pathways_have_zero_distance():
    p = Pathways.from_lists(["3,1-5"] * 5)
    assert pw.mean_pairwise_distance(p) == 0.0
    np.testing.assert_array_equal(pw.layer_distances(p), [0.0, 0.0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda p: pw.pathway_distance([[1]], [[2]], unit="chars"),
            "Unknown unit of pathway_distance 'chars'. Did you mean 'char'? Valid: char, expert.",
        ),
        (
            lambda p: pw.mean_pairwise_distance(p, "token"),
            "Unknown unit of pairwise_distance_stats 'token'.",
        ),
        (
            lambda p: pw.mean_pairwise_distance(p, max_pairs=0),
            "The 'max_pairs' parameter of pairwise_distance_stats must be None or an int >= 1. Got 0 instead.",
        ),
        (lambda p: pw.mean_pairwise_distance(p, max_pairs=2.5), "'max_pairs' parameter"),
        (
            lambda p: pw.mean_pairwise_distance(p, seed=-1),
            "The 'seed' parameter of pairwise_distance_stats must be an int >= 0.",
        ),
        (
            lambda p: pw.mean_pairwise_distance(p, workers=0),
            "'workers' parameter of pairwise_distance_stats must be an int >= 1, or -1 for all cores",
        ),
        (
            lambda p: pairwise_distance_stats(p, layer=3),
            "The 'layer' parameter of pairwise_distance_stats must be None or an int in [0, 3). Got 3 instead.",
        ),
        (
            lambda p: pw.layer_distances(p, "bytes"),
            "Unknown unit of pairwise_distance_stats 'bytes'.",
        ),
        (
            lambda p: pw.mean_pairwise_distance([[[1]], [[1], [2]]]),
            "pathways with the same number of layers",
        ),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(InputError) as info:
        call(random_pathways(0, 5))
    assert message in str(info.value)
    assert "\n" not in str(info.value)
