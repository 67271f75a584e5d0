"""Virtual pathways of dense models (an extension beyond the paper): definition, invariances, runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pathwatch as pw
from pathwatch.analysis import analyze_run
from pathwatch.capture.run import capture_run
from pathwatch.capture.virtual import (
    FILE,
    VirtualExperts,
    dense_mlps,
    fit_virtual_experts,
    read_virtual_experts,
)
from pathwatch.config import CaptureConfig
from pathwatch.errors import InputError, UnsupportedModelError
from pathwatch.store import RunStore
from tiny_models import VOCAB, build_tiny_dense_model, build_tiny_model, build_tiny_tokenizer

ATOL = 1e-5
K = 4


@pytest.fixture(scope="module")
def dense() -> torch.nn.Module:
    return build_tiny_dense_model()


@pytest.fixture(scope="module")
def experts(dense: torch.nn.Module) -> VirtualExperts:
    return fit_virtual_experts(dense, K)


def id_samples(n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(4, VOCAB, rng.integers(2, 12)).tolist() for _ in range(n)]


def reference_weights(
    model: torch.nn.Module, experts: VirtualExperts, ids: list[int]
) -> np.ndarray:
    """Plain definition, one unpadded sample: per token and cluster, share of |activation| mass."""
    inputs = []
    handles = [
        m.down.register_forward_pre_hook(lambda _m, args: inputs.append(args[0][0].numpy()))
        for m in dense_mlps(model)
    ]
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    out = np.zeros((len(inputs), experts.n_experts))
    for layer, acts in enumerate(inputs):
        for token in np.abs(acts):
            for k in range(experts.n_experts):
                out[layer, k] += token[experts.assignment[layer] == k].sum() / token.sum()
    return out / len(ids)


def test_fit_is_deterministic_and_every_cluster_has_neurons(dense, experts) -> None:
    again = fit_virtual_experts(build_tiny_dense_model(), K)
    np.testing.assert_array_equal(experts.assignment, again.assignment)
    assert experts.assignment.shape == (4, 64) and experts.layers == (0, 1, 2, 3)
    assert experts.n_experts == K
    for labels in experts.assignment:
        assert np.bincount(labels, minlength=K).min() >= 1
    other_seed = fit_virtual_experts(dense, K, seed=1)
    assert not np.array_equal(experts.assignment, other_seed.assignment)


def test_clusters_group_neurons_that_read_similar_directions() -> None:
    model = build_tiny_dense_model()
    mlp = dense_mlps(model)[0]
    directions = torch.eye(64)[:K] * 3  # K well-separated directions, 16 noisy neurons each
    with torch.no_grad():
        rows = directions.repeat_interleave(16, dim=0) + 0.05 * torch.randn(64, 64)
        mlp.inputs.weight.copy_(rows)
    labels = fit_virtual_experts(model, K).assignment[0]
    groups = labels.reshape(K, 16)
    assert all(len(set(g)) == 1 for g in groups) and len(set(groups[:, 0])) == K


def test_capture_matches_the_plain_definition(dense, experts) -> None:
    samples = id_samples(5)
    cap = pw.capture(dense, samples, virtual_experts=experts, batch_size=3)
    assert cap.family == "virtual" and cap.layers == [0, 1, 2, 3]
    assert cap.mean_weights.shape == (5, 4, K) and cap.mean_weights.dtype == np.float32
    np.testing.assert_allclose(cap.mean_weights.sum(-1), 1, atol=ATOL)
    for i, ids in enumerate(samples):
        np.testing.assert_allclose(
            cap.mean_weights[i], reference_weights(dense, experts, ids), atol=ATOL
        )


def test_loss_equals_transformers_own(dense, experts) -> None:
    samples = id_samples(4, seed=1)
    cap = pw.capture(dense, samples, virtual_experts=experts, batch_size=4)
    with torch.no_grad():
        own = [float(dense(torch.tensor([s]), labels=torch.tensor([s])).loss) for s in samples]
    np.testing.assert_allclose(cap.loss, own, rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(2, 14), min_size=1, max_size=6),
    batch_size=st.integers(1, 6),
    padding_side=st.sampled_from(["right", "left"]),
)
def test_weights_do_not_depend_on_padding_or_batch_composition(
    dense, experts, lengths, batch_size, padding_side
) -> None:
    rng = np.random.default_rng(len(lengths))
    samples = [rng.integers(4, VOCAB, n).tolist() for n in lengths]
    alone = np.stack(
        [pw.capture(dense, [s], virtual_experts=experts).mean_weights[0] for s in samples]
    )
    batched = pw.capture(
        dense, samples, virtual_experts=experts, batch_size=batch_size, padding_side=padding_side
    )
    np.testing.assert_allclose(batched.mean_weights, alone, atol=ATOL)


def test_router_weights_are_the_mean_input_row_of_each_cluster(dense, experts) -> None:
    cap = pw.capture(dense, id_samples(2), virtual_experts=experts)
    rows = dense_mlps(dense)[2].inputs.weight.detach().numpy()
    expected = np.stack([rows[experts.assignment[2] == k].mean(0) for k in range(K)])
    np.testing.assert_allclose(cap.router_weights[2], expected, atol=1e-6)
    assert pw.consistency(cap.mean_weights, cap.router_weights).shape == (2,)


def test_an_int_fits_the_clusters_on_the_model(dense, experts) -> None:
    samples = id_samples(3)
    np.testing.assert_array_equal(
        pw.capture(dense, samples, virtual_experts=K).mean_weights,
        pw.capture(dense, samples, virtual_experts=experts).mean_weights,
    )


def test_hooks_are_removed(dense, experts) -> None:
    pw.capture(dense, id_samples(2), virtual_experts=experts)
    assert all(not m.down._forward_pre_hooks for m in dense_mlps(dense))


@pytest.mark.parametrize(
    ("make", "virtual", "error", "match"),
    [
        (build_tiny_dense_model, None, UnsupportedModelError, r"virtual_experts=8"),
        (lambda: build_tiny_model("mixtral"), K, UnsupportedModelError, r"no dense MLP"),
        (build_tiny_dense_model, 1, InputError, r"'n_experts' parameter .* \[2, 64\]"),
        (build_tiny_dense_model, 65, InputError, r"'n_experts' parameter .* \[2, 64\]"),
        (
            lambda: build_tiny_dense_model(),
            VirtualExperts(np.zeros((3, 64), np.int64), (0, 1, 2)),
            UnsupportedModelError,
            r"do not fit a model with MLP layers \[0, 1, 2, 3\]",
        ),
    ],
)
def test_bad_input_is_one_line(make, virtual, error, match) -> None:
    with pytest.raises(error, match=match) as info:
        pw.capture(make(), [[5, 6, 7]], virtual_experts=virtual)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def dense_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("dense")
    tokenizer = build_tiny_tokenizer()
    dirs = []
    for seed, step in enumerate((100, 200)):
        path = root / f"step-{step}"
        build_tiny_dense_model(seed=seed).save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs.append(path)
    samples = root / "samples.jsonl"
    samples.write_text(
        "".join(
            f'{{"id": "s{i}", "domain": "{"ab"[i % 2]}", "text": "the cat sat {i} {i + 1}"}}\n'
            for i in range(10)
        )
    )
    return dirs, samples


def test_run_stores_the_clusters_of_the_first_checkpoint_and_reuses_them(
    dense_series, tmp_path
) -> None:
    dirs, samples = dense_series
    store = capture_run(
        dirs, samples, tmp_path / "run", config=CaptureConfig(virtual_experts=K), progress=False
    )
    manifest = store.manifest
    assert manifest.model.family == "virtual" and manifest.model.n_experts == K
    assert manifest.model.moe_layers == (0, 1, 2, 3) and manifest.model.top_k is None
    stored = read_virtual_experts(store)
    first = build_tiny_dense_model(seed=0)
    second = build_tiny_dense_model(seed=1)
    np.testing.assert_array_equal(stored.assignment, fit_virtual_experts(first, K).assignment)
    assert not np.array_equal(stored.assignment, fit_virtual_experts(second, K).assignment)
    # the later checkpoint is read through the first checkpoint's clusters
    for got, want in zip(store.router_weights(200), stored.router_weights(second), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    texts = store.samples()["text"].to_list()
    tokenizer = build_tiny_tokenizer()
    direct = pw.capture(second, texts, tokenizer, virtual_experts=stored)
    np.testing.assert_allclose(
        store.load_checkpoint(200).mean_weights, direct.mean_weights, atol=ATOL
    )

    # resume: a lost unit is redone with the stored clusters, which are not rewritten
    before = (store.path / FILE).stat().st_mtime_ns
    unit = next(store.path.glob("units/step-00000200/*.safetensors"))
    unit.unlink()
    again = capture_run(
        dirs, samples, store.path, config=CaptureConfig(virtual_experts=K), progress=False
    )
    assert (store.path / FILE).stat().st_mtime_ns == before
    np.testing.assert_array_equal(
        again.load_checkpoint(200).mean_weights, store.load_checkpoint(200).mean_weights
    )
    analysis = analyze_run(store.path, progress=False)
    assert analysis.tables["group_metrics"].height > 0


def test_run_with_another_k_is_refused(dense_series, tmp_path) -> None:
    dirs, samples = dense_series
    capture_run(
        dirs[:1], samples, tmp_path / "run", config=CaptureConfig(virtual_experts=K), progress=False
    )
    with pytest.raises(InputError, match=r"model\.n_experts = 4, not 3"):
        capture_run(
            dirs[:1],
            samples,
            tmp_path / "run",
            config=CaptureConfig(virtual_experts=3),
            progress=False,
        )
    with pytest.raises(InputError, match=r"'virtual_experts' parameter of capture_run"):
        capture_run(
            dirs[:1],
            samples,
            tmp_path / "other",
            config=CaptureConfig(virtual_experts=65),
            progress=False,
        )


def test_cli_captures_a_dense_model(dense_series, tmp_path, monkeypatch, capsys) -> None:
    from pathwatch.cli import main

    dirs, samples = dense_series
    args = ["capture", "--samples", samples, "--out", tmp_path / "run", "--no-progress"]
    args += ["--virtual-experts", "3", *[a for d in dirs for a in ("--checkpoint", d)]]
    monkeypatch.setattr(sys, "argv", ["pathwatch", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    assert "virtual model (4 MoE layers, 3 experts (virtual))" in capsys.readouterr().out
    assert RunStore(tmp_path / "run").load_checkpoint(100).mean_weights.shape == (10, 4, 3)
