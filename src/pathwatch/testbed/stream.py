"""The stream testbed: a tiny OLMoE trained one pass over unique documents, as pretraining is.

Every training document (:mod:`pathwatch.testbed.stream_corpus`) is unique and trained on once:
``seq_len`` words mixing ``n_equations`` equations of one domain with filler text in the domain's
own style, under full next-token loss. The ``mix`` weights set how often each domain's pairs come
by, hence when they are fitted; the ``facts`` domain can only be memorized (its held-out pairs
stay at chance). The probes are ``n_probe`` documents per domain drawn from the first
``probe_window`` of the planned steps, so each was trained on exactly once, early.

Ground truth is the held-out operand pairs (never in a training document) as bare prompts
``a OP b =`` — a format shift, as a benchmark is — scored by exact match of the answer; their
accuracy inside documents of the domain's style is recorded beside it in the curves
(``heldout_doc_accuracy``). Validation documents use a filler style never trained on.

``train_stream_testbed`` writes the layout of :func:`pathwatch.testbed.train_testbed`
(``step-<N>/``, ``accuracy.jsonl``, ``train_samples.jsonl``, ``validation_samples.jsonl``,
``test_items.jsonl``, ``testbed.json``); a complete run of the same configuration and seed is
reused, an interrupted one starts over.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel

from pathwatch._validate import check_float, check_int, is_int, is_real
from pathwatch.errors import invalid_parameter, unknown_name
from pathwatch.testbed.corpus import OPERATORS, build_corpus, item_records
from pathwatch.testbed.run import (
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
from pathwatch.testbed.stream_corpus import (
    StreamCorpus,
    build_stream,
    domain_documents,
    skill_domains,
)
from pathwatch.testbed.tokenizer import build_tokenizer
from pathwatch.testbed.train import adamw, moe_config

__all__ = ["StreamConfig", "train_stream_testbed"]

FORMAT_VERSION = 1
_SPECIAL = 2  # [PAD] and [UNK] precede the corpus's words in the tokenizer
_EVAL_BATCH = 1024


@dataclass(frozen=True)
class StreamConfig:
    """Everything that determines a stream-testbed run (with the seed); defaults are the ``stream``
    preset (docs/testbed.md, "Stream testbed").

    Attributes
    ----------
    prime : int
        The modulus p of the equations (a prime ≥ 5).
    domains : tuple of str
        Domains (keys of :data:`pathwatch.testbed.corpus.OPERATORS`); ``facts`` is the
        memorize-only control.
    branching : tuple of int
        Per domain, successors per state of its filler style's Markov chain (1 … filler_vocab):
        the filler's entropy is log(branching) nats a word, which sets the document-loss floor.
    validation_branching : int
        Branching of the never-trained style of the validation documents.
    mix : tuple of float
        Per domain, its weight in every minibatch (> 0; normalized): how often its pairs come by.
    filler_vocab : int
        Filler words ``w0 … w<V-1>`` shared by the styles.
    seq_len, n_equations : int
        Words per document and equations in it (``5 × n_equations < seq_len``).
    train_fraction : float
        Fraction of unordered operand pairs in training, in (0, 1); the rest is held out.
    n_probe : int
        Probe documents per domain (``train_samples.jsonl``).
    probe_window : float
        The probes are drawn from the first ``probe_window`` of the ``max_steps`` planned steps.
    n_validation, n_heldout_docs : int
        Validation documents; documents per domain that embed held-out pairs.
    hidden_size, intermediate_size, num_layers, num_heads, num_experts, top_k, router_aux_loss_coef
        The OLMoE model, as in :class:`pathwatch.testbed.train.TestbedConfig`.
    lr, weight_decay, beta1, beta2, warmup_steps, batch_size
        AdamW with linear warm-up, then constant; ``batch_size`` documents a step.
    max_steps, checkpoint_every
        Training length (the stream holds ``max_steps × batch_size`` documents) and the interval
        of checkpoints (also at step 0 and at the end).
    stop_accuracy : float or None
        Stop after a checkpoint where ``stop_domains`` skill domains' held-out accuracy reached it.
    stop_domains : int or None
        How many skill domains must reach ``stop_accuracy`` (None: all of them).
    """

    prime: int = 17
    domains: tuple[str, ...] = ("add", "sub", "mul", "facts")
    branching: tuple[int, ...] = (2, 4, 8, 3)
    validation_branching: int = 5
    mix: tuple[float, ...] = (0.35, 0.3, 0.2, 0.15)
    filler_vocab: int = 32
    seq_len: int = 32
    n_equations: int = 5
    train_fraction: float = 0.85
    n_probe: int = 256
    probe_window: float = 0.2
    n_validation: int = 256
    n_heldout_docs: int = 128
    hidden_size: int = 64
    intermediate_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    num_experts: int = 8
    top_k: int = 2
    router_aux_loss_coef: float = 0.0
    lr: float = 6e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 10
    batch_size: int = 128
    max_steps: int = 2500
    checkpoint_every: int = 100
    stop_accuracy: float | None = 0.9
    stop_domains: int | None = 2

    @classmethod
    def tiny(cls) -> StreamConfig:
        """A reduced configuration for smoke tests (seconds): p = 7, 16-word documents, hidden 32,
        4 layers, 4 experts, 40 steps."""
        return cls(
            prime=7,
            filler_vocab=12,
            seq_len=16,
            n_equations=2,
            train_fraction=0.7,
            n_probe=16,
            probe_window=0.5,
            n_validation=16,
            n_heldout_docs=8,
            hidden_size=32,
            intermediate_size=32,
            num_heads=2,
            num_experts=4,
            batch_size=32,
            max_steps=40,
            checkpoint_every=5,
            stop_accuracy=None,
        )

    def __post_init__(self) -> None:
        func = "StreamConfig"
        for name in (
            "filler_vocab",
            "n_equations",
            "n_probe",
            "n_validation",
            "n_heldout_docs",
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
        check_int(func, "seq_len", self.seq_len, low=5 * self.n_equations + 2)
        domains = tuple(self.domains) if isinstance(self.domains, (tuple, list)) else None
        if not domains or len(set(domains)) != len(domains):
            raise invalid_parameter(func, "domains", "a non-empty tuple of distinct names", domains)
        for name in domains:
            if name not in OPERATORS:
                raise unknown_name("domain", name, OPERATORS)
        object.__setattr__(self, "domains", domains)
        for name, valid in (("branching", is_int), ("mix", is_real)):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or len(value) != len(domains):
                raise invalid_parameter(func, name, f"a tuple of {len(domains)} values", value)
            if not all(valid(v) for v in value):
                raise invalid_parameter(func, name, "numbers", value)
            object.__setattr__(self, name, tuple(value))
        if not all(1 <= b <= self.filler_vocab for b in self.branching):
            raise invalid_parameter(
                func,
                "branching",
                f"values in [1, filler_vocab={self.filler_vocab}]",
                self.branching,
            )
        if not all(np.isfinite(m) and m > 0 for m in self.mix):
            raise invalid_parameter(func, "mix", "positive finite weights", self.mix)
        check_int(
            func, "validation_branching", self.validation_branching, low=1, high=self.filler_vocab
        )
        check_float(func, "probe_window", self.probe_window, low=0, high=1, low_open=True)
        if self.hidden_size % self.num_heads:
            raise invalid_parameter(
                func, "hidden_size", f"a multiple of num_heads={self.num_heads}", self.hidden_size
            )
        check_int(func, "top_k", self.top_k, low=1, high=self.num_experts)
        check_int(func, "warmup_steps", self.warmup_steps, low=0)
        check_float(func, "lr", self.lr, low=0, low_open=True)
        check_float(func, "weight_decay", self.weight_decay, low=0)
        check_float(func, "router_aux_loss_coef", self.router_aux_loss_coef, low=0)
        for name in ("beta1", "beta2"):
            check_float(
                func, name, getattr(self, name), low=0, high=1, low_open=True, high_open=True
            )
        check_int(func, "stop_domains", self.stop_domains, low=1, allow_none=True)
        check_float(
            func, "stop_accuracy", self.stop_accuracy, low=0, high=1, low_open=True, allow_none=True
        )
        # the pair split checks prime and train_fraction with its own messages
        build_corpus(
            prime=self.prime, domains=domains, train_fraction=self.train_fraction, n_validation=1
        )
        fewest = min(self.mix) / sum(self.mix) * self.batch_size * self.window_steps
        if fewest < self.n_probe:
            raise invalid_parameter(
                func,
                "n_probe",
                f"at most the ≈ {int(fewest)} documents the smallest domain has in the probe "
                "window (raise probe_window, max_steps or batch_size)",
                self.n_probe,
            )

    @property
    def window_steps(self) -> int:
        """Steps of the probe window (at least one)."""
        return max(int(self.probe_window * self.max_steps), 1)

    def corpus(self, seed: int) -> StreamCorpus:
        """The stream of this configuration for ``seed``."""
        return build_stream(
            prime=self.prime,
            domains=self.domains,
            branching=self.branching,
            validation_branching=self.validation_branching,
            mix=self.mix,
            filler_vocab=self.filler_vocab,
            seq_len=self.seq_len,
            n_equations=self.n_equations,
            train_fraction=self.train_fraction,
            batch_size=self.batch_size,
            n_batches=self.max_steps,
            seed=seed,
        )


@dataclass
class _Eval:
    """The fixed evaluation sets of a run, as token-id tensors."""

    probes: list[np.ndarray]  # per domain, stream rows of its probe documents
    probe_ids: list[torch.Tensor]  # per domain (n_probe, seq_len)
    probe_answers: list[torch.Tensor]  # per domain (n_probe, seq_len) bool
    train_prompts: list[torch.Tensor]  # per domain (n, 5): training pairs as bare prompts
    test_prompts: list[torch.Tensor]  # per domain (m, 5): held-out pairs as bare prompts
    test_docs: list[tuple[torch.Tensor, torch.Tensor]]  # per domain: documents, answer mask
    validation: torch.Tensor  # (n_validation, seq_len)


def _prompts(corpus: StreamCorpus, domain: str, items: np.ndarray) -> torch.Tensor:
    """Bare prompts with answers ``a OP b = c`` as token ids, (n, 5)."""
    p = corpus.pairs.prime
    op, equals = p + list(OPERATORS).index(domain), p + len(OPERATORS)
    words = np.stack(
        [
            items[:, 0],
            np.full(len(items), op),
            items[:, 1],
            np.full(len(items), equals),
            items[:, 2],
        ],
        axis=1,
    )
    return torch.from_numpy(words + _SPECIAL)


def _probe_rows(corpus: StreamCorpus, config: StreamConfig, seed: int) -> list[np.ndarray]:
    """Per domain, ``n_probe`` stream rows of that domain from the probe window, sorted."""
    window = config.window_steps * config.batch_size
    rng = np.random.default_rng([seed, 5])
    rows = []
    for code in range(len(corpus.domains)):
        candidates = np.flatnonzero(corpus.doc_domain[:window] == code)
        rows.append(np.sort(rng.choice(candidates, size=config.n_probe, replace=False)))
    return rows


def _eval_sets(corpus: StreamCorpus, config: StreamConfig, seed: int) -> _Eval:
    rng = np.random.default_rng([seed, 9])
    probes = _probe_rows(corpus, config, seed)
    test_docs = []
    for name in corpus.domains:
        docs, answers = domain_documents(
            corpus, name, corpus.pairs.domain(name).test, config.n_heldout_docs, rng
        )
        test_docs.append((torch.from_numpy(docs + _SPECIAL), torch.from_numpy(answers)))
    skills = skill_domains(corpus.domains) or list(corpus.domains)
    per = -(-config.n_validation // len(skills))
    validation = np.concatenate(
        [
            domain_documents(
                corpus, name, corpus.pairs.domain(name).train, per, rng, corpus.validation_style
            )[0]
            for name in skills
        ]
    )[: config.n_validation]
    return _Eval(
        probes=probes,
        probe_ids=[torch.from_numpy(corpus.docs[r] + _SPECIAL) for r in probes],
        probe_answers=[torch.from_numpy(corpus.answer_mask[r]) for r in probes],
        train_prompts=[_prompts(corpus, d, corpus.pairs.domain(d).train) for d in corpus.domains],
        test_prompts=[_prompts(corpus, d, corpus.pairs.domain(d).test) for d in corpus.domains],
        test_docs=test_docs,
        validation=torch.from_numpy(validation + _SPECIAL),
    )


def _token_losses(model: PreTrainedModel, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token NLL and correctness at every predicted position, (n, L − 1) each; position j
    predicts token j + 1."""
    losses, correct = [], []
    for chunk in ids.split(_EVAL_BATCH):
        logits = model(input_ids=chunk).logits[:, :-1]
        target = chunk[:, 1:]
        losses.append(
            torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        )
        correct.append(logits.argmax(-1) == target)
    return torch.cat(losses), torch.cat(correct)


