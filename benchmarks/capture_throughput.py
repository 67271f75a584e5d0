"""Per-unit capture throughput of ``capture_run`` (load, forward, reduce, write) on the mid-size OLMoE.

The mid-size configuration of ``capture_overhead.py`` (8 layers, hidden 512, 32 experts, top-4,
vocabulary 32k) is saved with ``save_pretrained``; ``capture_run`` then captures token-id samples of
192-256 tokens into units of ``--shard-size`` samples. Reports samples/s and tokens/s per unit
(CPU seconds of this process and wall seconds), and the model's active parameters per token, the
basis of the GPU extrapolation in docs/scaling.md.

    nice -n 10 .venv/bin/python benchmarks/capture_throughput.py [--samples 96 --shard-size 24 --threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from capture_overhead import SETUPS, _model, _samples
from pathwatch.capture.run import capture_run


def active_parameters(model: torch.nn.Module) -> int:
    """Parameters one token passes through: everything but the experts, plus top-k of E experts."""
    config = model.config
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    return total - experts + experts * config.num_experts_per_tok // config.num_experts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--shard-size", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup = SETUPS["mid"]
    setup = type(setup)(**{**setup.__dict__, "n_samples": args.samples})
    model = _model(setup)
    samples = _samples(setup)
    tokens = sum(map(len, samples))
    with tempfile.TemporaryDirectory() as root:
        ckpt = Path(root) / "step-1000"
        model.save_pretrained(ckpt)
        samples_file = Path(root) / "samples.jsonl"
        samples_file.write_text("".join(json.dumps({"input_ids": s}) + "\n" for s in samples))
        cpu, wall = time.process_time(), time.perf_counter()
        capture_run(
            [ckpt],
            samples_file,
            Path(root) / "run",
            batch_size=setup.batch_size,
            max_length=setup.max_length,
            shard_size=args.shard_size,
            progress=False,
        )
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    units = -(-args.samples // args.shard_size)
    print(
        f"mid OLMoE ({active_parameters(model) / 1e6:.1f}M active params/token), torch "
        f"{torch.__version__}, {args.threads} thread(s): {args.samples} samples, {tokens} tokens, "
        f"{units} units of {args.shard_size} | CPU {cpu:.1f} s, wall {wall:.1f} s | "
        f"{args.samples / cpu:.2f} samples/CPU-s, {tokens / cpu:.0f} tokens/CPU-s, "
        f"{cpu / units:.1f} CPU-s per unit (incl. model load and writes)"
    )


if __name__ == "__main__":
    main()
