"""Training the testbed: checkpoints, per-item ground truth, determinism, reuse and resumption."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from pathwatch.errors import InputError
from pathwatch.testbed.corpus import item_records
from pathwatch.testbed.train import TestbedConfig, TestbedRun, train_testbed

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


def test_early_stop_saves_the_checkpoint_where_the_rule_fires(
    run: TestbedRun, tmp_path: Path
) -> None:
    # the same seed follows the same trajectory, so the full run says where the rule must fire
    arithmetic = [d for d in TINY.domains if d != "facts"]
    worst = [min(run.accuracy(d)[i] for d in arithmetic) for i in range(len(run.steps))]
    level = max(worst[len(worst) // 2 :])
    assert level > 0
    expected = run.steps[next(i for i, w in enumerate(worst) if w >= level)]
    stopped = train_testbed(
        tmp_path, config=dataclasses.replace(TINY, stop_accuracy=level), seed=0, progress=False
    )
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
