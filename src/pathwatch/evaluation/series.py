"""The correlated series: one row per (step, domain) of every metric and baseline, from the
analysis's ``group_metrics`` table (what :func:`pathwatch.evaluation.correlation_table` takes)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pathwatch.evaluation.correlate import moving_average
from pathwatch.evaluation.early import EARLY

#: Label of the rows that pool every training domain.
POOLED = "all"
#: ``layer`` value of rows about the whole pathway rather than one MoE layer.
WHOLE_PATHWAY = -1


def metric_series(
    groups: pl.DataFrame,
    domains: Sequence[str],
    *,
    validation_domains: Sequence[str] = ("validation",),
    control_domains: Sequence[str] = ("facts",),
) -> pl.DataFrame:
    """One row per (step, domain) with every Table-1 metric, for the correlation step.

    Parameters
    ----------
    groups : polars.DataFrame
        The ``group_metrics`` table.
    domains : sequence of str
        The training domains (the pooled ``all`` rows are added).
    validation_domains : sequence of str
        Domains whose mean loss is the ``validation_loss`` baseline.
    control_domains : sequence of str
        Domains whose churn ``churn_excess`` subtracts.

    Returns
    -------
    polars.DataFrame
        ``step, domain``, the paper's metrics and baselines, then ``distance_early``, ``churn``,
        ``churn_excess``, ``divergence_contrast``.

    Examples
    --------
    >>> rows = [{"domain": d, "group": g, "step": s, "layer": -1, "distance": 5.0 - s,
    ...          "consistency": 0.1, "smoothness": 0.9, "adjacent_cosine": 0.5, "loss": 1.0,
    ...          "n_samples": 4, "churn": 0.1 * s if d == "add" else 0.05, "churn_members": 4,
    ...          "divergence_within": 0.2, "divergence_cross": 0.5}
    ...         for d in ("add", "facts") for g in ("all", "memorized") for s in (1, 2)]
    >>> series = metric_series(pl.DataFrame(rows), ["add", "facts"])
    >>> series.filter(pl.col("domain") == "add")["churn_excess"].round(2).to_list()
    [0.05, 0.15]
    """
    whole = groups.filter(pl.col("layer") == WHOLE_PATHWAY)
    train_domains = [POOLED, *domains]
    base = (
        whole.filter((pl.col("group") == "all") & pl.col("domain").is_in(train_domains))
        .select(
            "step",
            "domain",
            "distance",
            "consistency",
            "smoothness",
            "adjacent_cosine",
            pl.col("loss").alias("train_loss"),
        )
        .sort("domain", "step")
    )
    for group, name in (("memorized", "distance_memorized"), ("tracked", "distance_tracked")):
        base = base.join(
            whole.filter(pl.col("group") == group).select(
                "step", "domain", pl.col("distance").alias(name)
            ),
            on=["step", "domain"],
            how="left",
        )
    series = base.with_columns(
        train_loss_ma=pl.col("train_loss")
        .map_batches(lambda s: pl.Series(moving_average(s.to_numpy())), return_dtype=pl.Float64)
        .over("domain")
    )
    validation = whole.filter(pl.col("domain").is_in(list(validation_domains)))
    if validation.height:
        pooled = validation.group_by("step").agg(
            validation_loss=(pl.col("loss") * pl.col("n_samples")).sum() / pl.col("n_samples").sum()
        )
        series = series.join(pooled, on="step", how="left")
    # columns added after the paper's come last, so that earlier tables keep their layout
    series = series.join(
        whole.filter(pl.col("group") == EARLY).select(
            "step", "domain", pl.col("distance").alias("distance_early")
        ),
        on=["step", "domain"],
        how="left",
    )
    return _churn_series(series, whole, control_domains).sort("domain", "step")


def _churn_series(
    series: pl.DataFrame, whole: pl.DataFrame, control_domains: Sequence[str]
) -> pl.DataFrame:
    """``churn`` and ``divergence_contrast`` (cross − within) of each domain's memorized group,
    and ``churn_excess``: churn minus the control domains' (their members pooled) at each step."""
    memorized = whole.filter(pl.col("group") == "memorized")
    control = (
        memorized.filter(pl.col("domain").is_in(list(control_domains)))
        .filter(pl.col("churn").is_not_nan() & (pl.col("churn_members") > 0))
        .group_by("step")
        .agg(
            control=(pl.col("churn") * pl.col("churn_members")).sum()
            / pl.col("churn_members").sum()
        )
    )
    own = memorized.select(
        "step",
        "domain",
        "churn",
        divergence_contrast=pl.col("divergence_cross") - pl.col("divergence_within"),
    )
    return (
        series.join(own, on=["step", "domain"], how="left")
        .join(control, on="step", how="left")
        .with_columns(churn_excess=pl.col("churn") - pl.col("control"))
        .drop("control")
        .select(*series.columns, "churn", "churn_excess", "divergence_contrast")
    )
