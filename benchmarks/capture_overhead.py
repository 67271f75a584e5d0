"""Overhead of ``pw.capture`` over a bare forward pass of the same batches.

Both sides see the same length-sorted batches, the same padding and the same forward arguments
(``attention_mask``, ``position_ids``, ``use_cache=False``) under ``torch.inference_mode``; capture
adds sample checks, the router hooks, the per-sample reductions and the loss. Runs alternate (bare,
capture). Times are CPU seconds of this process (``time.process_time``; robust when other jobs share
the cores) and wall seconds; the ratio reported is the median over repeats of capture / bare, plus
the ratio of the best times. Target (issue 16): median <= 1.03 over >= 5 repeats.

    .venv/bin/python benchmarks/capture_overhead.py [--config tiny|mid|all] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import OlmoeConfig, OlmoeForCausalLM

import pathwatch as pw


@dataclass(frozen=True)
class Setup:
    """One benchmark configuration: an OLMoE architecture and a sample set."""

    name: str
    config: dict
    n_samples: int
    min_length: int
    max_length: int
    batch_size: int = 16


SETUPS = {
    "tiny": Setup(
        "tiny",
        {
            "vocab_size": 128,
            "hidden_size": 64,
            "intermediate_size": 32,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "num_experts": 8,
            "num_experts_per_tok": 2,
        },
        n_samples=512,
        min_length=8,
        max_length=32,
    ),
    "mid": Setup(
        "mid",
        {
            "vocab_size": 32000,
            "hidden_size": 512,
            "intermediate_size": 256,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
            "num_experts": 32,
            "num_experts_per_tok": 4,
        },
        n_samples=24,
        min_length=192,
        max_length=256,
    ),
}


def _model(setup: Setup) -> OlmoeForCausalLM:
    torch.manual_seed(0)
    config = OlmoeConfig(
        **setup.config,
        max_position_embeddings=setup.max_length,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return OlmoeForCausalLM(config).eval()


def _samples(setup: Setup) -> list[list[int]]:
    rng = np.random.default_rng(0)
    lengths = rng.integers(setup.min_length, setup.max_length + 1, size=setup.n_samples)
    return [rng.integers(3, setup.config["vocab_size"], size=int(n)).tolist() for n in lengths]


def _bare(model: OlmoeForCausalLM, samples: list[list[int]], batch_size: int) -> None:
    """The forward passes capture makes, without hooks, reductions or loss."""
    ordered = sorted(samples, key=len, reverse=True)
    with torch.inference_mode():
        for start in range(0, len(ordered), batch_size):
            batch = ordered[start : start + batch_size]
            width = len(batch[0])
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, seq in enumerate(batch):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
            model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False)


def _timed(fn) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def run(setup: Setup, repeats: int) -> dict[str, float]:
    """CPU and wall seconds of bare forward and of capture (best of ``repeats``), and their ratios."""
    model, samples = _model(setup), _samples(setup)

    def bare() -> None:
        _bare(model, samples, setup.batch_size)

    def captured() -> None:
        pw.capture(model, samples, batch_size=setup.batch_size, max_length=setup.max_length)

    bare(), captured()  # warm-up
    runs = np.array([[*_timed(bare), *_timed(captured)] for _ in range(repeats)])
    best = runs.min(axis=0)  # bare cpu, bare wall, capture cpu, capture wall
    return {
        "tokens": sum(map(len, samples)),
        "bare_cpu_s": best[0],
        "capture_cpu_s": best[2],
        "ratio_of_best": best[2] / best[0],
        "median_ratio": statistics.median(runs[:, 2] / runs[:, 0]),
        "median_wall_ratio": statistics.median(runs[:, 3] / runs[:, 1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=[*SETUPS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = list(SETUPS) if args.config == "all" else [args.config]
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} repeats")
    for name in names:
        setup = SETUPS[name]
        result = run(setup, args.repeats)
        print(
            f"{name:>5}: {setup.n_samples} samples, {result['tokens']} tokens, batch "
            f"{setup.batch_size} | CPU s (best): bare {result['bare_cpu_s']:.3f}, capture "
            f"{result['capture_cpu_s']:.3f} | capture/bare CPU: best {result['ratio_of_best']:.3f}, "
            f"median {result['median_ratio']:.3f} | wall median {result['median_wall_ratio']:.3f}"
        )


if __name__ == "__main__":
    main()
