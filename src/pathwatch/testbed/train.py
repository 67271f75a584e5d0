"""Train a tiny OLMoE on the built-in corpus on CPU and save a checkpoint series with ground truth.

``train_testbed`` writes into ``out_dir``:

- ``step-<N>/``: ordinary model directories (config, safetensors, tokenizer) via ``save_pretrained``;
- ``accuracy.jsonl``: per checkpoint and held-out item ``step, domain, item_id, correct`` — the
  per-item accuracy file that ``pathwatch analyze --accuracy`` reads;
- ``train_samples.jsonl``: the probe set (``id, domain, text, prompt``), a fixed subset of training
  items per domain; ``validation_samples.jsonl``: a set from another distribution;
- ``test_items.jsonl``: the held-out items (``id, domain, text, prompt``) that ``accuracy.jsonl`` scores;
- ``testbed.json``: configuration, seed, timings and per-domain curves;
- ``resume.pt``: optimizer state at the last checkpoint, so that an interrupted run resumes and a
  finished one can be extended to more steps with identical results.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    OlmoeConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from pathwatch._validate import check_bool, check_float, check_int
from pathwatch.errors import InputError, invalid_parameter, unknown_name
from pathwatch.store import write_atomic
from pathwatch.testbed.corpus import ARITHMETIC, OPERATORS, Corpus, build_corpus, item_records
from pathwatch.testbed.run import (
    SUMMARY,
    TEST_ITEMS,
    TRAIN_SAMPLES,
    VALIDATION_SAMPLES,
    TestbedRun,
    check_training,
    complete_summary,
    quiet_torch,
    run_fingerprint,
    save_checkpoint,
    stop_rule_fired,
    testbed_dir,
    testbed_run,
    write_accuracy,
    write_jsonl,
    write_summary,
)
from pathwatch.testbed.tokenizer import build_tokenizer

FORMAT_VERSION = 1
RESUME = "resume.pt"
_EVAL_BATCH = 4096


@dataclass(frozen=True)
class TestbedConfig:
    """Everything that determines a testbed run (with the seed). Defaults are the demo configuration.

    The defaults are the fastest measured configuration with ≥ 3 MoE layers where held-out accuracy
    stays near chance after the training items are learned and then rises past 0.9 on two domains
    (docs/testbed.md): add, sub and mul without the ``facts`` control, train fraction 0.7, hidden 64,
    AdamW lr 6e-3 with weight decay 0.75; ≈ 0.1 CPU-seconds per step (one thread). Seed 0 learned
    add's and sub's training items by steps 1,000 and 1,400 (held-out 0.02 and 0.05) and passed
    held-out 0.9 on both at 4,200. Training stops once two domains reach 0.9 (at most 5,000 steps).

    Attributes
    ----------
    prime, domains, train_fraction, facts_fraction, n_validation
        The corpus (see :func:`pathwatch.testbed.corpus.build_corpus`).
    n_probe : int
        Training items per domain in the probe set ``train_samples.jsonl``.
    hidden_size, intermediate_size, num_layers, num_heads, num_experts, top_k
        The OLMoE model (every layer is an MoE layer; ``intermediate_size`` is per expert).
    router_aux_loss_coef : float
        Weight of OLMoE's load-balancing loss (Switch Transformer, ``coef × aux_loss`` from
        ``OlmoeForCausalLM``) added to the training loss; 0 trains without it.
    dense : bool
        Train a dense ``LlamaForCausalLM`` of the same width, depth, heads and vocabulary instead,
        whose MLP has ``top_k × intermediate_size`` units, so its active parameters match the MoE's
        (less the routers); ``num_experts`` is then unused.
    lr, weight_decay, beta1, beta2, warmup_steps, batch_size
        AdamW with linear warm-up, then a constant rate; minibatches of ``batch_size`` items.
    grokfast_alpha, grokfast_lambda : float
        Grokfast-EMA (Lee et al. 2024, arXiv 2405.20233): before each optimizer step every gradient
        ``g`` becomes ``g + λ·ema`` with ``ema ← α·ema + (1 − α)·g``, amplifying its slow component;
        ``grokfast_lambda = 0`` (the default) trains with plain gradients.
    max_steps, checkpoint_every
        Training length and the interval of checkpoints (also saved at step 0 and at the end).
    stop_accuracy : float or None
        Stop early (after saving a checkpoint) once ``stop_domains`` generalizable domains' held-out
        accuracy reaches it; None trains ``max_steps``.
    stop_domains : int or None
        How many generalizable domains must reach ``stop_accuracy`` (all of them when there are
        fewer); None means all of them.
    """

    __test__ = False  # not a pytest class

    prime: int = 47
    domains: tuple[str, ...] = ("add", "sub", "mul")
    train_fraction: float = 0.7
    facts_fraction: float = 1.0
    n_validation: int = 256
    n_probe: int = 256
    hidden_size: int = 64
    intermediate_size: int = 64
    num_layers: int = 3
    num_heads: int = 4
    num_experts: int = 8
    top_k: int = 2
    router_aux_loss_coef: float = 0.0
    dense: bool = False
    lr: float = 6e-3
    weight_decay: float = 0.75
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 10
    batch_size: int = 512
    grokfast_alpha: float = 0.98
    grokfast_lambda: float = 0.0
    max_steps: int = 5000
    checkpoint_every: int = 200
    stop_accuracy: float | None = 0.9
    stop_domains: int | None = 2

    @classmethod
    def tiny(cls) -> TestbedConfig:
        """A reduced configuration for tests: p = 13, all four domains (the ``facts`` control
        included), hidden 32, 3 layers, 4 experts, 60 steps."""
        return cls(
            prime=13,
            domains=("add", "sub", "mul", "facts"),
            train_fraction=0.8,
            lr=3e-3,
            weight_decay=1.5,
            n_validation=32,
            n_probe=16,
            hidden_size=32,
            intermediate_size=32,
            num_layers=3,
            num_heads=2,
            num_experts=4,
            top_k=2,
            batch_size=64,
            max_steps=60,
            checkpoint_every=5,
            stop_accuracy=None,
        )

    def __post_init__(self) -> None:
        func = "TestbedConfig"
        for name in (
            "n_probe",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_experts",
            "batch_size",
            "max_steps",
            "checkpoint_every",
        ):
            check_int(func, name, getattr(self, name), low=1)
        object.__setattr__(self, "domains", tuple(self.domains))
        for name in self.domains:
            if name not in OPERATORS:
                raise unknown_name("domain", name, OPERATORS)
        if self.hidden_size % self.num_heads:
            raise invalid_parameter(
                func, "hidden_size", f"a multiple of num_heads={self.num_heads}", self.hidden_size
            )
        check_int(func, "top_k", self.top_k, low=1, high=self.num_experts)
        check_int(func, "warmup_steps", self.warmup_steps, low=0)
        check_float(func, "lr", self.lr, low=0, low_open=True)
        for name in ("beta1", "beta2"):
            check_float(
                func, name, getattr(self, name), low=0, high=1, low_open=True, high_open=True
            )
        check_bool(func, "dense", self.dense)
        check_float(func, "router_aux_loss_coef", self.router_aux_loss_coef, low=0)
        if self.dense and self.router_aux_loss_coef:
            raise invalid_parameter(
                func,
                "router_aux_loss_coef",
                "0 for a dense model (it has no router)",
                self.router_aux_loss_coef,
            )
        check_float(func, "grokfast_alpha", self.grokfast_alpha, low=0, high=1, high_open=True)
        check_float(func, "grokfast_lambda", self.grokfast_lambda, low=0)
        check_float(func, "weight_decay", self.weight_decay, low=0)
        check_int(func, "stop_domains", self.stop_domains, low=1, allow_none=True)
        check_float(
            func, "stop_accuracy", self.stop_accuracy, low=0, high=1, low_open=True, allow_none=True
        )
        # the corpus checks prime, train_fraction and n_validation with its own messages
        build_corpus(
            prime=self.prime,
            domains=self.domains,
            train_fraction=self.train_fraction,
            facts_fraction=self.facts_fraction,
            n_validation=1,
        )

    def corpus(self, seed: int) -> Corpus:
        """The corpus of this configuration for ``seed``."""
        return build_corpus(
            prime=self.prime,
            domains=self.domains,
            train_fraction=self.train_fraction,
            facts_fraction=self.facts_fraction,
            n_validation=self.n_validation,
            seed=seed,
        )

    def model_config(self, vocab_size: int) -> PretrainedConfig:
        """The model's config (:func:`moe_config`, 16 positions)."""
        return moe_config(self, vocab_size, 16)


