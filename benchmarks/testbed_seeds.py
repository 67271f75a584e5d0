"""The demo pipeline on several seeds: grokking, Table-1 correlations and router balance per seed.

Usage: python benchmarks/testbed_seeds.py OUT --seeds 0 1 2 [--figure PNG] [field=value ...]
(fields of TestbedConfig). Runs ``run_demo(OUT/seed-S, seed=S)`` per seed — a finished seed is reused,
so a second call only re-reads — and prints Markdown tables: per seed and domain the grokking steps;
per seed and domain whose held-out accuracy passed 0.5, Pearson r [95% CI] / Spearman ρ of each metric with held-out accuracy
(from the start of its sustained rise, as ``pathwatch analyze`` computes them); and router balance at
the first and last checkpoint (experts per layer that carry 70% of a domain's mean routing weight,
averaged over layers). ``--figure`` draws pathway distance and the training-loss moving average
against held-out accuracy, one panel per metric, one colour per seed and marker per domain.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from pathwatch.demo import DemoResult, run_demo
from pathwatch.store import RunStore
from pathwatch.testbed.grokking import grokking_table
from pathwatch.testbed.train import TestbedConfig

METRICS = (
    "distance",
    "distance_memorized",
    "consistency",
    "smoothness",
    "adjacent_cosine",
    "train_loss",
    "train_loss_ma",
    "validation_loss",
)
MASS = 0.7


def _config(overrides: list[str]) -> TestbedConfig:
    fields = {f.name: f for f in dataclasses.fields(TestbedConfig)}
    changes: dict[str, object] = {}
    for item in overrides:
        key, text = item.split("=", 1)
        default = fields[key].default
        if key == "domains":
            changes[key] = tuple(text.split(","))
        elif text == "None":
            changes[key] = None
        elif isinstance(default, bool):
            changes[key] = text == "True"
        else:
            changes[key] = int(text) if isinstance(default, int) else float(text)
    return dataclasses.replace(TestbedConfig(), **changes)


def experts_for_mass(mean_weights: np.ndarray, mass: float = MASS) -> np.ndarray:
    """Per layer, how many experts carry ``mass`` of the samples' summed routing weight.

    Parameters
    ----------
    mean_weights : numpy.ndarray
        (n, L, E) per-sample mean routing weights.

    Returns
    -------
    numpy.ndarray
        (L,) ints in 1 … E; ``top_k`` or fewer means the domain's routing has collapsed onto a
        fixed pathway, E·mass means perfectly balanced.
    """
    load = mean_weights.sum(0)
    share = np.sort(load, axis=1)[:, ::-1] / load.sum(1, keepdims=True)
    return (np.cumsum(share, axis=1) < mass - 1e-12).sum(1) + 1


def _balance(result: DemoResult) -> pl.DataFrame:
    store = RunStore(result.out / "run")
    samples = store.samples()
    rows = []
    for step in (store.steps[0], store.steps[-1]):
        weights = store.load_checkpoint(step).mean_weights
        for (domain,), part in samples.group_by("domain", maintain_order=True):
            index = part["sample_index"].to_numpy()
            rows.append(
                {
                    "domain": domain,
                    "step": step,
                    "experts_for_70": float(experts_for_mass(weights[index]).mean()),
                }
            )
    return pl.DataFrame(rows)


def _markdown(frame: pl.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def _cell(row: dict) -> str:
    if row["pearson_r"] != row["pearson_r"]:
        return "n/a"
    return (
        f"{row['pearson_r']:+.2f} [{row['pearson_ci_low']:+.2f}, {row['pearson_ci_high']:+.2f}]"
        f" / {row['spearman_rho']:+.2f}"
    )


def _figure(results: dict[int, DemoResult], domains: dict[int, list[str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("distance", "pathway distance"), ("train_loss_ma", "training loss (3-ckpt MA)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2))
    markers = ["o", "s", "^", "D"]
    for seed, result in results.items():
        series = result.analysis.tables["metric_series"]
        accuracy = result.analysis.tables["accuracy"]
        joined = series.join(accuracy, on=["step", "domain"])
        for k, domain in enumerate(domains[seed]):
            part = joined.filter(pl.col("domain") == domain).sort("step")
            for ax, (metric, _) in zip(axes, panels, strict=True):
                ax.plot(
                    part["accuracy"],
                    part[metric],
                    marker=markers[k % len(markers)],
                    markersize=3,
                    linewidth=0.8,
                    color=f"C{seed % 10}",
                    label=f"seed {seed} {domain}",
                )
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_xlabel("held-out accuracy")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle("Domains whose held-out accuracy passed 0.5: every checkpoint, per seed")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--figure", type=Path, help="write the multi-seed figure here (PNG)")
    parser.add_argument("overrides", nargs="*", help="TestbedConfig field=value")
    args = parser.parse_intermixed_args()
    config = _config(args.overrides)
    results = {
        s: run_demo(Path(args.out) / f"seed-{s}", seed=s, config=config, progress=False)
        for s in args.seeds
    }

    grok = pl.concat(
        grokking_table(r.testbed.curves).select(pl.lit(s).alias("seed"), pl.all())
        for s, r in results.items()
    )
    print("## Grokking per seed (steps; null = not reached)\n")
    print(_markdown(grok.with_columns(pl.col(pl.Float64).round(3))))
    n_grokked = grok.group_by("seed").agg((pl.col("step_generalized").is_not_null()).sum())
    k = int((n_grokked["step_generalized"] >= 2).sum())
    print(f"\nSeeds with ≥ 2 domains at held-out ≥ 0.9: {k} of {len(results)}")
    # domains whose held-out accuracy rose past 0.5: the ones with a rise to correlate against
    grokked = {
        s: grok.filter((pl.col("seed") == s) & pl.col("step_half").is_not_null())[
            "domain"
        ].to_list()
        for s in results
    }

    print("\n## Pearson r [95% CI] / Spearman ρ with held-out accuracy (domains past 0.5)\n")
    rows = []
    for seed, result in results.items():
        table = result.analysis.tables["correlations"]
        for domain in grokked[seed]:
            part = table.filter(pl.col("domain") == domain)
            cells = {row["metric"]: _cell(row) for row in part.iter_rows(named=True)}
            rows.append(
                {"seed": seed, "domain": domain, "n": int(part["n"].max())}
                | {m: cells.get(m, "n/a") for m in METRICS}
            )
    print(_markdown(pl.DataFrame(rows)) if rows else "(no domain grokked)")

    print(f"\n## Router balance: experts per layer carrying {MASS:.0%} of the routing weight\n")
    balance = pl.concat(
        _balance(r).select(pl.lit(s).alias("seed"), pl.all()) for s, r in results.items()
    ).with_columns(pl.col("experts_for_70").round(2))
    wide = balance.pivot(on="domain", index=["seed", "step"], values="experts_for_70")
    print(_markdown(wide))

    print("\n## Timings of this call, wall / CPU seconds (reused stages take ~0)\n")
    print(
        _markdown(
            pl.DataFrame(
                [
                    {
                        "seed": s,
                        "steps": r.testbed.steps[-1],
                        "train CPU (recorded)": round(r.testbed.cpu_seconds),
                    }
                    | {k: f"{v:.0f} / {r.cpu_seconds[k]:.0f}" for k, v in r.seconds.items()}
                    for s, r in results.items()
                ]
            )
        )
    )
    if args.figure:
        _figure(results, grokked, args.figure)
        print(f"\nFigure: {args.figure}")


if __name__ == "__main__":
    main()
