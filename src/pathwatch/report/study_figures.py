"""The validation study's two figures: per-run and pooled correlations, and lead/lag curves."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from pathwatch.evaluation.correlate import SIGNALS as METRICS


def study_figures(
    tables: Mapping[str, pl.DataFrame], figures: Path, *, arm: str, analysis: str
) -> list[Path]:
    """``validation-correlations.png`` (per-run and pooled r of every metric on ``arm``, rows of
    ``analysis``) and, with lead/lag rows, ``validation-leadlag.png``, under ``figures``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref_arm = arm
    figures.mkdir(parents=True, exist_ok=True)
    paths = []
    corr = tables["correlations"].filter(
        (pl.col("arm") == ref_arm) & (pl.col("analysis") == analysis) & pl.col("grokked")
    )
    pooled = tables["pooled"].filter(
        (pl.col("arm") == ref_arm)
        & (pl.col("analysis") == analysis)
        & (pl.col("domain") == "grokked")
    )
    metrics = [m for m in METRICS if m in corr["metric"].to_list()]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(metrics) + 1.2))
    for i, metric in enumerate(metrics):
        r = corr.filter(pl.col("metric") == metric)["pearson_r"].to_numpy()
        ax.scatter(r, np.full(r.size, i) + np.linspace(-0.15, 0.15, r.size), s=12, color="#7f7f7f")
        row = pooled.filter(pl.col("metric") == metric)
        if row.height:
            m, lo, hi = row["r_mean"][0], row["r_ci_low"][0], row["r_ci_high"][0]
            ax.errorbar(
                [m],
                [i],
                xerr=[[m - lo], [hi - m]] if np.isfinite(lo) else None,
                fmt="o",
                color="#d62728" if METRICS[metric][1] == "routing" else "#1f77b4",
            )
    ax.axvline(0, color="black", lw=0.5)
    ax.set_yticks(range(len(metrics)), [f"{m} ({METRICS[m][0].split(',')[0]})" for m in metrics])
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(
        "Pearson r with held-out accuracy\n(dots: seed × domain that crossed; marker: pooled, 95% CI)"
    )
    ax.invert_yaxis()
    fig.tight_layout()
    paths.append(figures / "validation-correlations.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    lag = tables["leadlag"].filter(pl.col("arm") == ref_arm)
    if lag.height:
        fig, ax = plt.subplots(figsize=(7, 4))
        for metric in (
            "distance_tracked",
            "distance",
            "train_loss_ma",
            "validation_loss",
            "heldout_loss",
        ):
            part = (
                lag.filter(pl.col("metric") == metric)
                .group_by("lag")
                .agg(pl.col("r").filter(pl.col("r").is_not_nan()).mean())
                .sort("lag")
            )
            if part.height:
                ax.plot(part["lag"], part["r"], marker="o", label=metric)
        ax.axvline(0, color="black", lw=0.5)
        ax.set_xlabel("lag k (metric at t vs accuracy at t + k; k > 0: metric leads)")
        ax.set_ylabel("mean Pearson r over seeds × domains")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(figures / "validation-leadlag.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
