"""Regime conditions A1–A7 on synthetic runs whose answer is known."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from pathwatch.errors import InputError
from pathwatch.evaluation.regime import RegimeReport, records_regime, regime_conditions

STEPS = list(range(0, 1001, 100))
ACCURACY = {
    "add": [0.02] * 5 + [0.2, 0.4, 0.6, 0.8, 0.85, 0.9],  # rise starts at step 400
    "sub": [0.02] * 8 + [0.4, 0.7, 0.9],  # rise starts at step 700: 3 checkpoints later
    "facts": [0.04] * 11,
}
ONSETS = {"add": 100, "sub": 100, "facts": 200}  # t* of 50 probes per domain


@dataclass
class FakeRun:
    """What regime_conditions reads of a TestbedRun."""

    summary: Path
    steps: tuple[int, ...]
    curves: tuple[dict, ...]


def _case(
    tmp_path: Path,
    *,
    trained: int = 1,
    grid_step: float = 0.1,
    group_drift: float = 0.0,
    facts: float = 0.04,
    sub_late: bool = True,
) -> tuple[FakeRun, dict[str, pl.DataFrame]]:
    accuracy = dict(ACCURACY, facts=[facts] * 11)
    if not sub_late:
        accuracy["sub"] = ACCURACY["add"]
    curves = []
    for i, step in enumerate(STEPS):
        for domain, acc in accuracy.items():
            train_loss = max(3.0 - step / 100 * 0.7, 1.0) + 0.01 * (i % 2)
            curves.append(
                {
                    "step": step,
                    "domain": domain,
                    "heldout_accuracy": acc[i],
                    "train_loss": train_loss,
                }
            )
        curves.append({"step": step, "domain": "validation", "validation_loss": 2.0})
    summary = tmp_path / "testbed.json"
    summary.write_text(json.dumps({"probe_max_trained": trained, "config": {"prime": 23}}))
    epsilon = pl.DataFrame(
        {
            "domain": list(accuracy),
            "epsilon": [1.1, 1.2, 1.0],
            "grid_step": [grid_step, 0.1, 0.1],
            "in_target": [True, True, True],
            "delta": [0.05 * min(1.0, grid_step / 0.1), 0.05, 0.05],
        }
    )
    onsets = pl.DataFrame(
        {
            "domain": [d for d in accuracy for _ in range(50)],
            "mem_onset": [ONSETS[d] for d in accuracy for _ in range(50)],
        }
    )
    groups = pl.DataFrame(
        [
            {
                "domain": d,
                "group": "early",
                "layer": -1,
                "step": s,
                "loss": 1.0 + group_drift * (s == 500),
            }
            for d in accuracy
            for s in STEPS
            if s >= ONSETS[d]
        ]
    )
    tables = {"epsilon": epsilon, "onsets": onsets, "group_metrics": groups}
    return FakeRun(summary, tuple(STEPS), tuple(curves)), tables


def _holds(report: RegimeReport) -> dict[str, bool]:
    rows = report.table.group_by("condition").agg(pl.col("holds").all())
    return dict(rows.iter_rows())


def test_a_run_in_the_regime_holds_every_condition(tmp_path: Path) -> None:
    run, tables = _case(tmp_path)
    report = regime_conditions(run, tables, seconds=300.0)
    assert _holds(report) == {f"A{i}": True for i in range(1, 8)}
    assert report.holds and report.failed() == []
    assert report.lines()[-1].startswith("in the regime")
    a5 = report.table.filter(pl.col("condition") == "A5").row(0, named=True)
    assert a5["value"] == 3  # the rise starts are 3 checkpoints apart
    assert records_regime(run)


@pytest.mark.parametrize(
    ("change", "fails"),
    [
        ({"trained": 3}, "A1"),
        ({"grid_step": 0.01}, "A2"),
        ({"group_drift": 0.2}, "A4"),
        ({"facts": 0.2}, "A6"),
        ({"sub_late": False}, "A5"),
    ],
)
def test_a_run_that_misses_one_condition_says_which(
    tmp_path: Path, change: dict, fails: str
) -> None:
    run, tables = _case(tmp_path, **change)
    report = regime_conditions(run, tables)
    assert report.failed() == [fails]
    assert not report.holds
    assert report.lines()[-1] == f"not in the regime; failing: {fails}"
    assert any(line.startswith(fails) and "FAILS" in line for line in report.lines())


def test_a_group_too_small_fails_a3_and_a_slow_demo_fails_a7(tmp_path: Path) -> None:
    run, tables = _case(tmp_path)
    report = regime_conditions(run, tables, min_group=60, seconds=700.0)
    assert report.failed() == ["A3", "A7"]
    assert not report.holds  # A3 fails; A7 alone would not count


def test_a7_is_not_part_of_holds(tmp_path: Path) -> None:
    run, tables = _case(tmp_path)
    assert regime_conditions(run, tables, seconds=700.0).holds


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    run, tables = _case(tmp_path)
    with pytest.raises(InputError, match="'lead' parameter of regime_conditions"):
        regime_conditions(run, tables, lead=0)
    with pytest.raises(InputError, match="'tables' parameter"):
        regime_conditions(run, {"epsilon": tables["epsilon"]})
