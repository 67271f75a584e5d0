"""How ``pathwatch analyze`` scales with the number of samples, on a fabricated paper-size run store.

The store is written with pathwatch's own writer (:class:`pathwatch.store.RunStore`): T checkpoints
x N samples x L MoE layers x E experts, router matrices (E, H) per layer, samples in four domains.
Routing is realistic in shape, not in value: each domain prefers its own experts per layer (a
Dirichlet draw), samples scatter around their domain's preference, more while they are being
memorized and less afterwards, and the preferences drift slowly over checkpoints; losses fall
from ~3 nats with a per-sample rate, so a share of the samples is memorized (flat at a low loss)
before the last checkpoint. ``pathwatch analyze`` then runs in a child process and its wall time,
CPU time (user + system, of the child) and peak resident memory (``os.wait4``) are reported, per
scale of the factor ``--vary`` (samples, checkpoints or sampled pairs), with the growth exponent of
CPU time and of peak memory in that factor (least-squares slope of log CPU-s on log scale: 1 is
linear, 0 flat) and the memory per sample (peak RSS over the samples).

    nice -n 10 .venv/bin/python benchmarks/analyze_scale.py --samples 10000 --scales 1,2,4 \\
        [--vary samples --checkpoints 10 --layers 16 --experts 64 --hidden 2048 --max-pairs 200000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from pathwatch.store import CheckpointData, RunStore
from pathwatch.store.manifest import CheckpointInfo, Manifest, ModelInfo, SamplesInfo, Settings

DOMAINS = ("math", "code", "commonsense", "chemistry")
SHARD_SIZE = 1024


def fabricate(
    out: Path, *, n: int, steps: list[int], layers: int, experts: int, hidden: int, seed: int = 0
) -> RunStore:
    """Write a complete run store of ``n`` samples at ``steps`` into ``out`` (streamed per shard)."""
    rng = np.random.default_rng(seed)
    manifest = Manifest(
        model=ModelInfo("olmoe", "olmoe", layers, tuple(range(layers)), experts, 8),
        checkpoints=tuple(CheckpointInfo(s, f"/fabricated/step-{s}", f"step-{s}") for s in steps),
        samples=SamplesInfo("fabricated.jsonl", "0" * 64, n, SHARD_SIZE),
        settings=Settings(batch_size=16, max_length=512),
        pathwatch_version="benchmark",
    )
    store = RunStore.create(out, manifest)
    domain = rng.integers(0, len(DOMAINS), n)
    store.write_samples(
        pl.DataFrame(
            {
                "sample_index": np.arange(n),
                "id": [f"s{i}" for i in range(n)],
                "domain": np.asarray(DOMAINS)[domain],
                "text": [None] * n,
            },
            schema={
                "sample_index": pl.Int64,
                "id": pl.String,
                "domain": pl.String,
                "text": pl.String,
            },
        )
    )
    # per domain and layer: log-preference over experts; per sample: its own offsets and loss curve
    preference = np.log(rng.dirichlet(np.full(experts, 0.3), (len(DOMAINS), layers)))
    offsets = rng.standard_normal((n, layers, experts)).astype(np.float32)
    drift = rng.standard_normal((len(steps), len(DOMAINS), layers, experts)).cumsum(0) * 0.1
    rate = rng.gamma(2.0, 1.0, n)  # memorization speed
    floor = rng.uniform(0.02, 0.4, n)  # loss once memorized
    for t, step in enumerate(steps):
        progress = (t + 1) / len(steps)
        loss = (floor + (3.0 - floor) * np.exp(-4 * rate * progress)).astype(np.float32)
        # scatter rises while a sample is being memorized, then falls (generalization)
        memorizing = np.exp(-4 * rate * progress) * (1 - np.exp(-4 * rate * progress))
        scatter = (0.5 + 4 * memorizing)[:, None, None].astype(np.float32)
        for shard in range(store.n_shards):
            start, stop = manifest.samples.shard_bounds(shard)
            logits = (preference + drift[t])[domain[start:stop]] + scatter[start:stop] * offsets[
                start:stop
            ]
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            store.write_unit(
                step,
                shard,
                CheckpointData(
                    weights.astype(np.float32),
                    loss[start:stop],
                    rng.integers(64, 512, stop - start),
                    np.zeros(stop - start, bool),
                ),
            )
        store.write_router_weights(
            step, list(rng.standard_normal((layers, experts, hidden), dtype=np.float32))
        )
    return store


def measure(command: list[str]) -> dict[str, float]:
    """Run ``command``; its wall seconds, CPU seconds (user + system) and peak RSS in MiB."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed with {os.waitstatus_to_exitcode(status)}")
    rss_kib = usage.ru_maxrss  # KiB on Linux
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": rss_kib / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000, help="samples at scale 1")
    parser.add_argument("--scales", default="1,2,4")
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--root", type=Path, default=Path("/tmp/pathwatch-scale"))
    parser.add_argument("--max-pairs", type=int, default=200_000, help="passed to analyze")
    parser.add_argument("--keep", action="store_true", help="keep the fabricated stores")
    parser.add_argument(
        "--vary",
        choices=("samples", "checkpoints", "pairs"),
        default="samples",
        help="the factor that --scales multiplies",
    )
    args = parser.parse_args()

    print(
        f"L={args.layers} E={args.experts} H={args.hidden}; pathwatch analyze RUN --no-progress "
        "--max-pairs P (threshold 0.7, unit char); load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print(
        "| T | samples | pairs P | store MiB | fabricate s | analyze wall s | analyze CPU s "
        "| peak RSS MiB | KiB per sample |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    scales = [int(s) for s in args.scales.split(",")]
    cpu, rss = [], []
    for scale in scales:
        n = args.samples * (scale if args.vary == "samples" else 1)
        t = args.checkpoints * (scale if args.vary == "checkpoints" else 1)
        pairs = args.max_pairs * (scale if args.vary == "pairs" else 1)
        out = args.root / f"run-{n}-{t}"
        if args.vary != "pairs" or scale == scales[0]:  # one store serves every pair count
            shutil.rmtree(out, ignore_errors=True)
            clock = time.perf_counter()
            steps = [5000 * (i + 1) for i in range(t)]
            fabricate(
                out, n=n, steps=steps, layers=args.layers, experts=args.experts, hidden=args.hidden
            )
            made = f"{time.perf_counter() - clock:.0f}"
        else:
            made = "reused"
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
        analyze = ["analyze", str(out), "--no-progress", "--max-pairs", str(pairs)]
        result = measure([sys.executable, "-m", "pathwatch", *analyze])
        cpu.append(result["cpu_s"])
        rss.append(result["peak_rss_mib"])
        print(
            f"| {t} | {n:,} | {pairs:,} | {size:,.0f} | {made} | {result['wall_s']:.0f} "
            f"| {result['cpu_s']:.0f} | {result['peak_rss_mib']:,.0f} "
            f"| {result['peak_rss_mib'] * 1024 / n:,.1f} |",
            flush=True,
        )
        if not args.keep and args.vary != "pairs":
            shutil.rmtree(out)
    if len(scales) > 1 and args.vary == "samples":
        added = (rss[-1] - rss[0]) * 1024 / (args.samples * (scales[-1] - scales[0]))
        print(
            f"memory per added sample (peak RSS difference over sample difference): {added:.1f} KiB"
        )
    if len(scales) > 1:
        x = np.log(scales)
        slope = {name: np.polyfit(x, np.log(v), 1)[0] for name, v in (("CPU", cpu), ("RSS", rss))}
        print(
            f"growth exponent in {args.vary} (log-log slope over scales {args.scales}): "
            f"CPU {slope['CPU']:.2f}, peak RSS {slope['RSS']:.2f}; load average after "
            + " ".join(f"{x:.2f}" for x in os.getloadavg())
        )
    if not args.keep and args.vary == "pairs":
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
