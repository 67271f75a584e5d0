"""Training the testbed: checkpoints, per-item ground truth, determinism, reuse and resumption."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from pathwatch.errors import InputError
from pathwatch.testbed.corpus import item_records
from pathwatch.testbed.train import (
    TestbedConfig,
    TestbedRun,
    _grokfast,
    _training_loss,
    train_testbed,
)

TINY = TestbedConfig.tiny()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TestbedRun:
    return train_testbed(tmp_path_factory.mktemp("tiny"), config=TINY, seed=0, progress=False)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_writes_checkpoint_series_loadable_like_any_checkpoint(run: TestbedRun) -> None:
    assert not run.reused
    assert len(run.checkpoints) >= 10
    assert run.steps == tuple(range(0, TINY.max_steps + 1, TINY.checkpoint_every))
    for path, step in zip(run.checkpoints, run.steps, strict=True):
        assert path.name == f"step-{step}"
    model = AutoModelForCausalLM.from_pretrained(run.checkpoints[-1])
    tokenizer = AutoTokenizer.from_pretrained(run.checkpoints[-1])
    assert model.config.model_type == "olmoe"
    assert (model.config.num_experts, model.config.num_experts_per_tok) == (
        TINY.num_experts,
        TINY.top_k,
    )
    assert model.config.num_hidden_layers == TINY.num_layers
    assert not model.config.norm_topk_prob and model.config.router_aux_loss_coef == 0
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert len(tokenizer) == model.config.vocab_size


def test_correctness_file_matches_a_plain_argmax_of_each_checkpoint(run: TestbedRun) -> None:
    rows = _jsonl(run.accuracy_file)
    assert all(set(r) == {"step", "domain", "item_id", "correct"} for r in rows)
    assert {r["correct"] for r in rows} <= {0, 1}
    corpus = TINY.corpus(0)
    test = {s.name: item_records(s.name, s.test) for s in corpus.domains}
    n_test = sum(len(v) for v in test.values())
    assert len(rows) == n_test * len(run.steps)
    # oracle: greedy answer after the prompt, from the saved model and tokenizer
    for path, step in [(run.checkpoints[-1], run.steps[-1]), (run.checkpoints[4], run.steps[4])]:
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        got = {(r["domain"], r["item_id"]): r["correct"] for r in rows if r["step"] == step}
        for domain, records in test.items():
            ids = torch.tensor([tokenizer(r["prompt"])["input_ids"] for r in records])
            with torch.no_grad():
                predicted = model(input_ids=ids).logits[:, -1].argmax(-1).tolist()
            answers = [tokenizer.convert_tokens_to_ids(r["text"].split()[-1]) for r in records]
            expected = [int(p == a) for p, a in zip(predicted, answers, strict=True)]
            assert [got[(domain, r["id"])] for r in records] == expected
            curve = next(c for c in run.curves if c["step"] == step and c["domain"] == domain)
            assert curve["heldout_accuracy"] == pytest.approx(sum(expected) / len(expected))


def test_probe_and_validation_samples(run: TestbedRun) -> None:
    corpus = TINY.corpus(0)
    probe = _jsonl(run.train_samples)
    assert all(set(r) == {"id", "domain", "text", "prompt"} for r in probe)
    for split in corpus.domains:
        train_ids = {r["id"] for r in item_records(split.name, split.train)}
        mine = [r for r in probe if r["domain"] == split.name]
        assert len(mine) == TINY.n_probe
        assert {r["id"] for r in mine} <= train_ids
        assert all(r["text"].startswith(r["prompt"] + " ") for r in mine)
    validation = _jsonl(run.validation_samples)
    assert len(validation) == TINY.n_validation
    assert {r["domain"] for r in validation} == {"validation"}
    assert not {r["prompt"] for r in validation} & {r["prompt"] for r in probe}


def test_summary_records_config_seed_and_curves(run: TestbedRun) -> None:
    summary = json.loads(run.summary.read_text())
    assert summary["complete"] and summary["seed"] == 0
    assert summary["config"] == json.loads(json.dumps(dataclasses.asdict(TINY)))
    assert summary["train_seconds"] > 0
    for domain in TINY.domains:
        assert len(run.accuracy(domain)) == len(run.steps)
    losses = [c["train_loss"] for c in run.curves if c["domain"] == "add"]
    assert losses[-1] < losses[0]  # it trains
    assert len([c for c in run.curves if c["domain"] == "validation"]) == len(run.steps)


def test_same_seed_gives_identical_weights(run: TestbedRun, tmp_path: Path) -> None:
    again = train_testbed(tmp_path, config=TINY, seed=0, progress=False)
    assert again.steps == run.steps
    for a, b in zip(run.checkpoints, again.checkpoints, strict=True):
        wa, wb = _weights(a), _weights(b)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert again.accuracy_file.read_bytes() == run.accuracy_file.read_bytes()


def test_complete_run_is_reused_not_retrained(run: TestbedRun) -> None:
    before = {p: p.joinpath("model.safetensors").stat().st_mtime_ns for p in run.checkpoints}
    again = train_testbed(run.out_dir, config=TINY, seed=0, progress=False)
    assert again.reused
    assert again.steps == run.steps and again.curves == run.curves
    assert {
        p: p.joinpath("model.safetensors").stat().st_mtime_ns for p in again.checkpoints
    } == before


def test_extending_a_shorter_run_resumes_to_identical_results(
    run: TestbedRun, tmp_path: Path
) -> None:
    short = train_testbed(
        tmp_path, config=dataclasses.replace(TINY, max_steps=30), seed=0, progress=False
    )
    assert short.steps[-1] == 30
    longer = train_testbed(tmp_path, config=TINY, seed=0, progress=False)
    assert not longer.reused and longer.steps == run.steps
    last_a, last_b = _weights(run.checkpoints[-1]), _weights(longer.checkpoints[-1])
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    assert longer.accuracy_file.read_bytes() == run.accuracy_file.read_bytes()


@pytest.mark.parametrize("stop_domains", [None, 2])
def test_early_stop_saves_the_checkpoint_where_the_rule_fires(
    run: TestbedRun, tmp_path: Path, stop_domains: int | None
) -> None:
    # the same seed follows the same trajectory, so the full run says where the rule must fire:
    # where the k-th best generalizable domain (k = stop_domains, default all) reaches the level
    arithmetic = [d for d in TINY.domains if d != "facts"]
    k = stop_domains or len(arithmetic)
    kth = [sorted(run.accuracy(d)[i] for d in arithmetic)[-k] for i in range(len(run.steps))]
    level = max(kth[len(kth) // 2 :])
    assert level > 0
    expected = run.steps[next(i for i, w in enumerate(kth) if w >= level)]
    config = dataclasses.replace(TINY, stop_accuracy=level, stop_domains=stop_domains)
    stopped = train_testbed(tmp_path, config=config, seed=0, progress=False)
    assert stopped.steps == tuple(s for s in run.steps if s <= expected)
    assert json.loads(stopped.summary.read_text())["stopped_early"] == (expected < TINY.max_steps)


def test_refuses_a_directory_with_another_run(run: TestbedRun) -> None:
    with pytest.raises(InputError, match="another configuration or seed"):
        train_testbed(run.out_dir, config=TINY, seed=1, progress=False)


def test_refuses_stray_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "step-100").mkdir()
    with pytest.raises(InputError, match="cannot resume"):
        train_testbed(tmp_path, config=TINY, progress=False)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"num_layers": 0}, "'num_layers' parameter of TestbedConfig"),
        ({"hidden_size": 33}, "multiple of num_heads"),
        ({"top_k": 5}, "'top_k' parameter"),
        ({"domains": ("add", "div")}, "Unknown domain 'div'"),
        ({"prime": 15}, "'prime' parameter of build_corpus"),
        ({"stop_accuracy": 1.5}, "'stop_accuracy' parameter"),
        ({"lr": -1.0}, "'lr' parameter"),
        ({"router_aux_loss_coef": -0.1}, "'router_aux_loss_coef' parameter"),
        ({"dense": True, "router_aux_loss_coef": 0.01}, "0 for a dense model"),
        ({"dense": 1}, "'dense' parameter"),
        ({"grokfast_alpha": 1.0}, "'grokfast_alpha' parameter"),
        ({"grokfast_lambda": -1.0}, "'grokfast_lambda' parameter"),
        ({"stop_domains": True}, "'stop_domains' parameter"),
        ({"stop_domains": 0}, "'stop_domains' parameter"),
    ],
)
def test_bad_config_is_rejected(changes: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        dataclasses.replace(TINY, **changes)


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'seed' parameter of train_testbed"):
        train_testbed(tmp_path, config=TINY, seed=-1)
    with pytest.raises(InputError, match="'config' parameter of train_testbed"):
        train_testbed(tmp_path, config={"prime": 13})  # type: ignore[arg-type]
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a directory"):
        train_testbed(tmp_path / "file", config=TINY)


DENSE = dataclasses.replace(TINY, dense=True)
BALANCED = dataclasses.replace(TINY, router_aux_loss_coef=0.05)
GROKFAST = dataclasses.replace(TINY, grokfast_lambda=2.0)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory: pytest.TempPathFactory) -> TestbedRun:
    return train_testbed(tmp_path_factory.mktemp("dense"), config=DENSE, seed=0, progress=False)


def _n_params(named: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in named.values())


def test_dense_run_is_a_llama_with_the_moes_active_parameters(dense_run: TestbedRun) -> None:
    model = AutoModelForCausalLM.from_pretrained(dense_run.checkpoints[-1])
    assert model.config.model_type == "llama"
    assert model.config.intermediate_size == TINY.top_k * TINY.intermediate_size
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (
        TINY.hidden_size,
        TINY.num_layers,
    )
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    # oracle: the MoE's parameters with top_k of num_experts experts active, less routers and qk-norms
    moe = dict(
        AutoModelForCausalLM.from_config(
            TINY.model_config(model.config.vocab_size)
        ).named_parameters()
    )
    experts = {k: v for k, v in moe.items() if ".mlp.experts." in k}
    rest = {
        k: v
        for k, v in moe.items()
        if k not in experts
        and not k.endswith(("mlp.gate.weight", "q_norm.weight", "k_norm.weight"))
    }
    active = _n_params(rest) + _n_params(experts) * TINY.top_k // TINY.num_experts
    assert _n_params(dict(model.named_parameters())) == active
    losses = [c["train_loss"] for c in dense_run.curves if c["domain"] == "add"]
    assert losses[-1] < losses[0]


def test_dense_correctness_matches_a_plain_argmax(dense_run: TestbedRun) -> None:
    rows = _jsonl(dense_run.accuracy_file)
    model = AutoModelForCausalLM.from_pretrained(dense_run.checkpoints[-1]).eval()
    tokenizer = AutoTokenizer.from_pretrained(dense_run.checkpoints[-1])
    step = dense_run.steps[-1]
    got = {r["item_id"]: r["correct"] for r in rows if r["step"] == step}
    records = [r for s in DENSE.corpus(0).domains for r in item_records(s.name, s.test)]
    ids = torch.tensor([tokenizer(r["prompt"])["input_ids"] for r in records])
    with torch.no_grad():
        predicted = model(input_ids=ids).logits[:, -1].argmax(-1).tolist()
    answers = [tokenizer.convert_tokens_to_ids(r["text"].split()[-1]) for r in records]
    assert [got[r["id"]] for r in records] == [
        int(p == a) for p, a in zip(predicted, answers, strict=True)
    ]


@pytest.mark.parametrize(
    "config", [DENSE, BALANCED, GROKFAST], ids=["dense", "aux-loss", "grokfast"]
)
def test_resuming_reloads_the_right_model_class(config: TestbedConfig, tmp_path: Path) -> None:
    whole = train_testbed(tmp_path / "whole", config=config, seed=0, progress=False)
    train_testbed(
        tmp_path / "parts", config=dataclasses.replace(config, max_steps=30), seed=0, progress=False
    )
    parts = train_testbed(tmp_path / "parts", config=config, seed=0, progress=False)
    a, b = _weights(whole.checkpoints[-1]), _weights(parts.checkpoints[-1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert parts.accuracy_file.read_bytes() == whole.accuracy_file.read_bytes()


def test_fields_are_part_of_the_run_fingerprint(dense_run: TestbedRun) -> None:
    with pytest.raises(InputError, match="another configuration or seed"):
        train_testbed(dense_run.out_dir, config=TINY, seed=0, progress=False)
    with pytest.raises(InputError, match="another configuration or seed"):
        train_testbed(
            dense_run.out_dir,
            config=dataclasses.replace(TINY, router_aux_loss_coef=0.5, dense=False),
            seed=0,
            progress=False,
        )


def _switch_loss(router_logits: list[np.ndarray], top_k: int) -> float:
    """Switch Transformer load balancing: E · Σ_e (share of top-k picks of e) · (mean router prob of e),
    both pooled over layers and tokens; shares sum to top_k."""
    logits = np.concatenate(router_logits)  # (layers × tokens, E)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    n, n_experts = probs.shape
    picks = np.argsort(-probs, axis=1)[:, :top_k]
    share = np.bincount(picks.ravel(), minlength=n_experts) / n
    return float(n_experts * (share * probs.mean(0)).sum())


def test_training_loss_adds_coef_times_the_load_balancing_loss() -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(BALANCED.model_config(20))
    ids = torch.randint(2, 20, (16, 5))
    with torch.no_grad():
        out = model(input_ids=ids[:, :-1], output_router_logits=True)
        plain = torch.nn.functional.cross_entropy(out.logits[:, -1], ids[:, -1]).item()
        lb = _switch_loss([r.numpy() for r in out.router_logits], TINY.top_k)
        assert _training_loss(model, ids, 0.0).item() == pytest.approx(plain, rel=1e-5)
        assert _training_loss(model, ids, 0.3).item() == pytest.approx(plain + 0.3 * lb, rel=1e-5)
    assert lb >= TINY.top_k - 1e-6  # balanced routing is the minimum, top_k


def _expert_load(run: TestbedRun) -> np.ndarray:
    """Share of the probe tokens' top-k picks per expert at the last checkpoint, shape (layers, E)."""
    model = AutoModelForCausalLM.from_pretrained(run.checkpoints[-1]).eval()
    tokenizer = AutoTokenizer.from_pretrained(run.checkpoints[-1])
    ids = torch.tensor([tokenizer(r["prompt"])["input_ids"] for r in _jsonl(run.train_samples)])
    with torch.no_grad():
        logits = model(input_ids=ids, output_router_logits=True).router_logits
    picks = [r.topk(TINY.top_k, dim=-1).indices.ravel() for r in logits]
    return np.stack([np.bincount(p.numpy(), minlength=TINY.num_experts) / len(p) for p in picks])


