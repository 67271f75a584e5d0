"""MoE pathways vs virtual pathways (an extension beyond the paper) on the grokking testbed.

Given a finished MoE testbed demo directory (``pathwatch demo --out DIR``: ``DIR/testbed`` and the
captured ``DIR/run``), train the *dense* twin of the same configuration and seed (a Llama whose MLP
has the MoE's active width, ``TestbedConfig(dense=True)``), capture it through K virtual experts per
MLP layer (default K = the MoE's expert count), analyse both runs with their own held-out accuracy,
and print the Table-1 correlations side by side. The MoE run is copied and re-analysed with this
pathwatch, so both columns come from the same analysis code.

    nice -n 10 python benchmarks/virtual_vs_moe.py --moe pathwatch-demo --out virtual-vs-moe

Writes ``OUT/comparison.csv`` and prints a Markdown table (Pearson r [95% CI], n per domain).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import polars as pl
import torch

from pathwatch.analysis import analyze_run
from pathwatch.capture.run import capture_run
from pathwatch.config import CaptureConfig
from pathwatch.testbed import TestbedConfig, train_testbed
from pathwatch.testbed.run import TEST_ITEMS


def _cell(row: dict | None) -> str:
    if row is None or row["pearson_r"] != row["pearson_r"]:
        return "n/a"
    return f"{row['pearson_r']:+.2f} [{row['pearson_ci_low']:+.2f}, {row['pearson_ci_high']:+.2f}]"


def _trajectory(run: Path, last_step: int) -> pl.DataFrame:
    """Per domain and step up to ``last_step``: pooled char distance, consistency and probe loss."""
    table = pl.read_parquet(run / "tables" / "group_metrics.parquet")
    return (
        table.filter(
            (pl.col("group") == "all")
            & (pl.col("layer") == -1)
            & (pl.col("step") <= last_step)
            & (pl.col("unit") == "char")
        )
        .select("domain", "step", "distance", "consistency", "loss")
        .drop_nulls("distance")
    )


def _common_window(moe_run: Path, dense_run: Path, e: int, k: int) -> None:
    """Over the steps both runs reached: how distance moves with the probes' training loss."""
    from scipy.stats import pearsonr

    last = min(
        pl.read_parquet(run / "tables" / "group_metrics.parquet")["step"].max()
        for run in (moe_run, dense_run)
    )
    runs = {"MoE": _trajectory(moe_run, last), "virtual": _trajectory(dense_run, last)}
    print(
        f"\nCommon window, steps 0..{last}: pooled char distance (start → max → end) and Pearson r"
    )
    print("of distance with the probes' training loss (memorization tracking)\n")
    print(
        f"| domain | MoE (E={e}) distance | r(dist, loss) | virtual (K={k}) distance | r(dist, loss) |"
    )
    print("|---|---|---|---|---|")
    for domain in sorted(set(runs["MoE"]["domain"]) & set(runs["virtual"]["domain"])):
        cells = []
        for table in runs.values():
            part = table.filter(pl.col("domain") == domain).sort("step")
            d, loss = part["distance"].to_numpy(), part["loss"].to_numpy()
            r = pearsonr(d, loss).statistic if len(d) > 2 and d.std() > 0 else float("nan")
            cells += [f"{d[0]:.2f} → {d.max():.2f} → {d[-1]:.2f}", f"{r:+.2f}"]
        print(f"| {domain} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moe", type=Path, required=True, help="MoE demo directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=None, help="default: the MoE run's seed")
    parser.add_argument("--virtual-experts", type=int, default=None, help="default: the MoE's E")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="cap the dense training (default: the MoE run's max_steps); an interrupted dense run "
        "resumes, and a cap at or below its last checkpoint finishes it there",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    summary = json.loads((args.moe / "testbed" / "testbed.json").read_text())
    # fields newer than the MoE run take the values that reproduce its behaviour (stop rule: all
    # generalizable domains, as before stop_domains existed)
    config = TestbedConfig(
        **{
            "stop_domains": None,
            **summary["config"],
            "dense": True,
            "max_steps": args.max_steps or summary["config"]["max_steps"],
        }
    )
    seed = summary["seed"] if args.seed is None else args.seed
    k = args.virtual_experts or config.num_experts
    args.out.mkdir(parents=True, exist_ok=True)

    moe_run = args.out / "moe-run"
    if not moe_run.exists():
        shutil.copytree(
            args.moe / "run", moe_run, ignore=shutil.ignore_patterns("tables", "figures")
        )
    moe_testbed = args.moe / "testbed"
    moe = analyze_run(
        moe_run,
        accuracy=moe_testbed / "accuracy.jsonl",
        test_items=moe_testbed / TEST_ITEMS,
        progress=False,
    )

    clock = (time.perf_counter(), time.process_time())
    dense = train_testbed(args.out / "dense-testbed", config=config, seed=seed)
    print(
        f"dense testbed: {len(dense.steps)} checkpoints to step {dense.steps[-1]}, "
        f"{dense.train_seconds:.0f} s wall / {dense.cpu_seconds:.0f} s CPU "
        f"({'reused' if dense.reused else 'trained'})"
    )
    samples = args.out / "dense-samples.jsonl"
    samples.write_text(dense.train_samples.read_text() + dense.validation_samples.read_text())
    capture_run(
        list(dense.checkpoints),
        samples,
        args.out / "dense-run",
        config=CaptureConfig(virtual_experts=k),
    )
    virtual = analyze_run(
        args.out / "dense-run",
        accuracy=dense.accuracy_file,
        test_items=dense.out_dir / TEST_ITEMS,
        progress=False,
    )
    print(
        f"dense capture + analysis: {time.perf_counter() - clock[0]:.0f} s wall / "
        f"{time.process_time() - clock[1]:.0f} s CPU (training included)"
    )

    tables = {
        "moe": moe.tables["correlations"],
        "virtual": virtual.tables["correlations"],
    }
    rows = {
        (name, r["domain"], r["metric"]): r
        for name, table in tables.items()
        for r in table.iter_rows(named=True)
    }
    metrics = list(dict.fromkeys([*tables["moe"]["metric"], *tables["virtual"]["metric"]]))
    domains = sorted({d for _, d, _ in rows})
    keys = [
        (d, m)
        for d in domains
        for m in metrics
        if ("moe", d, m) in rows or ("virtual", d, m) in rows
    ]
    records = []
    print(
        f"\n| domain | metric | MoE (E={config.num_experts}) r [95% CI] | n | virtual (K={k}) r [95% CI] | n |"
    )
    print("|---|---|---|---|---|---|")
    for domain, metric in keys:
        a, b = rows.get(("moe", domain, metric)), rows.get(("virtual", domain, metric))
        print(
            f"| {domain} | {metric} | {_cell(a)} | {a['n'] if a else '-'} | {_cell(b)} | "
            f"{b['n'] if b else '-'} |"
        )
        records.append(
            {
                "domain": domain,
                "metric": metric,
                "moe_r": a["pearson_r"] if a else None,
                "moe_n": a["n"] if a else None,
                "virtual_r": b["pearson_r"] if b else None,
                "virtual_n": b["n"] if b else None,
            }
        )
    pl.DataFrame(records).write_csv(args.out / "comparison.csv")
    _common_window(moe.run, virtual.run, config.num_experts, k)
    final = {
        c["domain"]: round(c["heldout_accuracy"], 3)
        for c in dense.curves
        if c["step"] == dense.steps[-1] and "heldout_accuracy" in c
    }
    print(f"\ndense model, final held-out accuracy: {final}")


if __name__ == "__main__":
    main()
