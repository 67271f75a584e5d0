"""The study report's section on the trend tests T1–T6 (:mod:`pathwatch.evaluation.trends`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from pathwatch.report.markdown import fmt, markdown_table

#: what each test's statistic is, as the section's legend states it
_LEGEND = {
    "T1": "pooled r of Δmetric vs Δaccuracy",
    "T2": "pooled partial r (step, training loss controlled)",
    "T3": "matched − mismatched r (permutation p)",
    "T4": "Spearman ρ of firing vs crossing step (runs)",
    "T5": "median relative fall of the next-accuracy error (folds better / folds)",
    "T6": "pooled r of Δmetric vs Δaccuracy on the control domains",
}


def _cell(row: dict) -> str:
    """``statistic (p or n) ✓/✗/?`` of one test."""
    mark = {True: "✓", False: "✗", None: "?"}[row["passed"]]
    value = fmt(row["statistic"])
    if row["test"] in ("T1", "T2", "T3", "T6") and np.isfinite(row["p_value"]):
        value += f" (p {row['p_value']:.2g})"
    elif row["test"] == "T4":
        value += f" (n {row['n']})"
    elif row["test"] == "T5" and row["detail"].startswith("error lower in "):
        better, total = (
            row["detail"].removeprefix("error lower in ").split(" folds")[0].split(" of ")
        )
        value += f" ({better}/{total})"
    return f"{value} {mark}"


def trends_section(tables: Mapping[str, pl.DataFrame], reference: str, criteria: str) -> list[str]:
    """Markdown lines: per arm, every metric and baseline through T1–T6 with pass marks.

    Parameters
    ----------
    tables : mapping of str to polars.DataFrame
        The study's tables; ``trends`` is used (absent: no section).
    reference : str
        The reference arm, shown first.
    criteria : str
        The thresholds, in one line (:meth:`TrendCriteria.describe`).
    """
    trends = tables.get("trends")
    if trends is None or trends.is_empty():
        return []
    lines = [
        "",
        "## Trend tests: can a shared trend explain the correlation?",
        "",
        "Every routing metric and every loss baseline through the same six tests, thresholds fixed "
        f"before the runs: {criteria} ✓ passed, ✗ failed, ? undecided (too few runs, no control "
        "domain). " + "; ".join(f"{t}: {what}" for t, what in _LEGEND.items()) + ".",
    ]
    arms = trends["arm"].unique(maintain_order=True).to_list()
    for arm in sorted(arms, key=lambda a: (a != reference, arms.index(a))):
        part = trends.filter(pl.col("arm") == arm)
        rows = []
        for (metric, kind), tests in part.group_by(["metric", "kind"], maintain_order=True):
            by_test = {r["test"]: r for r in tests.iter_rows(named=True)}
            passed = sum(r["passed"] is True for r in by_test.values())
            rows.append([metric, kind, *[_cell(by_test[t]) for t in _LEGEND], f"{passed}/6"])
        lines += [
            "",
            f"Arm `{arm}`:",
            "",
            markdown_table(["metric", "kind", *_LEGEND, "passed"], rows),
        ]
    return lines
