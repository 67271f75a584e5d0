"""A step comes only from a word that says it is one (issue 17): never from a date or a hash."""

from hypothesis import given
from hypothesis import strategies as st

from pathwatch.steps import step_from_name


def test_named_steps_are_read():
    assert step_from_name("step-1000") == 1000
    assert step_from_name("step5000-tokens20B") == 5000
    assert step_from_name("checkpoint-60") == 60
    assert step_from_name("global_step300") == 300
    assert step_from_name("iter_0001000") == 1000
    assert step_from_name("runs/step-100/checkpoint-200") == 200


def test_dates_hashes_and_model_names_have_no_step():
    for name in (
        "OLMoE-1B-7B-0924",
        "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
        "model_2024-05-01",
        "ckpt",
        "stepwise-12",
        "footstep-9",
        "unnumbered",
    ):
        assert step_from_name(name) is None, name


@given(st.integers(0, 10**12), st.sampled_from(["step", "step-", "step_", "checkpoint-", "ckpt_"]))
def test_any_stated_step_round_trips(step, word):
    assert step_from_name(f"{word}{step}") == step
    assert step_from_name(f"run/{word}{step}-tokens4B") == step
