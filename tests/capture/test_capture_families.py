"""Contract of pw.capture over every MoE family, against transformers' own recorded router logits.

The oracle: one unbatched forward per sample with ``output_router_logits=True`` (transformers'
recording, not our hooks), probabilities computed here from the paper's definitions, averaged over
the sample's tokens; the loss is transformers' own ``model(ids, labels=ids).loss``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import OlmoeForCausalLM
from transformers.models.olmoe.modeling_olmoe import OlmoeTopKRouter
from transformers.utils.output_capturing import OutputRecorder

import pathwatch as pw
from pathwatch.capture.families import find_routers
from pathwatch.capture.hooks import RoutingRecorder
from pathwatch.errors import InputError, UnsupportedModelError
from tiny_models import (
    FAMILIES,
    VOCAB,
    build_tiny_dense_model,
    build_tiny_model,
    build_tiny_tokenizer,
)

ATOL = 1e-5


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def _normalized_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x) / torch.sigmoid(x).sum(dim=-1, keepdim=True)


# the paper's per-token probability for each family (sigmoid gates: scores normalized per token)
SIGMOID_GATED = ("deepseek_v3", "glm4_moe", "dots1")
ORACLE_SCORING = {f: _normalized_sigmoid if f in SIGMOID_GATED else _softmax for f in FAMILIES}


def _random_samples(seed: int, n: int = 7, low: int = 2, high: int = 20) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(4, VOCAB, size=int(k)).tolist() for k in rng.integers(low, high, size=n)]


def _oracle(model, family: str, ids: list[int]) -> tuple[np.ndarray, float]:
    """(L, E) mean router probability and mean next-token NLL of one sample, unbatched."""
    tokens = torch.tensor([ids])
    with torch.no_grad():
        logits = model(tokens, output_router_logits=True).router_logits
        loss = model(tokens, labels=tokens).loss.item()
    probs = ORACLE_SCORING[family](torch.stack([x.float() for x in logits]))  # (L, S, E)
    return probs.mean(dim=1).numpy(), loss


def _oracles(model, family: str, samples: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [_oracle(model, family, s) for s in samples]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("padding_side", "batch_size"), [("right", 3), ("left", 4), ("left", 16)])
def test_capture_matches_unbatched_transformers(tiny_models, family, padding_side, batch_size):
    model = tiny_models[family]
    samples = _random_samples(seed=1)
    expected_weights, expected_loss = _oracles(model, family, samples)

    cap = pw.capture(model, samples, batch_size=batch_size, padding_side=padding_side)

    assert cap.family == family
    assert cap.mean_weights.dtype == np.float32
    assert cap.mean_weights.shape == expected_weights.shape
    np.testing.assert_allclose(cap.mean_weights, expected_weights, rtol=0, atol=ATOL)
    np.testing.assert_allclose(cap.loss, expected_loss, rtol=0, atol=ATOL)
    np.testing.assert_allclose(cap.mean_weights.sum(axis=-1), 1.0, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(cap.n_tokens, [len(s) for s in samples])
    assert not cap.truncated.any()


@pytest.mark.parametrize("family", FAMILIES)
def test_router_weights_are_the_routers_matrices(tiny_models, family):
    model = tiny_models[family]
    cap = pw.capture(model, [[5, 6, 7]])
    layers = model.get_decoder().layers
    expected = [layers[i].mlp.gate.weight.detach().numpy() for i in cap.layers]
    assert len(cap.router_weights) == len(cap.layers) == cap.mean_weights.shape[1]
    for got, want in zip(cap.router_weights, expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    assert find_routers(model).summary() == {
        "family": family,
        "model_type": model.config.model_type,
        "n_layers": 4,
        "moe_layers": cap.layers,
        "n_experts": cap.mean_weights.shape[2],
        "top_k": 2,
    }


@pytest.mark.parametrize(
    ("family", "overrides", "layers"),
    [
        ("qwen2_moe", {"mlp_only_layers": [0, 2]}, [1, 3]),
        ("qwen3_moe", {"decoder_sparse_step": 2}, [1, 3]),
        ("qwen3_moe", {"mlp_only_layers": [3]}, [0, 1, 2]),
        ("deepseek_v3", {"first_k_dense_replace": 2}, [2, 3]),
        ("deepseek_v2", {"first_k_dense_replace": 3}, [3]),
    ],
)
def test_partially_dense_models_report_true_layer_indices(family, overrides, layers):
    model = build_tiny_model(family, **overrides)
    samples = _random_samples(seed=2, n=3)
    cap = pw.capture(model, samples, batch_size=2)
    assert cap.layers == layers
    assert find_routers(model).summary()["moe_layers"] == layers
    np.testing.assert_allclose(cap.mean_weights, _oracles(model, family, samples)[0], atol=ATOL)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    batch_size=st.integers(1, 9),
    padding_side=st.sampled_from(["right", "left"]),
)
def test_results_do_not_depend_on_batch_composition_or_order(seed, batch_size, padding_side):
    model = build_tiny_model("olmoe")
    samples = _random_samples(seed, n=9, low=2, high=30)
    alone = pw.capture(model, samples, batch_size=1)
    order = np.random.default_rng(seed).permutation(len(samples))
    mixed = pw.capture(
        model, [samples[i] for i in order], batch_size=batch_size, padding_side=padding_side
    )
    np.testing.assert_allclose(mixed.mean_weights, alone.mean_weights[order], rtol=0, atol=ATOL)
    np.testing.assert_allclose(mixed.loss, alone.loss[order], rtol=0, atol=ATOL)


def test_text_samples_leave_the_prompt_unscored_but_routed(tiny_models):
    model, tokenizer = tiny_models["olmoe"], build_tiny_tokenizer()
    prompt, answer = "1 + 2 =", "3 the cat"
    ids = tokenizer(f"{prompt} {answer}")["input_ids"]
    n_prompt = len(tokenizer(prompt)["input_ids"])
    tokens = torch.tensor([ids])
    with torch.no_grad():
        logits = model(tokens).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, tokens[0, 1:], reduction="none")

    cap = pw.capture(
        model,
        [{"prompt": prompt, "text": f"{prompt} {answer}"}, f"{prompt} {answer}"],
        tokenizer,
        batch_size=2,
    )

    assert cap.loss[0] == pytest.approx(nll[n_prompt - 1 :].mean().item(), abs=ATOL)
    assert cap.loss[1] == pytest.approx(nll.mean().item(), abs=ATOL)
    np.testing.assert_allclose(cap.mean_weights[0], _oracle(model, "olmoe", ids)[0], atol=ATOL)
    np.testing.assert_array_equal(cap.n_tokens, [len(ids), len(ids)])


def test_a_prompt_ending_inside_a_word_changes_no_token(tiny_models):
    model, tokenizer = tiny_models["qwen2_moe"], build_tiny_tokenizer()
    text = "1 + 2 = 35 the cat"
    ids = tokenizer(text)["input_ids"]
    tokens = torch.tensor([ids])
    with torch.no_grad():
        logits = model(tokens).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, tokens[0, 1:], reduction="none")

    cap = pw.capture(model, [{"prompt": "1 + 2 = 3", "text": text}, text], tokenizer)

    # "35" holds a character after the prompt: it and the rest are the scored targets
    assert cap.loss[0] == pytest.approx(nll[-3:].mean().item(), abs=ATOL)
    np.testing.assert_allclose(cap.mean_weights[0], cap.mean_weights[1], rtol=0, atol=ATOL)
    np.testing.assert_array_equal(cap.n_tokens, [len(ids), len(ids)])


def test_loss_mask_selects_scored_targets(tiny_models):
    model = tiny_models["mixtral"]
    ids = [5, 9, 13, 17, 21, 25]
    mask = [1, 0, 0, 1, 1, 0]  # the first token is never a target, whatever its mask
    tokens = torch.tensor([ids])
    with torch.no_grad():
        logits = model(tokens).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, tokens[0, 1:], reduction="none")
    cap = pw.capture(model, [{"input_ids": ids, "loss_mask": mask}])
    assert cap.loss[0] == pytest.approx(nll[[2, 3]].mean().item(), abs=ATOL)


def test_long_samples_are_truncated_and_counted(tiny_models):
    model = tiny_models["qwen3_moe"]
    samples = _random_samples(seed=3, n=4, low=12, high=20)
    with pytest.warns(UserWarning, match="4 of 5 samples were cut"):
        cap = pw.capture(model, [*samples, [7, 8]], max_length=10)
    np.testing.assert_array_equal(cap.truncated, [True] * 4 + [False])
    np.testing.assert_array_equal(cap.n_tokens, [10] * 4 + [2])
    expected, loss = _oracles(model, "qwen3_moe", [s[:10] for s in samples])
    np.testing.assert_allclose(cap.mean_weights[:4], expected, atol=ATOL)
    np.testing.assert_allclose(cap.loss[:4], loss, atol=ATOL)


def test_routers_that_return_probabilities_are_detected(tiny_models):
    """Some transformers releases returned probabilities in place of logits: same result."""
    model = tiny_models["olmoe"]
    samples = _random_samples(seed=4, n=3)
    expected = pw.capture(model, samples).mean_weights

    def to_probabilities(module, args, output):
        return (torch.softmax(output[0], dim=-1), *output[1:])

    routers = find_routers(model)
    handles = [m.register_forward_hook(to_probabilities) for m in routers.modules]
    try:
        with RoutingRecorder(routers) as recorder, torch.no_grad():
            recorder.expect(torch.ones(1, 4, dtype=torch.bool))
            model(torch.tensor([[5, 6, 7, 8]]))
        got = pw.capture(model, samples).mean_weights
    finally:
        for handle in handles:
            handle.remove()
    assert recorder.scorings == ["identity"] * len(routers.modules)
    np.testing.assert_allclose(got, expected, atol=ATOL)


class _RenamedRouter(OlmoeTopKRouter):
    """A router class the family table does not know."""


class _UnknownMoeForCausalLM(OlmoeForCausalLM):
    _can_record_outputs = {"router_logits": OutputRecorder(_RenamedRouter, index=0)}  # noqa: RUF012


def test_unknown_router_class_takes_the_generic_softmax_path(tiny_models):
    known = tiny_models["olmoe"]
    model = _UnknownMoeForCausalLM(known.config).eval()
    model.load_state_dict(known.state_dict())
    for layer in model.model.layers:
        router = _RenamedRouter(model.config)
        router.load_state_dict(layer.mlp.gate.state_dict())
        layer.mlp.gate = router
    samples = _random_samples(seed=5, n=4)
    cap = pw.capture(model, samples, batch_size=3)
    assert cap.family == "generic"
    assert cap.layers == [0, 1, 2, 3]
    np.testing.assert_allclose(
        cap.mean_weights, pw.capture(known, samples).mean_weights, rtol=0, atol=ATOL
    )


def test_dense_model_is_unsupported_and_the_error_names_the_families():
    with pytest.raises(UnsupportedModelError) as info:
        pw.capture(build_tiny_dense_model(), [[5, 6, 7]])
    message = str(info.value)
    assert "\n" not in message
    assert "LlamaForCausalLM" in message
    for family in ("olmoe", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3"):
        assert family in message


def test_config_that_disagrees_with_the_router_weights_is_unsupported():
    model = build_tiny_model("olmoe")
    model.config.num_experts = 7
    with pytest.raises(
        UnsupportedModelError, match="config says 7 experts but the router weight has 8"
    ):
        pw.capture(model, [[5, 6, 7]])


def test_non_finite_weights_give_an_input_error_naming_the_sample():
    model = build_tiny_model("qwen3_moe")
    with torch.no_grad():
        model.get_input_embeddings().weight[9].fill_(float("nan"))  # only samples holding token 9
    with pytest.raises(InputError, match=r"1 samples got a non-finite loss.*samples\[1\], id '1'"):
        pw.capture(model, [[5, 6, 7], [5, 9, 7], [7, 8]])


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_are_removed_after_an_exception(tiny_models):
    model = tiny_models["deepseek_v3"]
    before = _hooks(model)
    with pytest.raises(RuntimeError), RoutingRecorder(find_routers(model)) as recorder:
        assert _hooks(model) == before + len(find_routers(model).modules)
        recorder.expect(torch.ones(1, 7, dtype=torch.bool))  # the batch has 3 tokens, not 7
        model(torch.tensor([[5, 6, 7]]))
    assert _hooks(model) == before


def test_capture_restores_every_modules_mode_and_leaves_no_hooks():
    model = build_tiny_model("mixtral").train()
    model.model.layers[1].eval()
    modes = {name: module.training for name, module in model.named_modules()}
    before = _hooks(model)
    pw.capture(model, [[5, 6, 7]])
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert not all(modes.values())
    assert _hooks(model) == before


@pytest.mark.parametrize(
    ("samples", "kwargs", "match"),
    [
        ([""], {"tokenizer": "tok"}, r"samples\[0\]: field 'text' must be a non-empty string"),
        ([[5, 6], []], {}, r"samples\[1\]: field 'input_ids' is empty"),
        ([3.5], {}, r"samples\[0\]: a sample must be a string, a list of token ids"),
        ([{"txt": "a b"}], {}, r"needs exactly one of field 'text'.*neither \(fields: txt\)"),
        ([[5, 6], [5, "a"]], {}, r"samples\[1\]: field 'input_ids' must be a list of integer"),
        (["the cat"], {}, r"samples\[0\] is text; pass tokenizer="),
        ([[5, 6, VOCAB]], {}, rf"token id {VOCAB} but the model's vocabulary has {VOCAB} ids"),
        ([[5]], {}, r"has no scored next-token target"),
        ([{"id": "a", "input_ids": [5, 6]}] * 2, {}, r"samples\[1\]: id 'a' is already used"),
        ([{"input_ids": [5, 6], "domain": "all"}], {}, r"domain 'all' is reserved"),
        ([], {}, r"No samples given"),
        ("5 6 7", {}, r"'samples' parameter of capture must be a list of samples"),
        ([[5, 6]], {"batch_size": 0}, r"'batch_size' parameter of capture must be an int >= 1"),
        ([[5, 6]], {"max_length": 1}, r"'max_length' parameter of capture must be an int >= 2"),
        ([[5, 6]], {"padding_side": "middle"}, r"Unknown padding_side 'middle'"),
    ],
)
def test_bad_input_gets_a_one_line_input_error(tiny_models, samples, kwargs, match):
    if kwargs.get("tokenizer") == "tok":
        kwargs = {**kwargs, "tokenizer": build_tiny_tokenizer()}
    with pytest.raises(InputError, match=match) as info:
        pw.capture(tiny_models["olmoe"], samples, **kwargs)
    assert "\n" not in str(info.value)


def test_chunked_loss_equals_one_chunk(tiny_models, monkeypatch):
    model = tiny_models["olmoe"]
    samples = _random_samples(seed=6, n=5)
    whole = pw.capture(model, samples, batch_size=5)
    monkeypatch.setattr("pathwatch.capture._LOSS_CHUNK", 3 * VOCAB)  # 3 positions per chunk
    np.testing.assert_allclose(pw.capture(model, samples, batch_size=5).loss, whole.loss, atol=ATOL)


def test_progress_bar_counts_samples(tiny_models, capsys):
    pw.capture(tiny_models["olmoe"], _random_samples(seed=7, n=5), batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "capture" in err
    assert "5/5" in err
    assert "sample/s" in err


def test_router_weights_are_a_snapshot_not_a_view(tiny_models):
    model = tiny_models["olmoe"]
    cap = pw.capture(model, [[1, 2, 3, 4]])
    before = cap.router_weights[0].copy()
    router = next(
        m for m in model.modules() if hasattr(m, "weight") and m.weight.shape == before.shape
    )
    with torch.no_grad():
        router.weight.add_(1.0)
    try:
        np.testing.assert_array_equal(cap.router_weights[0], before)
    finally:
        with torch.no_grad():
            router.weight.sub_(1.0)