def _training_loss(model: PreTrainedModel, ids: torch.Tensor, aux_coef: float) -> torch.Tensor:
    """Mean next-token cross-entropy over every position, plus ``aux_coef ×`` the load-balancing
    loss when ``aux_coef > 0``."""
    out = model(input_ids=ids, output_router_logits=bool(aux_coef))
    loss = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), ids[:, 1:].reshape(-1)
    )
    return loss + aux_coef * out.aux_loss if aux_coef else loss


@torch.no_grad()
def _evaluate(model: PreTrainedModel, sets: _Eval, domains: tuple[str, ...]) -> dict[str, Any]:
    """Per domain: probe-document loss and answer accuracy, bare-prompt accuracy of training and
    held-out pairs (held-out correctness per item), held-out accuracy inside documents; and the
    validation loss."""
    model.eval()
    record: dict[str, Any] = {"domains": {}, "correct": {}}
    for k, name in enumerate(domains):
        loss, ok = _token_losses(model, sets.probe_ids[k])
        answers = sets.probe_answers[k][:, 1:]
        train_ok = _token_losses(model, sets.train_prompts[k])[1][:, -1]
        test_loss, test_ok = (t[:, -1] for t in _token_losses(model, sets.test_prompts[k]))
        docs, doc_answers = sets.test_docs[k]
        doc_ok = _token_losses(model, docs)[1][doc_answers[:, 1:]]
        record["domains"][name] = {
            "train_loss": float(loss.mean()),
            "train_accuracy": float(ok[answers].float().mean()),
            "train_prompt_accuracy": float(train_ok.float().mean()),
            "heldout_loss": float(test_loss.mean()),
            "heldout_accuracy": float(test_ok.float().mean()),
            "heldout_doc_accuracy": float(doc_ok.float().mean()),
        }
        record["correct"][name] = test_ok.numpy().astype(np.uint8)
    validation = float(_token_losses(model, sets.validation)[0].mean())
    record["domains"]["validation"] = {"validation_loss": validation}
    model.train()
    return record


