"""Capture on a GPU in bfloat16: capture/bare ratio and tokens per second, mid-size OLMoE.

The mid-size OLMoE of ``benchmarks/capture_overhead.py`` (8 layers, hidden 512, 32 experts, top-4,
vocabulary 32k) is saved in bfloat16 and loaded the way ``pathwatch capture --dtype bfloat16
--device cuda`` loads a checkpoint (``pathwatch.capture.load_model``); then, alternating, the bare
forward passes capture makes (same length-sorted batches, padding and arguments) and ``pw.capture``
(hooks, float32 reductions, loss) run on the same samples, timed with CUDA synchronisation. It
prints the median capture/bare wall ratio, the best times and the tokens per second of each, and
the largest routing and loss differences to a float32 capture of the same model on the same GPU.

Without CUDA it prints one line saying so and exits 0, so it can sit in any script.

    .venv/bin/python benchmarks/capture_gpu.py [--samples 512] [--batch-size 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import OlmoeConfig, OlmoeForCausalLM

import pathwatch as pw
from capture_overhead import SETUPS
from pathwatch.capture import load_model


def _bare(model, samples: list[list[int]], batch_size: int, device: str) -> None:
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
            ids, mask = ids.to(device), mask.to(device)
            position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
            model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False)


def _timed(fn) -> float:
    """Wall seconds of one call, the GPU's queue drained before and after."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("capture_gpu: skipped, no CUDA GPU visible to torch (the benchmark needs one).")
        return
    setup = SETUPS["mid"]
    torch.manual_seed(0)
    config = OlmoeConfig(
        **setup.config,
        max_position_embeddings=setup.max_length,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    rng = np.random.default_rng(0)  # capture_overhead's recipe, with --samples samples
    lengths = rng.integers(setup.min_length, setup.max_length + 1, size=args.samples)
    samples = [rng.integers(3, setup.config["vocab_size"], size=int(n)).tolist() for n in lengths]
    tokens = int(lengths.sum())
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "step-1"
        OlmoeForCausalLM(config).to(torch.bfloat16).save_pretrained(checkpoint)
        model, _ = load_model(checkpoint, dtype="bfloat16", device="cuda")
        reference_model, _ = load_model(checkpoint, dtype="float32", device="cuda")

    def bare() -> None:
        _bare(model, samples, args.batch_size, "cuda")

    def captured() -> pw.Capture:
        return pw.capture(model, samples, batch_size=args.batch_size, max_length=setup.max_length)

    bare(), captured()  # warm-up (kernels, allocator)
    runs = np.array([[_timed(bare), _timed(captured)] for _ in range(args.repeats)])
    result = captured()
    reference = pw.capture(
        reference_model, samples, batch_size=args.batch_size, max_length=setup.max_length
    )
    best = runs.min(axis=0)
    print(
        f"capture_gpu: {torch.cuda.get_device_name()} | torch {torch.__version__} | mid OLMoE "
        f"bf16 | {args.samples} samples, {tokens} tokens, batch {args.batch_size}, "
        f"{args.repeats} repeats"
    )
    print(
        f"  wall s (best): bare {best[0]:.3f}, capture {best[1]:.3f} | capture/bare: median "
        f"{statistics.median(runs[:, 1] / runs[:, 0]):.3f}, best {best[1] / best[0]:.3f} | "
        f"tokens/s: bare {tokens / best[0]:,.0f}, capture {tokens / best[1]:,.0f}"
    )
    print(
        f"  bf16 vs fp32 on this GPU: max |routing diff| "
        f"{np.abs(result.mean_weights - reference.mean_weights).max():.4f}, max loss diff "
        f"{np.abs(result.loss - reference.loss).max() / np.abs(reference.loss).max():.2%} of the "
        "largest loss"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
