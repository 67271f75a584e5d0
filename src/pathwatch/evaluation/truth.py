"""Ground truth checked against a run: every accuracy domain a probe domain, every step a checkpoint.

The analysis calls these before its first unit. A task that matches no probe domain, or a step
the run lacks (read from the wrong number of a path, or a checkpoint not captured), would otherwise
be joined to nothing and dropped silently; the notes say which steps were read and from where.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pathwatch.errors import InputError
from pathwatch.evaluation.accuracy import AccuracyTables
from pathwatch.evaluation.correlate import MIN_BOOTSTRAP_N


def check_ground_truth(tables: AccuracyTables, domains: list[str], steps: Sequence[int]) -> None:
    """InputError unless every accuracy domain is a probe domain and every step a run checkpoint."""
    acc = tables.accuracy
    unmatched = sorted(set(acc["domain"].to_list()) - set(domains))
    if unmatched:
        shown = ", ".join(map(repr, unmatched[:8])) + (" …" if len(unmatched) > 8 else "")
        raise InputError(
            f"accuracy: {len(unmatched)} task(s)/domain(s) match no probe domain of the run: "
            f"{shown} (probe domains: {', '.join(domains)}). Map each with --domain-map "
            "TASK=DOMAIN (domain_map= in Python), or leave its files out."
        )
    lacking = tables.steps.filter(~pl.col("step").is_in(list(steps)))
    if lacking.height:
        row = lacking.row(0, named=True)
        raise InputError(
            f"{row['file']}: accuracy step {row['step']} (from {row['source']}) is not a checkpoint "
            f"step of the run {list(steps)}; {lacking['file'].n_unique()} file(s) have such steps. "
            "Capture that checkpoint, or put the file in a directory named after its step."
        )


def accuracy_notes(tables: AccuracyTables, steps: Sequence[int]) -> list[str]:
    """Which steps the accuracy was read at and from where; the run's checkpoints it lacks."""
    notes = []
    by_source = tables.steps.group_by("source", maintain_order=True).agg(
        pl.col("step").unique().sort(), files=pl.col("file").n_unique()
    )
    for source, found, files in by_source.iter_rows():
        label = "step" if len(found) == 1 else "steps"
        notes.append(
            f"accuracy {label} {', '.join(map(str, found))}: from {source} ({files} file(s))"
        )
    missing = sorted(set(steps) - set(tables.accuracy["step"].to_list()))
    if missing:
        notes.append(
            f"accuracy covers {len(steps) - len(missing)} of the run's {len(steps)} checkpoints "
            f"(none at {', '.join(map(str, missing))}); correlations use those it covers"
        )
    return [*notes, *tables.notes]


def results_only_steps(tables: AccuracyTables) -> list[int]:
    """Accuracy steps without per-item correctness while other steps have it (mixed lm-eval files)."""
    if tables.correctness is None:
        return []
    with_items = set(tables.correctness["step"].to_list())
    return sorted(set(tables.accuracy["step"].to_list()) - with_items)


def few_checkpoint_notes(correlations: pl.DataFrame) -> list[str]:
    """A note on correlations whose window holds too few checkpoints for a bootstrap CI.

    >>> table = pl.DataFrame({"domain": ["math"], "metric": ["distance"], "n": [3], "pearson_r": [0.9]})
    >>> few_checkpoint_notes(table)[0][:60]
    'no bootstrap CI (NaN) where the correlation window has fewer'
    """
    few = correlations.filter(pl.col("pearson_r").is_not_nan() & (pl.col("n") < MIN_BOOTSTRAP_N))
    if not few.height:
        return []
    cells = ", ".join(f"{d}/{m} (n={n})" for d, m, n in few.select("domain", "metric", "n").rows())
    return [
        f"no bootstrap CI (NaN) where the correlation window has fewer than {MIN_BOOTSTRAP_N} "
        f"checkpoints: {cells}; their r and p stand on that few points"
    ]
