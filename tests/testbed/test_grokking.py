"""The testbed's own grokking verdict, read off train and held-out accuracy curves."""

from __future__ import annotations

import pytest

from pathwatch.errors import InputError
from pathwatch.testbed.grokking import MEMORIZED, grokking_table


def curve(domain: str, points: list[tuple[int, float, float]]) -> list[dict]:
    return [
        {"step": s, "domain": domain, "train_accuracy": t, "heldout_accuracy": h}
        for s, t, h in points
    ]


def verdicts(rows: list[dict], **levels: float) -> dict[str, dict]:
    return {r["domain"]: r for r in grokking_table(rows, **levels).iter_rows(named=True)}


def test_learned_at_chance_then_generalized_is_grokking_with_its_delay():
    rows = curve("add", [(0, 0.0, 0.02), (200, 0.92, 0.03), (400, 0.97, 0.4), (600, 0.99, 0.93)])
    add = verdicts(rows)["add"]
    assert (add["memorized_step"], add["heldout_at_memorized"]) == (200, 0.03)
    assert (add["step_half"], add["step_generalized"], add["delay"]) == (600, 600, 400)
    assert add["grokked"] and add["final_heldout"] == 0.93


def test_held_out_rising_with_training_accuracy_is_not_grokking():
    rows = curve("sub", [(0, 0.0, 0.02), (200, 0.6, 0.3), (400, 0.93, 0.55), (600, 1.0, 0.95)])
    sub = verdicts(rows)["sub"]
    assert sub["heldout_at_memorized"] == 0.55 and not sub["grokked"]


def test_a_domain_that_never_generalizes_or_never_learns():
    rows = curve("facts", [(0, 0.0, 0.02), (200, 0.95, 0.02), (400, 1.0, 0.03)])
    rows += curve("mul", [(0, 0.0, 0.02), (200, 0.5, 0.02)])
    rows.append({"step": 200, "domain": "validation", "validation_loss": 3.0})
    table = verdicts(rows)
    assert set(table) == {"facts", "mul"}  # validation rows carry no accuracy
    assert table["facts"]["step_generalized"] is None and not table["facts"]["grokked"]
    assert table["mul"]["memorized_step"] is None and table["mul"]["delay"] is None


def test_the_memorization_level_is_the_documented_default_and_can_be_raised():
    rows = curve("sub", [(0, 0.0, 0.02), (200, 0.91, 0.05), (400, 0.96, 0.4), (600, 0.98, 0.92)])
    assert MEMORIZED == 0.9 and verdicts(rows)["sub"]["grokked"]
    strict = verdicts(rows, memorized=0.95)["sub"]
    assert strict["heldout_at_memorized"] == 0.4 and not strict["grokked"]


@pytest.mark.parametrize("name", ["memorized", "near_chance", "generalized"])
def test_levels_outside_0_1_are_refused(name):
    with pytest.raises(InputError, match=f"'{name}' parameter of grokking_table"):
        grokking_table(curve("add", [(0, 0.0, 0.0)]), **{name: 1.5})
