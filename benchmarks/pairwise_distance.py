"""Exact mean pairwise pathway distance: pathwatch against bare rapidfuzz and a plain Python DP.

Paper-like pathways: N samples, 16 MoE layers, 64 experts, threshold 0.7. Mean weights are the
softmax of logits = a preference per layer shared by all samples + per-sample noise, scaled so that
about 6 experts (4-10 in most layers) pass 0.7, as with OLMoE's top-8 routing.

1. Time (CPU and wall), same run, same strings, for unit "char" (the pathway strings) and unit
   "expert" (one code point per expert id and layer boundary): ``pw.mean_pairwise_distance``
   (distinct strings weighted by their counts, upper triangle in row blocks, building the strings
   included) against one bare ``rapidfuzz.process.cdist(strings, strings, workers=-1)`` (symmetric:
   each pair once, int16, full N x N matrix), on N distinct pathways and on N / ``--copies``
   distinct pathways with ``--copies`` copies each; then a plain dynamic-programming Levenshtein on
   a random subsample of pairs, extrapolated to all pairs. Issue 16's target: >= 2x faster than
   bare rapidfuzz, same mean to 1e-9.
2. The sampled estimate (``pairwise_distance_stats(max_pairs=...)``) against the exact mean.
3. Memory: peak RSS of a fresh process running the exact blockwise mean over N pathways, for N up
   to 50,000 (1.25e9 pairs). Those probe pathways are one expert in one layer, so the pairs finish in
   about a minute on 2 cores: the blockwise memory depends on N, not on the pathway length. A bare
   cdist would hold the N x N int16 matrix. Then a 50,000-sample paper-like run: pathways, strings
   and a sampled estimate.

    .venv/bin/python benchmarks/pairwise_distance.py [--n 5000] [--copies 5] [--large 50000 (0: skip
        the memory probes)] [--dp-pairs 40]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

import pathwatch as pw
from pathwatch.metrics import Pathways, pairwise_distance_stats


def paper_like_weights(
    n: int, *, n_layers: int = 16, n_experts: int = 64, seed: int = 0
) -> np.ndarray:
    """Mean routing weights of shape (n, n_layers, n_experts), float32, rows summing to 1."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((1, n_layers, n_experts), dtype=np.float32)
    logits = rng.standard_normal((n, n_layers, n_experts), dtype=np.float32)
    logits *= 2.2 * 0.85
    logits += 2.2 * 0.5 * shared
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits, out=logits)
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights


def dp_levenshtein(a: str, b: str) -> int:
    """Textbook dynamic programme, one row at a time."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def memory_mib() -> tuple[float, float]:
    """Current and peak resident memory of this process image, in MiB (Linux VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))


def probe(n: int) -> None:
    """Child process: exact blockwise mean over n one-symbol pathways; print seconds and RSS."""
    ids = np.random.default_rng(0).integers(0, 10, size=(n, 1, 1))
    p = Pathways(ids, np.ones((n, 1), dtype=np.int64))
    p.strings()
    before = memory_mib()[0]
    start = time.perf_counter()
    pw.mean_pairwise_distance(p)
    print(f"{time.perf_counter() - start:.1f} {before:.1f} {memory_mib()[1]:.1f}")