def moe_config(config: Any, vocab_size: int, max_positions: int) -> PretrainedConfig:
    """The model of a testbed ``config`` (its hidden_size, num_layers, num_heads, num_experts,
    top_k, intermediate_size, router_aux_loss_coef and optional ``dense``): an ``OlmoeConfig``
    (top-k weights unnormalized, untied embeddings) or, when ``dense``, a ``LlamaConfig`` with an
    MLP of ``top_k × intermediate_size`` units."""
    shared = {
        "vocab_size": vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_heads,
        "tie_word_embeddings": False,
        "max_position_embeddings": max_positions,
        "pad_token_id": 0,
        "bos_token_id": None,
        "eos_token_id": None,
    }
    if getattr(config, "dense", False):
        return LlamaConfig(intermediate_size=config.top_k * config.intermediate_size, **shared)
    return OlmoeConfig(
        intermediate_size=config.intermediate_size,
        num_experts=config.num_experts,
        num_experts_per_tok=config.top_k,
        norm_topk_prob=False,
        router_aux_loss_coef=config.router_aux_loss_coef,
        output_router_logits=False,
        **shared,
    )


def adamw(model: PreTrainedModel, config: Any) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over ``model`` as a testbed ``config`` sets it (lr; weight_decay on matrices only;
    beta1, beta2) and its schedule: linear warm-up over ``warmup_steps``, then constant."""
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "norm" in n]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
    )
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
    )
    return optimizer, scheduler


class _Data:
    """Token-id tensors of the corpus: every item is ``a OP b = c`` (5 tokens), the answer last."""

    def __init__(self, corpus: Corpus, tokenizer: PreTrainedTokenizerFast) -> None:
        self.domains = [d.name for d in corpus.domains]
        number = torch.tensor(
            tokenizer.convert_tokens_to_ids([str(n) for n in range(corpus.prime)])
        )
        equals = tokenizer.convert_tokens_to_ids("=")

        def encode(name: str, items: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(items)
            op = torch.full_like(x[:, 0], tokenizer.convert_tokens_to_ids(OPERATORS[name]))
            return torch.stack(
                [
                    number[x[:, 0]],
                    op,
                    number[x[:, 1]],
                    torch.full_like(op, equals),
                    number[x[:, 2]],
                ],
                1,
            )

        self.train = [encode(d.name, d.train) for d in corpus.domains]
        self.test = [encode(d.name, d.test) for d in corpus.domains]
        self.train_all = torch.cat(self.train)
        ops = [tokenizer.convert_tokens_to_ids(OPERATORS[d]) for d in corpus.validation_domains]
        v = torch.from_numpy(corpus.validation)
        op_ids = torch.tensor(ops)
        self.validation = torch.stack(
            [
                number[v[:, 0]],
                op_ids[v[:, 1]],
                number[v[:, 2]],
                op_ids[v[:, 3]],
                number[v[:, 4]],
                torch.full_like(v[:, 0], equals),
                number[v[:, 5]],
            ],
            1,
        )

    def batch(self, step: int, batch_size: int, seed: int) -> torch.Tensor:
        """The minibatch of ``step`` (1-based): a fresh permutation per epoch, stateless for resumption."""
        n = len(self.train_all)
        per_epoch = max(n // batch_size, 1)
        epoch, index = divmod(step - 1, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        take = order[index * batch_size : (index + 1) * batch_size]
        return self.train_all[torch.from_numpy(take)]


def _answer_logits(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    """Logits of the answer token (the last one), predicted at the position of ``=``; shape (n, vocab)."""
    return model(input_ids=ids[:, :-1], logits_to_keep=1).logits[:, -1, :]


def _training_loss(model: PreTrainedModel, ids: torch.Tensor, aux_coef: float) -> torch.Tensor:
    """Mean answer-token cross-entropy of ``ids`` (n, 5), plus ``aux_coef ×`` the model's
    load-balancing loss over the prompt tokens when ``aux_coef > 0``."""
    if not aux_coef:
        return torch.nn.functional.cross_entropy(_answer_logits(model, ids), ids[:, -1])
    out = model(input_ids=ids[:, :-1], logits_to_keep=1, output_router_logits=True)
    loss = torch.nn.functional.cross_entropy(out.logits[:, -1, :], ids[:, -1])
    return loss + aux_coef * out.aux_loss


@torch.no_grad()
def _evaluate(model: PreTrainedModel, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item: answer-token NLL and exact-match correctness (argmax == answer)."""
    losses, correct = [], []
    for chunk in ids.split(_EVAL_BATCH):
        logits = _answer_logits(model, chunk)
        target = chunk[:, -1]
        losses.append(torch.nn.functional.cross_entropy(logits, target, reduction="none"))
        correct.append(logits.argmax(-1) == target)
    return torch.cat(losses), torch.cat(correct)


