"""Pathways against a plain loop reference of SPEC §1, plus ties, thresholds and bad input."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import pathwatch as pw
from pathwatch.errors import InputError
from pathwatch.metrics import Pathways


def reference_pathways(mean_weights, threshold):
    """Per sample and layer: sort by weight (ties: lower id first), keep until the sum exceeds."""
    result = []
    for sample in mean_weights:
        layers = []
        for row in sample:
            ranked = sorted(range(len(row)), key=lambda e: (-row[e], e))
            kept, total = [], 0.0
            for e in ranked:
                kept.append(e)
                total += row[e]
                if total > threshold:
                    break
            layers.append(tuple(kept))
        result.append(tuple(layers))
    return result


def random_weights(rng, n, n_layers, n_experts, temperature=1.0):
    logits = rng.normal(size=(n, n_layers, n_experts)) / temperature
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (w / w.sum(axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.8, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(threshold, seed):
    w = random_weights(np.random.default_rng(seed), 20, 4, 8, temperature=0.5)
    p = pw.pathways(w, threshold)
    assert list(p) == reference_pathways(w.astype(np.float64), threshold)
    assert [p[i] for i in range(len(p))] == list(p)


@pytest.mark.parametrize("chunk", [1, 70, 2**22])
def test_chunks_do_not_change_the_result(monkeypatch, chunk):
    module = importlib.import_module("pathwatch.metrics.pathways")

    w = random_weights(np.random.default_rng(9), 23, 3, 8)
    w[5, 1] = 0.0
    w[5, 1, :4] = 0.25  # a wide layer in one chunk only
    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", chunk)
    p = pw.pathways(w, 0.9)
    assert list(p) == reference_pathways(w.astype(np.float64), 0.9)


@settings(max_examples=60, deadline=None)
@given(
    w=arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 6)),
        # few distinct values: many ties
        elements=st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5]),
    ),
    threshold=st.sampled_from([0.5, 0.6, 0.7, 0.8, 1.0]),
)
def test_matches_reference_with_ties(w, threshold):
    assert list(pw.pathways(w, threshold)) == reference_pathways(w, threshold)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), threshold=st.floats(0.5, 0.8))
def test_equivariant_to_sample_order_and_expert_labels(seed, threshold):
    rng = np.random.default_rng(seed)
    w = random_weights(rng, 12, 3, 10).astype(np.float64)  # continuous: no ties
    p = pw.pathways(w, threshold)
    order = rng.permutation(12)
    assert list(pw.pathways(w[order], threshold)) == [p[i] for i in order]
    # relabel experts: column k of the new weights is expert labels[k] of the old ones
    labels = rng.permutation(10)
    relabelled = pw.pathways(w[..., labels], threshold)
    assert list(relabelled) == [
        tuple(tuple(int(np.flatnonzero(labels == e)[0]) for e in layer) for layer in path)
        for path in p
    ]


def test_ties_keep_lower_id_first():
    w = np.array([[[0.3, 0.2, 0.3, 0.2]]])
    assert pw.pathways(w, 0.7)[0] == ((0, 2, 1),)
    assert pw.pathways(w, 0.5)[0] == ((0, 2),)


def test_top_expert_alone_passes_threshold():
    w = np.array([[[0.05, 0.9, 0.05], [0.4, 0.35, 0.25]]])
    assert pw.pathways(w, 0.7)[0] == ((1,), (0, 1))


def test_cumulative_equal_to_threshold_does_not_exceed():
    w = np.array([[[0.5, 0.25, 0.25]]])
    assert pw.pathways(w, 0.75)[0] == ((0, 1, 2),)


def test_higher_threshold_keeps_a_longer_prefix():
    w = random_weights(np.random.default_rng(3), 30, 3, 16)
    low, high = pw.pathways(w, 0.5), pw.pathways(w, 0.8)
    for a, b in zip(low, high, strict=True):
        for la, lb in zip(a, b, strict=True):
            assert lb[: len(la)] == la


def test_pathway_string_and_container():
    w = np.array([[[0.1, 0.6, 0.3], [0.8, 0.15, 0.05]], [[0.2, 0.2, 0.6], [0.0, 0.0, 1.0]]])
    p = pw.pathways(w)
    assert pw.pathway_string(p[0]) == "1,2-0"
    assert p.strings() == ["1,2-0", "2,0-2"]
    assert p.expert_sequences() == [[1, 2, -1, 0], [2, 0, -1, 2]]
    assert p.layer_lists(0) == [(1, 2), (2, 0)]
    assert p.layer_lists(1) == [(0,), (2,)]
    assert p[[1]].strings() == ["2,0-2"]
    assert p[np.array([False, True])] == p[1:]
    assert Pathways.from_lists(["1,2-0", [[2, 0], [2]]]) == p
    assert pw.pathway_string([[3, 1, 5], [9, 1]]) == "3,1,5-9,1"
    assert len(p) == 2 and p.n_layers == 2


def test_empty_input_gives_empty_pathways():
    p = pw.pathways(np.zeros((0, 3, 4)))
    assert len(p) == 0 and p.strings() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"threshold": 0},
            "The 'threshold' parameter of pathways must be a float in (0, 1]. Got 0 instead.",
        ),
        (
            {"threshold": 1.5},
            "The 'threshold' parameter of pathways must be a float in (0, 1]. Got 1.5 instead.",
        ),
        ({"threshold": float("nan")}, "'threshold' parameter of pathways"),
        ({"threshold": "0.7"}, "'threshold' parameter of pathways"),
        (
            {"mean_weights": np.full((3, 4), 0.25)},
            "for one sample pass mean_weights[None]. Got (3, 4)",
        ),
        (
            {"mean_weights": np.ones(4)},
            "The 'mean_weights' parameter of pathways must be an array of shape",
        ),
        ({"mean_weights": np.ones((2, 0, 4))}, "L, E >= 1. Got (2, 0, 4) instead."),
        ({"mean_weights": np.full((1, 1, 2), np.nan)}, "must be finite and non-negative"),
        ({"mean_weights": -np.ones((1, 1, 2))}, "must be finite and non-negative"),
        ({"mean_weights": [["a", "b"]]}, "must be a numeric array"),
    ],
)
def test_bad_input(kwargs, message):
    args = {"mean_weights": np.full((1, 2, 4), 0.25), "threshold": 0.7, **kwargs}
    with pytest.raises(InputError) as info:
        pw.pathways(args["mean_weights"], args["threshold"])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("pathways", "message"),
    [
        ([[[0], [1]], [[0]]], "pathways with the same number of layers"),
        ([[[0], []]], "at least one expert id per layer. Got [(0,), ()] instead."),
        ([[[0], [-2]]], "'ids' parameter of Pathways must be non-negative expert ids"),
        (["1,x-2"], "pathway strings such as '3,1,5-9,1'. Got '1,x-2' instead."),
    ],
)
def test_bad_pathways(pathways, message):
    with pytest.raises(InputError) as info:
        Pathways.from_lists(pathways)
    assert message in str(info.value)


def test_bad_constructor_arrays():
    with pytest.raises(InputError, match=r"'counts' parameter of Pathways must be in \[1, 2\]"):
        Pathways(np.zeros((1, 1, 2), int), np.array([[3]]))
    with pytest.raises(InputError, match="'ids' parameter of Pathways must be an integer array"):
        Pathways(np.zeros((1, 2)), np.array([[1]]))