def train_stream_testbed(
    out_dir: str | os.PathLike[str],
    *,
    config: StreamConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    threads: int = 1,
) -> TestbedRun:
    """Train the stream testbed and save checkpoints, held-out correctness and sample files.

    Parameters
    ----------
    out_dir : path
        Output directory (created); a complete run of this configuration and seed is reused.
    config : StreamConfig, optional
        Defaults to ``StreamConfig()``, the ``stream`` preset.
    seed : int
        Seed of the corpus, the initialization and the probes.
    progress : bool
        Show a tqdm bar with the training loss and held-out accuracy.
    threads : int
        torch CPU threads while training (restored afterwards).

    Returns
    -------
    TestbedRun

    Examples
    --------
    >>> run = train_stream_testbed("stream", config=StreamConfig.tiny())  # doctest: +SKIP
    >>> run.steps[:3]  # doctest: +SKIP
    (0, 5, 10)
    """
    func = "train_stream_testbed"
    config = check_training(
        func, config, StreamConfig, seed=seed, progress=progress, threads=threads
    )
    out = testbed_dir(func, out_dir)
    fingerprint = run_fingerprint(config, seed, FORMAT_VERSION)
    summary = complete_summary(out, fingerprint)
    if summary is not None:
        return testbed_run(out, summary, reused=True)
    with quiet_torch(threads):
        summary = _train(out, config, seed, fingerprint, progress)
    return testbed_run(out, summary, reused=False)


