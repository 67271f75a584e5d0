"""Builders of tiny saved checkpoints (model + tokenizer) and sample files for the capture CLI tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


def save_checkpoint(path: Path, model, tokenizer) -> Path:
    """``save_pretrained`` of a model and its tokenizer into ``path``."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@dataclass(frozen=True)
class Checkpoints:
    """Directories of tiny checkpoints and sample files shared by the tests of one session."""

    series: list[
        Path
    ]  # 3 OLMoE checkpoints of one architecture and tokenizer (steps 100, 200, 300)
    samples: Path  # 24 text samples in two domains
    dense: Path  # a Llama (no router)
    other_architecture: Path  # OLMoE with 4 experts instead of 8
    other_tokenizer: Path  # same architecture, a reordered vocabulary
    unnumbered: Path  # a valid checkpoint whose name has no trailing number
    untokenized: Path  # a valid model saved without a tokenizer (step 500)
    diverged: Path  # NaN weights (step 600)


def sample_rows(n: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        a, b = torch.randint(0, 50, (2,), generator=gen).tolist()
        if i % 2:
            rows.append({"id": f"m{i}", "domain": "math", "text": f"{a} + {b} = {a + b}"})
        else:
            rows.append(
                {"id": f"t{i}", "domain": "text", "text": f"the cat sat on the mat {a} {b}"}
            )
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    """Write one JSON value per line (strings are written verbatim, to make malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def save_model(path: Path, model) -> Path:
    model.save_pretrained(path)
    return path


def diverged(model):
    """The model with NaN embeddings, as after a diverged training step."""
    with torch.no_grad():
        model.get_input_embeddings().weight.fill_(float("nan"))
    return model
