"""A fabricated, internally consistent analysed run: the tables of docs/architecture.md, built with numpy.

Domains memorize at different times, pathway distance rises while a group is being memorized and then
falls, consistency drifts after memorization, and accuracy rises (except in ``chem``, which never
generalizes). Group aggregates are computed from the per-sample table, correlations with scipy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats

RISE = {"math": 0.45, "code": 0.65, "chem": None}  # where accuracy starts rising, as a fraction of
# the last step; None: never
N_PER_DOMAIN = 24
N_ITEMS = 40
N_LAYERS = 4


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sample_metrics(rng: np.random.Generator, steps: np.ndarray, domains: list[str]) -> tuple:
    n = N_PER_DOMAIN * len(domains)
    domain = np.repeat(domains, N_PER_DOMAIN)
    onset = rng.choice(steps[2:14], size=n)
    onset[rng.random(n) < 0.3] = -1
    eps = {d: 0.4 + 0.1 * i for i, d in enumerate(domains)}
    e = np.array([eps[d] for d in domain])
    s = steps[None, :]
    loss = np.where(
        onset[:, None] < 0,
        1.2 + 1.5 * np.exp(-s / 800.0),
        np.where(
            s >= onset[:, None],
            0.6 * e[:, None],
            0.6 * e[:, None] + 0.3 + 1.5 * (onset[:, None] - s) / steps[-1],
        ),
    ) + rng.normal(0, 0.005, (n, len(steps)))
    drift = _sigmoid((s - 1100.0) / 250.0)
    consistency = 0.35 + 0.4 * drift + rng.normal(0, 0.03, (n, len(steps)))
    consistency.ravel()[rng.choice(consistency.size, 7, replace=False)] = np.nan
    cosine = 0.85 - 0.3 * drift + rng.normal(0, 0.02, (n, len(steps)))
    experts = rng.integers(0, 8, (n, len(steps), N_LAYERS))
    pathways = [
        "-".join(f"{x},{(x + 1) % 8}" for x in experts[i, t])
        for i in range(n)
        for t in range(len(steps))
    ]
    table = pl.DataFrame(
        {
            "sample_index": np.repeat(np.arange(n), len(steps)),
            "id": np.repeat([f"s{i}" for i in range(n)], len(steps)),
            "domain": np.repeat(domain, len(steps)),
            "step": np.tile(steps, n),
            "loss": loss.ravel(),
            "n_tokens": np.full(n * len(steps), 64),
            "pathway": pathways,
            "consistency": consistency.ravel(),
            "smoothness": 1.0 - consistency.ravel(),
            "adjacent_cosine": cosine.ravel(),
        }
    )
    onsets = pl.DataFrame(
        {
            "sample_index": np.arange(n),
            "id": [f"s{i}" for i in range(n)],
            "domain": domain,
            "mem_onset": onset,
            "epsilon": e,
        }
    )
    last = steps[-1]
    epsilon = pl.DataFrame(
        {
            "domain": domains,
            "epsilon": [eps[d] for d in domains],
            "memorized_fraction": [
                float(np.mean((onset[domain == d] >= 0) & (onset[domain == d] < last)))
                for d in domains
            ],
        }
    )
    return table, onsets, epsilon


def _group_metrics(
    sample: pl.DataFrame, onsets: pl.DataFrame, steps: np.ndarray, domains: list[str]
) -> pl.DataFrame:
    joined = sample.join(onsets.select("sample_index", "mem_onset"), on="sample_index")
    pooled = joined.with_columns(pl.lit("all").alias("domain"))
    rows = []
    for frame in (joined, pooled):
        by_onset = [
            (f"train@{t}", frame.filter(pl.col("mem_onset") == t))
            for t in sorted(set(frame["mem_onset"].to_list()) - {-1})
        ]  # like analyze_run: per-onset groups per domain only, not pooled
        memorized = ("memorized", frame.filter(pl.col("mem_onset") >= 0))
        for group_name, sel in [("all", frame), memorized] + (by_onset if frame is joined else []):
            agg = (
                sel.group_by("domain", "step")
                .agg(
                    pl.len().alias("n_samples"),
                    pl.col("consistency").fill_nan(None).mean().alias("consistency"),
                    pl.col("smoothness").fill_nan(None).mean().alias("smoothness"),
                    pl.col("adjacent_cosine").mean(),
                    pl.col("consistency").is_nan().sum().cast(pl.Int64).alias("consistency_nan"),
                    pl.col("loss").mean(),
                    ((pl.col("mem_onset") >= 0) & (pl.col("mem_onset") <= pl.col("step")))
                    .mean()
                    .alias("memorized_fraction"),
                )
                .with_columns(pl.lit(group_name).alias("group"))
            )
            rows.append(agg)
    agg = pl.concat(rows)
    peak = (
        pl.when(pl.col("group") == "all")
        .then(0.4 * steps[-1])
        .when(pl.col("group") == "memorized")
        .then(0.45 * steps[-1])
        .otherwise(pl.col("group").str.strip_prefix("train@").cast(pl.Float64, strict=False))
    )
    width = 0.18 * steps[-1]
    per_layer = []
    for layer in range(-1, N_LAYERS):
        scale = 40.0 if layer == -1 else 8.0 * (1.0 - 0.15 * layer)
        d = scale * (1.0 + 1.5 * (-(((pl.col("step") - peak) / width) ** 2)).exp())
        rows = agg if layer == -1 else agg.filter(pl.col("n_samples") > 1)
        per_layer.append(
            rows.with_columns(
                pl.lit(layer).alias("layer"),
                pl.lit("char" if layer == -1 else "expert").alias("unit"),
                pl.when(pl.col("n_samples") > 1).then(d).otherwise(float("nan")).alias("distance"),
                (pl.col("n_samples") * (pl.col("n_samples") - 1) // 2).alias("n_pairs"),
            )
        )
    # per-layer rows carry distances only; a validation set carries its loss only
    per_layer[1:] = [
        p.with_columns(
            pl.lit(None, pl.Float64).alias(c)
            for c in ("consistency", "smoothness", "adjacent_cosine", "loss", "memorized_fraction")
        )
        for p in per_layer[1:]
    ]
    validation = (
        sample.filter(pl.col("domain") == domains[0])
        .group_by("step")
        .agg(pl.len().alias("n_samples"), (pl.col("loss") + 0.3).mean().alias("loss"))
        .with_columns(
            domain=pl.lit("validation"), group=pl.lit("all"), layer=pl.lit(-1), unit=pl.lit("char")
        )
    )
    out = pl.concat([*per_layer, validation], how="diagonal_relaxed").with_columns(
        (pl.col("distance") * 0.97).alias("distance_ci_low"),
        (pl.col("distance") * 1.03).alias("distance_ci_high"),
    )
    return out.select(
        "domain",
        "group",
        "step",
        "layer",
        "unit",
        "distance",
        "distance_ci_low",
        "distance_ci_high",
        "n_samples",
        "n_pairs",
        "consistency",
        "smoothness",
        "adjacent_cosine",
        "consistency_nan",
        "loss",
        "memorized_fraction",
    ).sort("domain", "group", "step", "layer")


def _ground_truth(rng: np.random.Generator, steps: np.ndarray, domains: list[str]) -> tuple:
    acc_rows, item_rows = [], []
    for d in domains:
        rise = None if RISE.get(d) is None else RISE[d] * steps[-1]
        acc = (
            0.1 + 0.05 * rng.random(len(steps))
            if rise is None
            else 0.1 + 0.75 * _sigmoid((steps - rise - 0.15 * steps[-1]) / (0.075 * steps[-1]))
        )
        acc_rows.append(
            pl.DataFrame({"step": steps, "domain": d, "accuracy": acc, "n_items": N_ITEMS})
        )
        gen = np.full(N_ITEMS, -1)
        if rise is not None:
            gen = rng.choice(steps[steps > rise], size=N_ITEMS)
            gen[rng.random(N_ITEMS) < 0.2] = -1
        item_rows.append(
            pl.DataFrame(
                {"item_id": [f"{d}-q{i}" for i in range(N_ITEMS)], "domain": d, "gen_onset": gen}
            )
        )
    acc = pl.concat(acc_rows)
    pooled = acc.group_by("step").agg(pl.col("accuracy").mean(), pl.col("n_items").sum())
    pooled = pooled.with_columns(domain=pl.lit("all")).select(acc.columns)  # as analyze_run writes
    return pl.concat([acc, pooled]).sort("domain", "step"), pl.concat(item_rows)


def _matches(
    onsets: pl.DataFrame, test_onsets: pl.DataFrame, rng: np.random.Generator
) -> pl.DataFrame:
    rows = []
    for (d,), items in test_onsets.group_by("domain"):
        mem = sorted(set(onsets.filter(domain=d)["mem_onset"].to_list()) - {-1})
        gen = sorted(set(items["gen_onset"].to_list()) - {-1})
        for t_mem, t_gen in zip(mem, gen, strict=False):
            rows.append(
                {
                    "domain": d,
                    "train_group": f"train@{t_mem}",
                    "test_group": f"test@{t_gen}",
                    "mem_onset": t_mem,
                    "gen_onset": t_gen,
                    "delay": t_gen - t_mem,
                    "similarity": float(rng.uniform(0.3, 0.8)),
                }
            )
    return pl.DataFrame(rows)


def _ci(r: float, n: int) -> tuple[float, float]:
    z, se = np.arctanh(np.clip(r, -0.999, 0.999)), 1.0 / np.sqrt(max(n - 3, 1))
    return float(np.tanh(z - 1.96 * se)), float(np.tanh(z + 1.96 * se))


def _correlations(
    group: pl.DataFrame, accuracy: pl.DataFrame, rng: np.random.Generator
) -> pl.DataFrame:
    acc = accuracy.drop("n_items")
    rows = []
    for d, fraction in [("all", 0.45), *RISE.items()]:
        if fraction is None:
            continue
        rise = fraction * group["step"].max()
        j = (
            group.filter(domain=d, group="all", layer=-1)
            .join(acc.filter(domain=d), on=["domain", "step"])
            .filter(pl.col("step") >= rise)
            .sort("step")
        )
        if j.height < 3:
            continue
        y = j["accuracy"].to_numpy()
        metrics = {
            c: j[c].to_numpy() for c in ("distance", "consistency", "smoothness", "adjacent_cosine")
        }
        metrics["train_loss"] = j["loss"].to_numpy()  # the names analyze_run gives them
        metrics["validation_loss"] = 2.0 - y + rng.normal(0, 0.05, len(y))
        for metric, x in metrics.items():
            pr, pp = stats.pearsonr(x, y)
            sr, sp = stats.spearmanr(x, y)
            rows.append(
                {
                    "domain": d,
                    "metric": metric,
                    "needs": "held-out data" if metric == "validation_loss" else "training data",
                    "n": len(y),
                    "first_step": int(j["step"][0]),
                    "last_step": int(j["step"][-1]),
                    "pearson_r": float(pr),
                    "pearson_p": float(pp),
                    "pearson_ci_low": _ci(pr, len(y))[0],
                    "pearson_ci_high": _ci(pr, len(y))[1],
                    "spearman_rho": float(sr),
                    "spearman_p": float(sp),
                    "spearman_ci_low": _ci(sr, len(y))[0],
                    "spearman_ci_high": _ci(sr, len(y))[1],
                }
            )
    return pl.DataFrame(rows)


def make_run(
    root: Path,
    *,
    n_steps: int = 20,
    domains: tuple[str, ...] = ("math", "code", "chem"),
    accuracy: bool = True,
    seed: int = 0,
) -> Path:
    """Write a fabricated analysed run directory under ``root`` and return it."""
    rng = np.random.default_rng(seed)
    steps = 100 * np.arange(1, n_steps + 1)
    run = root / "run"
    (run / "tables").mkdir(parents=True)
    manifest = {
        "format_version": 1,
        "pathwatch_version": "0.1.0",
        "model": {
            "family": "olmoe",
            "model_type": "olmoe",
            "n_layers": N_LAYERS,
            "moe_layers": list(range(N_LAYERS)),
            "n_experts": 8,
            "top_k": 2,
        },
        "checkpoints": [
            {"step": int(s), "path": f"ckpt/step{s}", "name": f"step{s}"} for s in steps
        ],
        "samples": {
            "path": "samples.jsonl",
            "sha256": "0" * 64,
            "count": N_PER_DOMAIN * len(domains),
            "shard_size": 64,
        },
        "settings": {"batch_size": 16, "max_length": 512},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    sample, onsets, epsilon = _sample_metrics(rng, steps, list(domains))
    group = _group_metrics(sample, onsets, steps, list(domains))
    tables = {
        "sample_metrics": sample,
        "onsets": onsets,
        "epsilon": epsilon,
        "group_metrics": group,
    }
    if accuracy:
        acc, test_onsets = _ground_truth(rng, steps, list(domains))
        tables |= {
            "accuracy": acc,
            "test_onsets": test_onsets,
            "matches": _matches(onsets, test_onsets, rng),
            "correlations": _correlations(group, acc, rng),
        }
    for name, table in tables.items():
        table.write_parquet(run / "tables" / f"{name}.parquet")
    return run