def _grokfast(
    grads: list[torch.Tensor], slow: list[torch.Tensor], alpha: float, lamb: float
) -> None:
    """Grokfast-EMA, in place: ``slow ← α·slow + (1 − α)·grad``, then ``grad ← grad + λ·slow``."""
    torch._foreach_lerp_(slow, grads, 1.0 - alpha)
    torch._foreach_add_(grads, slow, alpha=lamb)


def _same_run_except_length(a: dict[str, Any], b: dict[str, Any]) -> bool:
    strip = lambda f: {**f, "config": {**f["config"], "max_steps": None}}  # noqa: E731
    return strip(a) == strip(b)


def _check_foreign(out: Path, fingerprint: dict[str, Any]) -> None:
    """Refuse to write into a directory that holds another testbed run (or stray checkpoints)."""
    for name in (SUMMARY,):
        path = out / name
        if path.is_file():
            other = json.loads(path.read_text()).get("fingerprint")
            if other is not None and not _same_run_except_length(other, fingerprint):
                raise InputError(
                    f"{path}: holds a testbed run with another configuration or seed. "
                    "Pass an empty or new out_dir, or delete that run."
                )
    if any(out.glob("step-*")) and not (out / RESUME).is_file():
        raise InputError(
            f"{out}: holds step-* checkpoints that this testbed run cannot resume. "
            "Pass an empty or new out_dir, or delete them."
        )