def test_load_balancing_loss_balances_the_experts(run: TestbedRun, tmp_path: Path) -> None:
    heavy = train_testbed(
        tmp_path, config=dataclasses.replace(TINY, router_aux_loss_coef=1.0), seed=0, progress=False
    )
    assert (
        AutoModelForCausalLM.from_pretrained(heavy.checkpoints[-1]).config.router_aux_loss_coef
        == 1.0
    )
    imbalance = lambda load: float(np.abs(load - 1 / TINY.num_experts).sum())  # noqa: E731
    assert imbalance(_expert_load(heavy)) < imbalance(_expert_load(run))


def test_grokfast_matches_a_plain_ema_recurrence() -> None:
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,)]
    slow = [torch.zeros(s) for s in shapes]
    expected_slow = [np.zeros(s) for s in shapes]
    for _ in range(4):
        raw = [rng.normal(size=s) for s in shapes]
        grads = [torch.tensor(g, dtype=torch.float32) for g in raw]
        _grokfast(grads, slow, 0.9, 2.0)
        for k, g in enumerate(raw):
            expected_slow[k] = 0.9 * expected_slow[k] + 0.1 * g
            np.testing.assert_allclose(slow[k].numpy(), expected_slow[k], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(
                grads[k].numpy(), g + 2.0 * expected_slow[k], rtol=1e-5, atol=1e-6
            )


def test_grokfast_changes_training(run: TestbedRun, tmp_path: Path) -> None:
    fast = train_testbed(tmp_path, config=GROKFAST, seed=0, progress=False)
    a, b = _weights(run.checkpoints[-1]), _weights(fast.checkpoints[-1])
    assert not all(torch.equal(a[k], b[k]) for k in a)
