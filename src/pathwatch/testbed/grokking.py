"""Did the testbed grok? Read it off the run's own train and held-out curves (the ground truth)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import polars as pl

from pathwatch.errors import invalid_parameter

GROKKING_SCHEMA = {
    "domain": pl.String,
    "memorized_step": pl.Int64,
    "heldout_at_memorized": pl.Float64,
    "step_half": pl.Int64,
    "step_generalized": pl.Int64,
    "delay": pl.Int64,
    "final_heldout": pl.Float64,
    "grokked": pl.Boolean,
}


# Training accuracy from which a domain's training items count as learned ("training loss already
# low"). 0.9, not 0.95: under weight decay the memorized plateau sits at 0.88-0.95 training
# accuracy, and the last few percent are fitted by the generalizing solution itself, so training
# accuracy crosses 0.95 only while held-out accuracy rises (docs/testbed.md, 2026-11-26 search).
MEMORIZED = 0.9


def _first(steps: np.ndarray, hit: np.ndarray) -> int | None:
    return int(steps[np.argmax(hit)]) if hit.any() else None


def grokking_table(
    curves: Iterable[Mapping[str, Any]],
    *,
    memorized: float = MEMORIZED,
    near_chance: float = 0.1,
    generalized: float = 0.9,
) -> pl.DataFrame:
    """Per domain: when training items were learned, when held-out items followed, and the delay.

    A domain *grokked* when its training accuracy reached ``memorized`` while held-out accuracy was
    still at most ``near_chance``, and held-out accuracy later reached ``generalized``.

    Parameters
    ----------
    curves : iterable of mappings
        ``TestbedRun.curves``: step, domain, train_accuracy, heldout_accuracy (validation rows, which
        have no accuracy, are skipped).
    memorized, near_chance, generalized : float
        Accuracy levels of the definition above.

    Returns
    -------
    polars.DataFrame
        ``domain, memorized_step, heldout_at_memorized, step_half, step_generalized, delay
        (step_generalized − memorized_step), final_heldout, grokked``; steps are null when never reached.

    Examples
    --------
    >>> rows = [
    ...     {"step": s, "domain": "add", "train_accuracy": t, "heldout_accuracy": h}
    ...     for s, t, h in [(0, 0.0, 0.0), (100, 1.0, 0.02), (200, 1.0, 0.6), (300, 1.0, 0.95)]
    ... ]
    >>> grokking_table(rows).select("memorized_step", "step_generalized", "delay", "grokked").row(0)
    (100, 300, 200, True)
    """
    for name, value in [
        ("memorized", memorized),
        ("near_chance", near_chance),
        ("generalized", generalized),
    ]:
        if not 0 <= value <= 1:
            raise invalid_parameter("grokking_table", name, "an accuracy in [0, 1]", value)
    frame = pl.DataFrame(
        [c for c in curves if c.get("heldout_accuracy") is not None],
        schema_overrides={"step": pl.Int64},
        infer_schema_length=None,
    )
    rows = []
    for (domain,), part in frame.sort("step").group_by("domain", maintain_order=True):
        steps = part["step"].to_numpy()
        train = part["train_accuracy"].to_numpy()
        heldout = part["heldout_accuracy"].to_numpy()
        learned = _first(steps, train >= memorized)
        at_learned = float(heldout[steps == learned][0]) if learned is not None else None
        general = _first(steps, heldout >= generalized)
        rows.append(
            {
                "domain": domain,
                "memorized_step": learned,
                "heldout_at_memorized": at_learned,
                "step_half": _first(steps, heldout >= 0.5),
                "step_generalized": general,
                "delay": general - learned if None not in (general, learned) else None,
                "final_heldout": float(heldout[-1]),
                "grokked": at_learned is not None
                and at_learned <= near_chance
                and general is not None
                and general > learned,
            }
        )
    return pl.DataFrame(rows, schema=GROKKING_SCHEMA)