def _train(
    out: Path, config: StreamConfig, seed: int, fingerprint: dict[str, Any], progress: bool
) -> dict[str, Any]:
    t0 = (time.perf_counter(), time.process_time())
    corpus = config.corpus(seed)
    tokenizer = build_tokenizer(corpus.vocabulary)
    sets = _eval_sets(corpus, config, seed)
    trained = _write_sample_files(out, corpus, sets)
    stream = torch.from_numpy(corpus.docs + _SPECIAL)
    skills = skill_domains(corpus.domains)

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(moe_config(config, len(tokenizer), config.seq_len))
    model.train()
    optimizer, scheduler = adamw(model, config)
    history: list[dict[str, Any]] = []

    def checkpoint(step: int) -> bool:
        """Evaluate and save ``step-<N>``; True when the stop rule fires."""
        record = _evaluate(model, sets, corpus.domains)
        name = save_checkpoint(out, step, model, tokenizer)
        spent = [time.perf_counter() - t0[0], time.process_time() - t0[1]]
        history.append(record | {"step": step, "checkpoint": name, "spent": spent})
        return stop_rule_fired(record, skills, config.stop_accuracy, config.stop_domains)

    bar = tqdm(total=config.max_steps, disable=not progress, desc="stream testbed", unit="step")
    stopped, step = checkpoint(0), 0
    while not stopped and step < config.max_steps:
        step += 1
        batch = stream[(step - 1) * config.batch_size : step * config.batch_size]
        loss = _training_loss(model, batch, config.router_aux_loss_coef)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.update(1)
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            stopped = checkpoint(step)
            accs = history[-1]["domains"]
            train = np.mean([accs[d]["train_prompt_accuracy"] for d in corpus.domains])
            bar.set_postfix(
                loss=f"{loss.item():.3f}",
                train=f"{train:.2f}",
                **{d[:4]: f"{accs[d]['heldout_accuracy']:.2f}" for d in corpus.domains},
            )
    bar.close()
    return _finish(out, config, seed, fingerprint, history, stopped, corpus, trained, step)