def train_testbed(
    out_dir: str | os.PathLike[str],
    *,
    config: TestbedConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    threads: int = 1,
) -> TestbedRun:
    """Train the testbed MoE and save checkpoints, per-item held-out correctness and sample files.

    Parameters
    ----------
    out_dir : path
        Output directory (created). If it already holds the complete run of this configuration and
        seed, nothing is trained; if it holds an interrupted one (or a shorter one), training resumes
        from its last checkpoint and ends identical to an uninterrupted run.
    config : TestbedConfig, optional
        Defaults to ``TestbedConfig()``, the demo configuration.
    seed : int
        Seed of the corpus, the initialization and the data order.
    progress : bool
        Show a tqdm bar with step, training loss and held-out accuracy.
    threads : int
        torch CPU threads while training (restored afterwards). Results are bit-identical for a
        seed on the same machine and thread count.

    Returns
    -------
    TestbedRun

    Examples
    --------
    >>> run = train_testbed("testbed-run", config=TestbedConfig.tiny(), progress=False)  # doctest: +SKIP
    >>> run.steps[:3]  # doctest: +SKIP
    (0, 5, 10)
    """
    config = check_training(
        "train_testbed", config, TestbedConfig, seed=seed, progress=progress, threads=threads
    )
    out = testbed_dir("train_testbed", out_dir)
    fingerprint = run_fingerprint(config, seed, FORMAT_VERSION)
    summary = complete_summary(out, fingerprint)
    if summary is not None:
        return testbed_run(out, summary, reused=True)
    _check_foreign(out, fingerprint)
    with quiet_torch(threads):
        summary = _train(out, config, seed, fingerprint, progress)
    return testbed_run(out, summary, reused=False)


