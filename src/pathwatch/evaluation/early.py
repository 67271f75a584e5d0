"""The paper's own sample selection: fixed early memorization groups, followed from their own t*.

The paper's Fig. 4 follows a group ``train@t*`` memorized well before accuracy rises and plots its
routing from t* on. Here a domain's *early* groups are its ``train@<t*>`` groups with t* at least
``lead`` checkpoints before the start of accuracy's sustained rise (:func:`rise_start`), and the
group ``early`` is their union, a fixed set of probes followed from the last of their onsets on.
:func:`early_cutoffs` finds the latest admissible t* per domain; :func:`group_correlation_table`
correlates each early group's metrics with accuracy from the group's own t* on.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pathwatch._validate import check_int
from pathwatch.evaluation.correlate import CORRELATION_SCHEMA, correlation_table, rise_start

#: name of the union of a domain's early groups in ``group_metrics``
EARLY = "early"
#: group metrics correlated from the group's own t* on
GROUP_METRICS = ("distance", "consistency", "smoothness", "adjacent_cosine", "loss", "churn")

GROUP_CORRELATION_SCHEMA = {
    "domain": pl.String,
    "group": pl.String,
    "mem_onset": pl.Int64,
    "rise_start": pl.Int64,
    "n_samples": pl.Int64,
} | {k: v for k, v in CORRELATION_SCHEMA.items() if k != "domain"}


def early_cutoffs(
    accuracy: pl.DataFrame, steps: Sequence[int], *, lead: int = 3, start: str | int = "auto"
) -> dict[str, tuple[int, int]]:
    """Per domain, the start of accuracy's rise and the latest t* an early group may have.

    Parameters
    ----------
    accuracy : polars.DataFrame
        ``step, domain, accuracy``; only the rows at ``steps`` are used.
    steps : sequence of int
        The run's checkpoint steps, increasing.
    lead : int, default 3
        Checkpoints an early group must be memorized before the rise starts.
    start : "auto" or int, default "auto"
        The rise start: per domain by :func:`rise_start`, or this step for every domain.

    Returns
    -------
    dict of str to (int, int)
        domain -> (rise start, cutoff step); a domain whose rise starts fewer than ``lead``
        checkpoints after the first one has no entry.

    Examples
    --------
    >>> acc = pl.DataFrame({"step": range(6), "domain": "add",
    ...                     "accuracy": [0.0, 0.0, 0.0, 0.0, 0.5, 1.0]})
    >>> early_cutoffs(acc, range(6), lead=2)
    {'add': (3, 1)}
    """
    check_int("early_cutoffs", "lead", lead, low=1)
    steps = [int(s) for s in steps]
    out = {}
    at_steps = accuracy.filter(pl.col("step").is_in(steps)).sort("step")
    for (domain,), part in at_steps.group_by("domain", maintain_order=True):
        series = part["step"].to_numpy()
        acc = part["accuracy"].cast(pl.Float64).to_numpy()
        if start == "auto":
            rise = rise_start(series, acc)
        else:
            later = [s for s in steps if s >= int(start)]
            rise = later[0] if later else steps[-1]
        index = steps.index(int(rise))
        if index >= lead:
            out[str(domain)] = (int(rise), steps[index - lead])
    return out


def early_groups(groups: pl.DataFrame, cutoffs: dict[str, tuple[int, int]]) -> pl.DataFrame:
    """The early groups' names with their t* and rise start: ``domain, group, mem_onset,
    rise_start`` for every ``train@<t*>`` with t* ≤ its domain's cutoff, and ``early`` (t* its first
    row's step) where the domain has one."""
    rows = []
    for (domain, group), part in groups.group_by(["domain", "group"], maintain_order=True):
        if domain not in cutoffs:
            continue
        rise, cutoff = cutoffs[domain]
        if group.startswith("train@"):
            onset = int(group.removeprefix("train@"))
            if onset <= cutoff:
                rows.append((domain, group, onset, rise))
        elif group == EARLY:
            rows.append((domain, group, int(part["step"].min()), rise))
    return pl.DataFrame(
        rows,
        schema={
            "domain": pl.String,
            "group": pl.String,
            "mem_onset": pl.Int64,
            "rise_start": pl.Int64,
        },
        orient="row",
    )


def group_correlation_table(
    groups: pl.DataFrame,
    accuracy: pl.DataFrame,
    cutoffs: dict[str, tuple[int, int]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> pl.DataFrame:
    """Correlation of each early group's metrics with accuracy, from the group's own t* on.

    Parameters
    ----------
    groups : polars.DataFrame
        The ``group_metrics`` table (its whole-pathway rows, ``layer == -1``, are used).
    accuracy : polars.DataFrame
        ``step, domain, accuracy``.
    cutoffs : dict
        From :func:`early_cutoffs`.
    n_boot, seed
        As in :func:`pathwatch.evaluation.correlation_table`.

    Returns
    -------
    polars.DataFrame
        ``domain, group, mem_onset, rise_start, n_samples, metric, needs, n, first_step,
        last_step, pearson_r, …, spearman_ci_high``: one row per early group and metric of
        :data:`GROUP_METRICS` present.
    """
    whole = groups.filter(pl.col("layer") == -1)
    metrics = {m: "training data" for m in GROUP_METRICS if m in whole.columns}
    frames = []
    for i, row in enumerate(early_groups(whole, cutoffs).iter_rows(named=True)):
        part = whole.filter((pl.col("domain") == row["domain"]) & (pl.col("group") == row["group"]))
        table = correlation_table(
            part.select("step", "domain", *metrics),
            accuracy,
            metrics=metrics,
            start=row["mem_onset"],
            n_boot=n_boot,
            seed=seed + i,
        )
        frames.append(
            table.with_columns(
                group=pl.lit(row["group"]),
                mem_onset=pl.lit(row["mem_onset"], pl.Int64),
                rise_start=pl.lit(row["rise_start"], pl.Int64),
                n_samples=pl.lit(int(part["n_samples"].max()), pl.Int64),
            )
        )
    if not frames:
        return pl.DataFrame(schema=GROUP_CORRELATION_SCHEMA)
    return pl.concat(frames).select(list(GROUP_CORRELATION_SCHEMA))