def _write_sample_files(out: Path, corpus: StreamCorpus, sets: _Eval) -> dict[str, Any]:
    """The probes (training documents), the validation documents and the held-out prompts; returns
    what the summary records about the probes."""
    probes = []
    for name, rows in zip(corpus.domains, sets.probes, strict=True):
        texts = corpus.words(corpus.docs[rows])
        probes += [
            {"id": f"{name}-doc-{r}", "domain": name, "text": t}
            for r, t in zip(rows.tolist(), texts, strict=True)
        ]
    write_jsonl(out / TRAIN_SAMPLES, probes)
    texts = corpus.words(sets.validation.numpy() - _SPECIAL)
    write_jsonl(
        out / VALIDATION_SAMPLES,
        [
            {"id": f"validation-{i:05d}", "domain": "validation", "text": t}
            for i, t in enumerate(texts)
        ],
    )
    write_jsonl(
        out / TEST_ITEMS,
        [r for name in corpus.domains for r in item_records(name, corpus.pairs.domain(name).test)],
    )
    every = np.concatenate(sets.probes)
    return {
        "probe_rows": {n: r.tolist() for n, r in zip(corpus.domains, sets.probes, strict=True)},
        "probe_last_row": int(every.max()),
        "probe_max_trained": int(_times_trained(corpus.docs, every).max()),
        "floors": {name: corpus.floor(name) for name in corpus.domains},
    }


def _times_trained(docs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """How many documents of the stream equal each of ``docs[rows]``."""
    _, inverse, counts = np.unique(docs, axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()[rows]]


def _finish(
    out: Path,
    config: StreamConfig,
    seed: int,
    fingerprint: dict[str, Any],
    history: list[dict[str, Any]],
    stopped: bool,
    corpus: StreamCorpus,
    probes: dict[str, Any],
    steps: int,
) -> dict[str, Any]:
    """Write ``accuracy.jsonl`` and the complete ``testbed.json``; return the summary."""
    items = {
        name: [r["id"] for r in item_records(name, corpus.pairs.domain(name).test)]
        for name in corpus.domains
    }
    write_accuracy(out, history, items)
    return write_summary(
        out,
        config,
        seed,
        fingerprint,
        history,
        testbed="stream",
        stopped_early=stopped,
        documents_trained=steps * config.batch_size,
        seconds_per_step=history[-1]["spent"][0] / max(steps, 1),
        **probes,
    )