def _train(
    out: Path, config: TestbedConfig, seed: int, fingerprint: dict[str, Any], progress: bool
) -> dict[str, Any]:
    corpus = config.corpus(seed)
    tokenizer = build_tokenizer(corpus.vocabulary())
    data = _Data(corpus, tokenizer)
    _write_sample_files(out, corpus, config, seed)
    stop_domains = [d for d in data.domains if d in ARITHMETIC]

    resume_path = out / RESUME
    state = torch.load(resume_path, weights_only=False) if resume_path.is_file() else None
    if state is not None and not (
        _same_run_except_length(state["fingerprint"], fingerprint)
        and state["step"] <= config.max_steps
    ):
        raise InputError(
            f"{resume_path}: resume state of another configuration or seed, or of a longer run. "
            "Pass an empty or new out_dir, or delete it."
        )
    if state is None:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config.model_config(len(tokenizer)))
        history: list[dict[str, Any]] = []
        start, spent = 0, (0.0, 0.0)
    else:
        model = AutoModelForCausalLM.from_pretrained(out / state["checkpoint"])
        history, start, spent = state["history"], state["step"], state["spent"]
        # checkpoints a longer interrupted run left after the resume point are redone
        for path in out.glob("step-*"):
            if int(path.name.split("-")[1]) > start:
                shutil.rmtree(path)
    model.train()
    optimizer, scheduler = adamw(model, config)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    params = [p for p in model.parameters() if p.requires_grad]
    slow = state["grokfast"] if state is not None else [torch.zeros_like(p) for p in params]
    t0 = (time.perf_counter(), time.process_time())

    def checkpoint(step: int) -> bool:
        """Evaluate, save ``step-<N>``, update the resume state; True when the stop rule fires."""
        record = _evaluate_all(model, data)
        name = save_checkpoint(out, step, model, tokenizer)
        clock = (time.perf_counter() - t0[0], time.process_time() - t0[1])
        record |= {
            "step": step,
            "checkpoint": name,
            "spent": [a + b for a, b in zip(spent, clock, strict=True)],
        }
        history.append(record)
        stopped = stop_rule_fired(record, stop_domains, config.stop_accuracy, config.stop_domains)
        buffer = io.BytesIO()
        torch.save(
            {
                "fingerprint": fingerprint,
                "step": step,
                "checkpoint": name,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "grokfast": slow,
                "history": history,
                "spent": record["spent"],
                "stopped": stopped,
            },
            buffer,
        )
        write_atomic(resume_path, buffer.getvalue())
        return stopped

    bar = tqdm(
        total=config.max_steps, initial=start, disable=not progress, desc="testbed", unit="step"
    )
    stopped = checkpoint(0) if state is None else state["stopped"]
    step = start
    while not stopped and step < config.max_steps:
        step += 1
        batch = data.batch(step, config.batch_size, seed)
        loss = _training_loss(model, batch, config.router_aux_loss_coef)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grokfast_lambda:
            _grokfast([p.grad for p in params], slow, config.grokfast_alpha, config.grokfast_lambda)
        optimizer.step()
        scheduler.step()
        bar.update(1)
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            stopped = checkpoint(step)
            accs = history[-1]["domains"]
            bar.set_postfix(
                loss=f"{loss.item():.3f}",
                **{d[:4]: f"{accs[d]['heldout_accuracy']:.2f}" for d in data.domains},
            )
    bar.close()
    return _finish(out, config, seed, fingerprint, history, stopped, corpus)


@torch.no_grad()
def _evaluate_all(model: PreTrainedModel, data: _Data) -> dict[str, Any]:
    """Per-domain train / held-out loss and accuracy, held-out correctness, validation loss."""
    model.eval()
    record: dict[str, Any] = {"domains": {}, "correct": {}}
    for name, train, test in zip(data.domains, data.train, data.test, strict=True):
        train_loss, train_ok = _evaluate(model, train)
        test_loss, test_ok = _evaluate(model, test)
        record["domains"][name] = {
            "train_loss": float(train_loss.mean()),
            "train_accuracy": float(train_ok.float().mean()),
            "heldout_loss": float(test_loss.mean()),
            "heldout_accuracy": float(test_ok.float().mean()),
        }
        record["correct"][name] = test_ok.numpy().astype(np.uint8)
    validation_loss = float(_evaluate(model, data.validation)[0].mean())
    record["domains"]["validation"] = {"validation_loss": validation_loss}
    model.train()
    return record


def _write_sample_files(out: Path, corpus: Corpus, config: TestbedConfig, seed: int) -> None:
    """The probe set (a fixed subset of training items per domain) and the validation samples."""
    rng = np.random.default_rng([seed, 1])
    probe = []
    for split in corpus.domains:
        take = np.sort(rng.permutation(len(split.train))[: config.n_probe])
        probe += item_records(split.name, split.train[take])
    write_jsonl(out / TRAIN_SAMPLES, probe)
    write_jsonl(out / VALIDATION_SAMPLES, corpus.validation_records())
    # the held-out items' texts, for pairing memorization and generalization groups
    write_jsonl(
        out / TEST_ITEMS,
        [record for split in corpus.domains for record in item_records(split.name, split.test)],
    )


def _finish(
    out: Path,
    config: TestbedConfig,
    seed: int,
    fingerprint: dict[str, Any],
    history: list[dict[str, Any]],
    stopped: bool,
    corpus: Corpus,
) -> dict[str, Any]:
    """Write ``accuracy.jsonl`` and the complete ``testbed.json``; return the summary."""
    items = {s.name: [r["id"] for r in item_records(s.name, s.test)] for s in corpus.domains}
    write_accuracy(out, history, items)
    seconds = history[-1]["spent"][0]
    return write_summary(
        out,
        config,
        seed,
        fingerprint,
        history,
        stopped_early=stopped,
        seconds_per_step=seconds / max(history[-1]["step"], 1),
    )
