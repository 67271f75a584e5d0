"""Does a run sit in the paper's regime? Conditions A1–A7 of the stream testbed, measured.

The paper's signal is read off documents seen about once, memorized early at ε ≈ 1.5–2 nats on a
0.1 grid, whose loss then stays put while benchmark accuracy rises later, domain by domain. A run
that misses one of these conditions tests something else, so the demo and the study print them:

- **A1** no probe document was trained on more than ``max_trained`` times;
- **A2** every domain's ε lies on the paper's 0.1 grid (the note says whether it is in the band);
- **A3** ≥ ``min_domains`` skill domains have a fixed early group of ≥ ``min_group`` probes
  memorized ≥ ``lead`` checkpoints before held-out accuracy's rise starts (:func:`early_cutoffs`);
- **A4** per such domain, from the rise start on the group's mean loss stays within δ of its final
  value, and the domain's training loss moves by at most ``loss_range`` × its drop since step 0;
- **A5** held-out accuracy rises by ≥ ``min_rise`` on ≥ ``min_domains`` domains whose rise starts
  lie ≥ ``lead`` checkpoints apart;
- **A6** the control domains' held-out accuracy stays at chance (mean over checkpoints ≤ chance
  + ``chance_margin``);
- **A7** the demo took at most ``max_seconds`` (measured by the caller; not part of ``holds``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pathwatch._validate import check_float, check_int
from pathwatch.dynamics import NEVER
from pathwatch.errors import invalid_parameter
from pathwatch.evaluation.correlate import rise_start
from pathwatch.evaluation.early import early_cutoffs

__all__ = ["REGIME_SCHEMA", "RegimeReport", "records_regime", "regime_conditions"]

REGIME_SCHEMA = {
    "condition": pl.String,
    "domain": pl.String,
    "value": pl.Float64,
    "threshold": pl.Float64,
    "holds": pl.Boolean,
    "note": pl.String,
}
#: the conditions whose conjunction is :attr:`RegimeReport.holds`
CORE = ("A1", "A2", "A3", "A4", "A5", "A6")


@dataclass(frozen=True)
class RegimeReport:
    """The measured regime conditions: one row per condition (and domain where it is per domain).

    Attributes
    ----------
    table : polars.DataFrame
        ``condition, domain (null for run-wide rows), value, threshold, holds, note``; a condition
        that could not be measured has a null value and ``holds`` False.

    Examples
    --------
    >>> rows = [("A1", None, 1.0, 2.0, True, "trained on ≤ 1 time(s)"),
    ...         ("A6", "facts", 0.2, 0.09, False, "held-out accuracy 0.2")]
    >>> report = RegimeReport(pl.DataFrame(rows, schema=REGIME_SCHEMA, orient="row"))
    >>> report.holds, report.failed()
    (False, ['A6'])
    >>> report.lines()[-1]
    'not in the regime; failing: A6'
    """

    table: pl.DataFrame

    @property
    def holds(self) -> bool:
        """Whether every row of A1–A6 holds."""
        core = self.table.filter(pl.col("condition").is_in(CORE))
        return core.height > 0 and bool(core["holds"].all())

    def failed(self) -> list[str]:
        """The conditions with a row that does not hold, in order.

        >>> rows = [("A1", None, 1.0, 2.0, True, ""), ("A5", "add", 0.1, 0.3, False, "")]
        >>> RegimeReport(pl.DataFrame(rows, schema=REGIME_SCHEMA, orient="row")).failed()
        ['A5']
        """
        bad = self.table.filter(~pl.col("holds"))["condition"].to_list()
        return list(dict.fromkeys(bad))

    def lines(self) -> list[str]:
        """One line per row, then a verdict naming the conditions that fail."""
        out = []
        for r in self.table.iter_rows(named=True):
            where = f" {r['domain']}" if r["domain"] is not None else ""
            mark = "holds" if r["holds"] else "FAILS"
            out.append(f"{r['condition']}{where}: {mark} — {r['note']}")
        failed = self.failed()
        verdict = "in the regime (A1–A6 hold)" if self.holds else "not in the regime"
        out.append(verdict + (f"; failing: {', '.join(failed)}" if failed else ""))
        return out


def records_regime(testbed: Any) -> bool:
    """Whether ``testbed`` (a TestbedRun) records what A1 needs — how often its probes were
    trained on — as the stream testbed does: the regime conditions are meant for it."""
    return "probe_max_trained" in json.loads(testbed.summary.read_text())


def _row(condition: str, domain: str | None, value: Any, threshold: float, holds: bool, note: str):
    value = None if value is None or not np.isfinite(value) else float(value)
    return (condition, domain, value, float(threshold), bool(holds and value is not None), note)


def _curve(curves: Sequence[Mapping[str, Any]], domain: str, key: str) -> tuple[np.ndarray, ...]:
    rows = sorted((c for c in curves if c["domain"] == domain), key=lambda c: c["step"])
    return np.array([c["step"] for c in rows]), np.array([c[key] for c in rows], dtype=float)


def regime_conditions(
    testbed: Any,
    tables: Mapping[str, pl.DataFrame],
    *,
    control_domains: Sequence[str] = ("facts",),
    chance: float | None = None,
    seconds: float | None = None,
    max_trained: int = 2,
    lead: int = 3,
    min_group: int = 40,
    min_domains: int = 2,
    loss_range: float = 0.2,
    min_rise: float = 0.3,
    chance_margin: float = 0.03,
    max_seconds: float = 600.0,
) -> RegimeReport:
    """Measure conditions A1–A7 (module docstring) of a trained and analysed testbed.

    Parameters
    ----------
    testbed : TestbedRun
        Its curves give held-out accuracy and training loss per checkpoint; its summary's
        ``probe_max_trained`` (written by the stream testbed) gives A1.
    tables : mapping of str to polars.DataFrame
        ``Analysis.tables`` of the run: ``epsilon``, ``onsets`` and ``group_metrics`` are used.
    control_domains : sequence of str, default ("facts",)
        Memorize-only domains: A6 applies to them; A3–A5 to the other domains.
    chance : float, optional
        Chance accuracy of a control; default 1 / prime of the testbed's configuration.
    seconds : float, optional
        Wall time of the demo for A7; None leaves A7 out.
    max_trained, lead, min_group, min_domains, loss_range, min_rise, chance_margin, max_seconds
        The thresholds of the conditions.

    Returns
    -------
    RegimeReport
    """
    func = "regime_conditions"
    for name, value in (("max_trained", max_trained), ("lead", lead), ("min_group", min_group)):
        check_int(func, name, value, low=1)
    check_int(func, "min_domains", min_domains, low=1)
    for name, value in (
        ("loss_range", loss_range),
        ("min_rise", min_rise),
        ("chance_margin", chance_margin),
    ):
        check_float(func, name, value, low=0)
    check_float(func, "max_seconds", max_seconds, low=0, low_open=True)
    check_float(func, "seconds", seconds, low=0, allow_none=True)
    for name in ("epsilon", "onsets", "group_metrics"):
        if name not in tables:
            raise invalid_parameter(
                func, "tables", f"analysis tables with {name!r}", sorted(tables)
            )
    summary = json.loads(testbed.summary.read_text())
    config = summary.get("config", {})
    if chance is None and "prime" in config:
        chance = 1.0 / config["prime"]
    check_float(func, "chance", chance, low=0, high=1, allow_none=True)
    steps = [int(s) for s in testbed.steps]
    curves = testbed.curves
    domains = sorted({c["domain"] for c in curves if "heldout_accuracy" in c})
    skills = [d for d in domains if d not in control_domains]
    rows = []

    trained = summary.get("probe_max_trained")
    rows.append(
        _row(
            "A1",
            None,
            trained,
            max_trained,
            trained is not None and trained <= max_trained,
            f"every probe document trained on ≤ {trained} time(s) (at most {max_trained})"
            if trained is not None
            else "not measured: the testbed does not record how often its probes were trained on",
        )
    )

    for r in tables["epsilon"].sort("domain").iter_rows(named=True):
        on_grid = r["grid_step"] >= 0.1 - 1e-12
        rows.append(
            _row(
                "A2",
                r["domain"],
                r["epsilon"],
                0.1,
                on_grid,
                f"ε = {r['epsilon']:g} on the {r['grid_step']:g} grid"
                f"{'' if r['in_target'] else ', outside the target band'}",
            )
        )

    accuracy = pl.DataFrame(
        [
            {"step": c["step"], "domain": c["domain"], "accuracy": c["heldout_accuracy"]}
            for c in curves
            if c["domain"] in skills
        ],
        schema={"step": pl.Int64, "domain": pl.String, "accuracy": pl.Float64},
    )
    cutoffs = early_cutoffs(accuracy, steps, lead=lead) if accuracy.height else {}
    onsets = tables["onsets"]
    deltas = dict(tables["epsilon"].select("domain", "delta").rows())
    groups = tables["group_metrics"]
    a3_domains, a4_rows, per_domain = [], [], {}
    for domain in skills:
        if domain not in cutoffs:
            a4_rows.append(
                _row("A4", domain, None, 0.0, False, "no rise start with an early group")
            )
            continue
        rise, cutoff = cutoffs[domain]
        mem = onsets.filter(pl.col("domain") == domain)["mem_onset"].to_numpy()
        size = int(((mem != NEVER) & (mem <= cutoff)).sum())
        per_domain[domain] = size
        if size >= min_group:
            a3_domains.append(domain)
        # A4: the early group's loss from the rise start on, and the domain's training loss
        early = groups.filter(
            (pl.col("domain") == domain)
            & (pl.col("group") == "early")
            & (pl.col("layer") == -1)
            & (pl.col("step") >= rise)
        ).sort("step")
        step_arr, train = _curve(curves, domain, "train_loss")
        after = train[step_arr >= rise]
        drop = train[0] - train[-1]
        spread = float(after.max() - after.min()) / drop if drop > 0 else np.inf
        delta = float(deltas.get(domain, np.nan))
        trend = f"training loss spans {spread:.0%} of its drop (≤ {loss_range:.0%})"
        if not early.height:
            a4_rows.append(
                _row("A4", domain, None, delta, False, f"no early group to follow; {trend}")
            )
            continue
        loss = early["loss"].to_numpy()
        moved = float(np.max(np.abs(loss - loss[-1])))
        a4_rows.append(
            _row(
                "A4",
                domain,
                moved,
                delta,
                moved <= delta and spread <= loss_range,
                f"from the rise start (step {rise}) the early group's loss moves ≤ {moved:.3f} "
                f"(δ = {delta:g}); {trend}",
            )
        )
    rows.append(
        _row(
            "A3",
            None,
            len(a3_domains),
            min_domains,
            len(a3_domains) >= min_domains,
            f"{len(a3_domains)} skill domains ({', '.join(a3_domains) or 'none'}) have an early "
            f"group of ≥ {min_group} probes memorized ≥ {lead} checkpoints before the rise "
            f"(sizes: {', '.join(f'{d} {n}' for d, n in per_domain.items()) or 'none'})",
        )
    )
    rows += a4_rows

    risen = {}
    for domain in skills:
        step_arr, acc = _curve(curves, domain, "heldout_accuracy")
        start = rise_start(step_arr, acc)
        rise = float(acc.max() - acc[step_arr == start][0])
        if rise >= min_rise:
            risen[domain] = steps.index(int(start))
    apart = max((abs(a - b) for a, b in itertools.combinations(risen.values(), 2)), default=0)
    rows.append(
        _row(
            "A5",
            None,
            apart,
            lead,
            len(risen) >= min_domains and apart >= lead,
            f"held-out accuracy rises by ≥ {min_rise} on {len(risen)} domains "
            f"({', '.join(risen) or 'none'}); rise starts up to {apart} checkpoints apart "
            f"(≥ {lead})",
        )
    )

    for domain in [d for d in domains if d in control_domains]:
        _, acc = _curve(curves, domain, "heldout_accuracy")
        mean = float(acc[1:].mean()) if acc.size > 1 else float(acc.mean())
        limit = (chance if chance is not None else np.nan) + chance_margin
        rows.append(
            _row(
                "A6",
                domain,
                mean,
                limit,
                mean <= limit,
                f"held-out accuracy {mean:.3f} on average after step 0 (≤ chance + "
                f"{chance_margin} = {limit:.3f})",
            )
        )

    if seconds is not None:
        rows.append(
            _row(
                "A7",
                None,
                seconds,
                max_seconds,
                seconds <= max_seconds,
                f"the demo took {seconds:.0f} s (≤ {max_seconds:.0f} s)",
            )
        )
    return RegimeReport(pl.DataFrame(rows, schema=REGIME_SCHEMA, orient="row"))