def row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="pathways in the timed comparison")
    parser.add_argument("--large", type=int, default=50_000, help="pathways in the memory probes")
    parser.add_argument("--dp-pairs", type=int, default=40, help="pairs timed with the Python DP")
    parser.add_argument("--sample-pairs", type=int, default=200_000)
    parser.add_argument(
        "--copies", type=int, default=5, help="copies per pathway in the second comparison"
    )
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe)
        return

    n_pairs = args.n * (args.n - 1) // 2
    p = pw.pathways(paper_like_weights(args.n))
    strings = p.strings()
    kept = p.counts.mean(axis=0)
    print(
        f"{args.n} paper-like pathways: 16 layers x 64 experts, threshold 0.7; experts kept per layer "
        f"{p.counts.mean():.2f} (layer means {kept.min():.1f}-{kept.max():.1f}); "
        f"string length {np.mean([len(s) for s in strings]):.0f} chars; {n_pairs:,} pairs",
        flush=True,
    )

    for unit, label in (("char", "the pathway strings"), ("expert", "one code point per expert")):
        for copies in (1, args.copies):
            distinct = args.n // copies
            # `copies` copies of each pathway, shuffled: a group whose members share pathways
            order = np.random.default_rng(2).permutation(np.arange(args.n) % distinct)
            seqs = pw.pathways(paper_like_weights(distinct)).sequences(unit)[order].tolist()
            fresh = pw.pathways(paper_like_weights(distinct))[order]  # strings not built yet
            print(
                f"\n## Exact mean, unit={unit!r} ({label}), {distinct:,} distinct pathways "
                f"x {copies} copies; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
            )
            row("method", "CPU s", "wall s", "ratio to bare rapidfuzz (CPU, wall)", "mean distance")
            row("---", "---", "---", "---", "---")
            clock, cpu = time.perf_counter(), time.process_time()
            matrix = process.cdist(
                seqs, seqs, scorer=Levenshtein.distance, dtype=np.int16, workers=-1
            )
            bare_mean = matrix.sum(dtype=np.int64) / (2 * n_pairs)
            bare = (time.process_time() - cpu, time.perf_counter() - clock)
            del matrix
            row(
                "bare rapidfuzz cdist (symmetric, full matrix)",
                f"{bare[0]:.1f}",
                f"{bare[1]:.1f}",
                "1.00, 1.00",
                f"{bare_mean:.6f}",
            )
            clock, cpu = time.perf_counter(), time.process_time()
            mean = pw.mean_pairwise_distance(fresh, unit)  # building the strings is timed
            ours = (time.process_time() - cpu, time.perf_counter() - clock)
            row(
                "pathwatch mean_pairwise_distance",
                f"{ours[0]:.1f}",
                f"{ours[1]:.1f}",
                f"{ours[0] / bare[0]:.2f}, {ours[1] / bare[1]:.2f}",
                f"{mean:.6f}",
            )
            print(
                f"\nspeed-up over bare rapidfuzz: {bare[0] / ours[0]:.2f}x CPU, "
                f"{bare[1] / ours[1]:.2f}x wall; |pathwatch - bare| = {abs(mean - bare_mean):.1e}"
            )
            if unit == "char" and copies == 1:
                ours_mean, rate, bare_char = mean, n_pairs / ours[1], bare[1]

    print("\n## Plain Python DP, unit='char'\n")
    row("method", "seconds", "pairs/s", "ratio to bare rapidfuzz (wall)", "check")
    row("---", "---", "---", "---", "---")
    pairs = np.random.default_rng(1).choice(args.n, size=(args.dp_pairs, 2))
    start = time.perf_counter()
    dp = [dp_levenshtein(strings[i], strings[j]) for i, j in pairs]
    per_pair = (time.perf_counter() - start) / args.dp_pairs
    agrees = dp == [Levenshtein.distance(strings[i], strings[j]) for i, j in pairs]
    row(
        f"plain Python DP (extrapolated from {args.dp_pairs} pairs)",
        f"{per_pair * n_pairs:,.0f}",
        f"{1 / per_pair:,.0f}",
        f"{per_pair * n_pairs / bare_char:,.0f}",
        f"(same distances on its pairs: {agrees})",
    )

    print(f"\n## Sampled estimate ({args.sample_pairs:,} pairs) against the exact mean\n")
    row("seed", "seconds", "mean", "95% CI", "covers exact")
    row("---", "---", "---", "---", "---")
    for seed in range(3):
        start = time.perf_counter()
        s = pairwise_distance_stats(p, max_pairs=min(args.sample_pairs, n_pairs - 1), seed=seed)
        row(
            seed,
            f"{time.perf_counter() - start:.2f}",
            f"{s.mean:.3f}",
            f"[{s.ci_low:.3f}, {s.ci_high:.3f}]",
            s.ci_low <= ours_mean <= s.ci_high,
        )

    if args.large == 0:
        return
    print("\n## Memory of the exact blockwise mean (fresh process per N)\n")
    row(
        "N",
        "pairs",
        "seconds",
        "RSS before the call (MiB)",
        "peak RSS (MiB)",
        "bare cdist matrix (MiB)",
    )
    row("---", "---", "---", "---", "---", "---")
    for n in sorted({args.large // 10, args.large // 2, args.large}):
        out = subprocess.run(
            [sys.executable, __file__, "--probe", str(n)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        row(f"{n:,}", f"{n * (n - 1) // 2:,}", out[0], out[1], out[2], f"{n * n * 2 / 2**20:,.0f}")

    print(f"\n## {args.large:,} paper-like pathways\n")
    weights = paper_like_weights(args.large, seed=1)
    before = memory_mib()[0]
    start = time.perf_counter()
    large = pw.pathways(weights)
    built = time.perf_counter() - start
    start = time.perf_counter()
    large.strings()
    stringified = time.perf_counter() - start
    start = time.perf_counter()
    s = pairwise_distance_stats(large, max_pairs=args.sample_pairs, seed=0)
    sampled = time.perf_counter() - start
    total = args.large * (args.large - 1) // 2
    print(
        f"pathways {built:.1f} s, strings {stringified:.1f} s, sampled mean over "
        f"{s.n_pairs:,} pairs {sampled:.1f} s: {s.mean:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}]; "
        f"exact ({total:,} pairs) extrapolated at the rate above: "
        f"{total / rate / 60:,.0f} min. RSS with the {weights.nbytes / 2**20:,.0f} MiB "
        f"weights loaded {before:,.0f} MiB; after pathways, strings and sampling "
        f"{memory_mib()[0]:,.0f} MiB (peak of the whole benchmark {memory_mib()[1]:,.0f} MiB)"
    )


if __name__ == "__main__":
    main()
