"""capture(weights="topk"): per token only the top-k experts' probabilities, against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pathwatch as pw
from pathwatch.errors import InputError
from tiny_models import FAMILIES, VOCAB, build_tiny_model

ATOL = 1e-5
SOFTMAX_GATED = [f for f in FAMILIES if f not in ("deepseek_v3", "glm4_moe", "dots1")]


def _samples(n: int = 6) -> list[list[int]]:
    rng = np.random.default_rng(3)
    return [rng.integers(4, VOCAB, size=int(k)).tolist() for k in rng.integers(2, 15, size=n)]


def test_topk_matches_olmoes_own_renormalized_router_scores():
    """Oracle: OLMoE's router returns (logits, top-k scores, indices); with norm_topk_prob=True the
    scores are the renormalized top-k probabilities. Scattered into E and averaged over tokens."""
    model = build_tiny_model("olmoe", norm_topk_prob=True)
    routers = [layer.mlp.gate for layer in model.model.layers]
    samples = _samples()
    expected, outputs = [], []
    handles = [r.register_forward_hook(lambda m, a, o: outputs.append(o)) for r in routers]
    for ids in samples:
        outputs.clear()
        with torch.no_grad():
            model(torch.tensor([ids]))
        dense = [
            torch.zeros_like(logits).scatter(-1, idx, scores.float())
            for logits, scores, idx in outputs
        ]
        expected.append(torch.stack(dense).mean(dim=1).numpy())  # (L, E)
    for h in handles:
        h.remove()
    cap = pw.capture(model, samples, batch_size=4, weights="topk")
    np.testing.assert_allclose(cap.mean_weights, np.stack(expected), rtol=0, atol=ATOL)


@pytest.mark.parametrize("family", SOFTMAX_GATED)
def test_topk_keeps_k_experts_per_token_renormalized(tiny_models, family):
    model = tiny_models[family]
    samples = _samples()
    k = model.config.num_experts_per_tok
    expected = []
    for ids in samples:
        with torch.no_grad():
            logits = model(torch.tensor([ids]), output_router_logits=True).router_logits
        probs = torch.softmax(torch.stack([x.float() for x in logits]), dim=-1)  # (L, S, E)
        top, idx = probs.topk(k, dim=-1)
        dense = torch.zeros_like(probs).scatter(-1, idx, top / top.sum(-1, keepdim=True))
        expected.append(dense.mean(dim=1).numpy())
    cap = pw.capture(model, samples, batch_size=3, padding_side="left", weights="topk")
    np.testing.assert_allclose(cap.mean_weights, np.stack(expected), rtol=0, atol=ATOL)
    np.testing.assert_allclose(cap.mean_weights.sum(-1), 1.0, atol=ATOL)
    softmax = pw.capture(model, samples)
    assert not np.allclose(cap.mean_weights, softmax.mean_weights)


def test_weights_is_checked(tiny_models):
    with pytest.raises(InputError, match="weights"):
        pw.capture(tiny_models["olmoe"], [[5, 6]], weights="top2")
    with pytest.raises(InputError, match="'weights' parameter"):
        pw.capture(tiny_models["olmoe"], [[5, 6]], virtual_experts=4, weights="topk")


def test_capture_run_records_the_weighting_and_refuses_to_mix_them(captured_testbed, tmp_path):
    from pathwatch.capture.run import capture_run
    from pathwatch.config import CaptureConfig
    from pathwatch.store import RunStore

    checkpoints = list(captured_testbed.testbed.checkpoints[-2:])
    out = tmp_path / "topk"
    store = capture_run(
        checkpoints,
        captured_testbed.samples,
        out,
        config=CaptureConfig(weights="topk"),
        progress=False,
    )
    assert RunStore(out).manifest.settings.weights == "topk"
    softmax = RunStore(captured_testbed.run)
    assert softmax.manifest.settings.weights == "softmax"
    step = store.steps[-1]
    topk_weights = store.load_checkpoint(step).mean_weights
    assert not np.allclose(topk_weights, softmax.load_checkpoint(step).mean_weights)
    # every token keeps top_k experts, so a sample uses at least top_k of them
    assert ((topk_weights > 0).sum(-1) >= store.manifest.model.top_k).all()
    with pytest.raises(InputError, match=r"settings\.weights = 'topk', not 'softmax'"):
        capture_run(checkpoints, captured_testbed.samples, out, progress=False)
    with pytest.raises(InputError, match="weights"):
        CaptureConfig(weights="top")
