"""Memorization and generalization onsets against plain loop references, plus their invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pathwatch.dynamics import (
    auto_epsilon,
    generalization_onset,
    group_labels,
    memorization_onset,
    memorization_table,
    scaled_delta,
)
from pathwatch.errors import InputError


def mem_reference(losses, steps, eps, delta):
    """The definition, one sample and one candidate checkpoint at a time."""
    out = []
    for row in losses:
        onset = -1
        for t in range(len(row)):
            if all(row[s] <= eps and abs(row[s] - row[-1]) <= delta for s in range(t, len(row))):
                onset = steps[t]
                break
        out.append(onset)
    return np.array(out)


def gen_reference(correct, steps):
    """The definition, one item and one candidate checkpoint at a time."""
    out = []
    for row in correct:
        onset = -1
        for t in range(len(row)):
            later = list(row[t + 1 :])
            if row[t] == 1 and np.mean(row[t:]) > 0.8 and later.count(0) <= 1:
                onset = steps[t]
                break
        out.append(onset)
    return np.array(out)


def loss_matrices(max_t=8):
    shapes = st.tuples(st.integers(1, 12), st.integers(1, max_t))
    values = st.floats(0, 3, allow_nan=False).map(lambda v: round(v, 2))
    return shapes.flatmap(lambda s: arrays(np.float64, s, elements=values))


@settings(max_examples=200, deadline=None)
@given(loss_matrices(), st.sampled_from([0.05, 0.3, 1.0, 2.5]), st.sampled_from([0.0, 0.05, 0.5]))
def test_memorization_matches_reference(losses, eps, delta):
    steps = np.arange(losses.shape[1]) * 100 + 7
    got = memorization_onset(losses, steps, eps, delta)
    np.testing.assert_array_equal(got, mem_reference(losses, steps, eps, delta))
    assert got.dtype == np.int64


@settings(max_examples=200, deadline=None)
@given(loss_matrices(), st.floats(0.01, 3), st.floats(0, 1))
def test_memorized_at_last_checkpoint_iff_final_loss_below_eps(losses, eps, delta):
    onsets = memorization_onset(losses, np.arange(losses.shape[1]), eps, delta)
    np.testing.assert_array_equal(onsets != -1, losses[:, -1] <= eps)


@settings(max_examples=200, deadline=None)
@given(loss_matrices(), st.floats(0.01, 3), st.floats(0.01, 3))
def test_onsets_move_earlier_as_eps_grows(losses, a, b):
    lo, hi = sorted((a, b))
    steps = np.arange(losses.shape[1])
    inf = np.iinfo(np.int64).max
    late = np.where((o := memorization_onset(losses, steps, lo)) == -1, inf, o)
    early = np.where((o := memorization_onset(losses, steps, hi)) == -1, inf, o)
    assert np.all(early <= late)


def test_never_memorized_samples_get_minus_one():
    losses = np.array([[3.0, 2.0, 1.0], [0.5, 0.4, 0.3], [0.1, 0.9, 0.1]])
    got = memorization_onset(losses, [10, 20, 30], 0.45, delta=0.05)
    # sample 0 never below eps; sample 1 below eps only from 20 but 0.4 is 0.1 from the end;
    # sample 2 leaves and re-enters
    np.testing.assert_array_equal(got, [-1, 30, 30])


def test_per_sample_eps_is_one_threshold_per_row():
    losses = np.array([[1.0, 0.5, 0.5], [1.0, 0.5, 0.5]])
    np.testing.assert_array_equal(memorization_onset(losses, [1, 2, 3], [0.6, 0.4]), [2, -1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_loss_names_sample_and_checkpoint(bad):
    losses = np.ones((4, 3))
    losses[2, 1] = bad
    with pytest.raises(InputError, match=r"sample 2 at checkpoint 1"):
        memorization_onset(losses, [1, 2, 3], 0.5)
    with pytest.raises(InputError, match=r"sample 2 at checkpoint 1"):
        auto_epsilon(losses, [1, 2, 3])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"losses": np.ones(3)}, "'losses' parameter of memorization_onset must be a 2-D"),
        ({"steps": [1, 2]}, "'steps' parameter .* 1-D array of 3"),
        ({"steps": [1, 3, 2]}, "strictly increasing"),
        ({"steps": [1, 2.5, 3]}, "integer checkpoint steps"),
        ({"eps": 0.0}, "'eps' parameter .* positive"),
        ({"eps": [0.1, 0.2, 0.3]}, "'eps' parameter .* an array of 2 floats"),
        ({"delta": -1.0}, "'delta' parameter .* a float >= 0"),
    ],
)
def test_memorization_bad_input(kwargs, match):
    args = {"losses": np.ones((2, 3)), "steps": [1, 2, 3], "eps": 0.5} | kwargs
    with pytest.raises(InputError, match=match):
        memorization_onset(**args)


def before_last(losses, steps, eps, delta=0.05):
    onsets = memorization_onset(losses, steps, eps, delta)
    return np.mean((onsets != -1) & (onsets < steps[-1]))


@settings(max_examples=60, deadline=None)
@given(loss_matrices().filter(lambda a: a.shape[1] >= 2))
def test_auto_epsilon_is_the_smallest_in_band_point_of_the_coarsest_grid(losses):
    # losses on a 0.01 grid: every reachable fraction is reached on the 0.01 grid
    steps = np.arange(losses.shape[1])
    choice = auto_epsilon(losses, steps)
    assert choice.delta == pytest.approx(0.05 * choice.grid_step / 0.1)
    assert choice.fraction == pytest.approx(
        before_last(losses, steps, choice.epsilon, choice.delta)
    )
    expected = None
    for step, digits in [(0.1, 1), (0.01, 2)]:
        grid = np.round(np.arange(1, int(3.2 / step) + 1) * step, digits)
        delta = 0.05 * step / 0.1  # δ scales with the grid step below the 0.1 grid
        inside = [e for e in grid if 0.20 <= before_last(losses, steps, e, delta) <= 0.25]
        if inside:
            expected = (inside[0], step)
            break
    if expected is None:
        assert not choice.in_target and "no ε" in choice.note
    else:
        assert choice.in_target
        assert (choice.epsilon, choice.grid_step) == pytest.approx(expected)


def synthetic_losses(scale, n=2000, t=10, seed=0):
    """Losses that fall from ~2x to ~1x ``scale`` at sample-specific speeds, some still falling."""
    rng = np.random.default_rng(seed)
    final = rng.uniform(0.5, 1.5, n) * scale
    start = final + rng.uniform(0.5, 2.0, n) * scale
    progress = np.minimum(1, np.linspace(0, 1, t)[None] / rng.uniform(0.3, 1.5, n)[:, None])
    return start[:, None] + (final - start)[:, None] * progress, np.arange(1, t + 1) * 1000


@pytest.mark.parametrize(("scale", "step"), [(1.75, 0.1), (0.05, 0.01), (0.004, 0.001)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_epsilon_lands_in_band_at_any_loss_scale(scale, step, seed):
    losses, steps = synthetic_losses(scale, seed=seed)
    choice = auto_epsilon(losses, steps)
    assert choice.in_target, choice.note
    assert 0.20 <= choice.fraction <= 0.25
    assert choice.grid_step <= step  # never coarser than the loss scale allows
    assert abs(choice.epsilon / choice.grid_step - round(choice.epsilon / choice.grid_step)) < 1e-6
    assert choice.delta == pytest.approx(0.05 * choice.grid_step / 0.1)
    onsets = memorization_onset(losses, steps, choice.epsilon, choice.delta)
    assert np.mean((onsets != -1) & (onsets < steps[-1])) == pytest.approx(choice.fraction)
    assert f"{choice.epsilon:g}" in choice.note


@pytest.mark.parametrize("scale", [0.05, 0.004])
def test_delta_scales_with_the_grid_step_and_can_be_kept_absolute(scale):
    losses, steps = synthetic_losses(scale, seed=5)
    scaled = auto_epsilon(losses, steps)
    absolute = auto_epsilon(losses, steps, scale_delta=False)
    assert scaled.grid_step < 0.1 and scaled.delta == pytest.approx(0.05 * scaled.grid_step / 0.1)
    assert f"δ = {scaled.delta:g}" in scaled.note
    assert absolute.delta == 0.05
    # the table dates every domain's onsets with its choice's δ
    onsets, eps = memorization_table(losses, steps, ["d"] * len(losses))
    assert eps["delta"].to_list() == [scaled.delta]
    np.testing.assert_array_equal(
        onsets["mem_onset"], memorization_onset(losses, steps, scaled.epsilon, scaled.delta)
    )
    _, kept = memorization_table(losses, steps, ["d"] * len(losses), scale_delta=False)
    assert kept["delta"].to_list() == [0.05]


def test_delta_stays_absolute_on_the_coarse_grid():
    losses, steps = synthetic_losses(1.75, seed=1)
    choice = auto_epsilon(losses, steps)
    assert (choice.grid_step, choice.delta) == (0.1, 0.05)
    assert "δ" not in choice.note
    assert scaled_delta(0.05, 0.1) == 0.05 and scaled_delta(0.05, 1e-3) == pytest.approx(5e-4)


def test_memorization_onset_takes_one_delta_per_sample():
    losses = np.array([[2.0, 0.30, 0.31], [2.0, 0.30, 0.31]])
    onsets = memorization_onset(losses, [1, 2, 3], 0.5, np.array([0.05, 0.001]))
    assert onsets.tolist() == [2, 3]
    with pytest.raises(InputError, match=r"'delta' parameter .* >= 0"):
        memorization_onset(losses, [1, 2, 3], 0.5, np.array([0.05, -1.0]))


def test_auto_epsilon_prefers_the_coarse_grid_and_its_smallest_point():
    # before-T fractions on the 0.1 grid: eps 0.1 -> 10%, 0.2 -> 20%, 0.3 -> 25%
    need = np.r_[np.full(10, 0.05), np.full(10, 0.15), np.full(5, 0.25), np.full(75, 2.0)]
    losses = np.c_[np.full(100, 3.0), need, need]
    choice = auto_epsilon(losses, [1, 2, 3])
    assert (choice.epsilon, choice.fraction, choice.grid_step) == (0.2, 0.2, 0.1)


def test_auto_epsilon_says_so_when_the_band_is_out_of_reach():
    # only 10% of the samples are stable at the last two checkpoints: 20% is impossible
    rng = np.random.default_rng(0)
    last = rng.uniform(0.1, 0.2, 100)
    before = last + np.r_[np.zeros(10), np.full(90, 1.0)]
    choice = auto_epsilon(np.c_[before + 1, before, last], [1, 2, 3])
    assert not choice.in_target
    assert choice.fraction == pytest.approx(0.10)
    assert "no ε" in choice.note and "closest" in choice.note
    # the closest point is the smallest eps that reaches the maximum fraction
    assert choice.epsilon >= last[:10].max() - choice.grid_step


@pytest.mark.parametrize(
    ("losses", "steps", "kwargs", "match"),
    [
        (np.ones((3, 1)), [1], {}, "two checkpoints"),
        (np.ones((3, 2)), [1, 2], {"target": (0.3, 0.2)}, "'target' parameter"),
        (np.ones((3, 2)), [1, 2], {"delta": np.nan}, "'delta' parameter"),
    ],
)
def test_auto_epsilon_bad_input(losses, steps, kwargs, match):
    with pytest.raises(InputError, match=match):
        auto_epsilon(losses, steps, **kwargs)


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(st.integers(1, 10), st.integers(1, 12)).flatmap(
        lambda s: arrays(np.int8, s, elements=st.integers(0, 1))
    )
)
def test_generalization_matches_reference(correct):
    steps = np.arange(correct.shape[1]) * 10
    np.testing.assert_array_equal(
        generalization_onset(correct, steps), gen_reference(correct, steps)
    )
    np.testing.assert_array_equal(
        generalization_onset(correct.astype(bool), steps), gen_reference(correct, steps)
    )


@pytest.mark.parametrize(
    ("row", "onset"),
    [
        ([1, 1, 1, 0, 1, 1], 0),  # one later error, 5/6 > 0.8: tolerated
        ([1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1], 6),  # two later errors from 0
        ([1, 1, 0, 1, 1], 3),  # 4/5 = 0.8 is not > 0.8
        ([1, 1, 1, 1, 0, 1, 1, 1, 1, 1], 0),  # 9/10 with one error
        ([0, 0, 0, 0, 1], 4),  # correct at the last checkpoint only
        ([1, 1, 1, 1, 0], -1),  # wrong at the last checkpoint: mean 0.8 at best, never > 0.8
        ([0, 0, 0, 0, 0], -1),
    ],
)
def test_generalization_tolerates_exactly_one_later_error(row, onset):
    steps = np.arange(len(row))
    assert generalization_onset([row], steps).tolist() == [onset]


def test_generalization_bad_input():
    with pytest.raises(InputError, match=r"0/1 values; got 0.5 for item 1 at checkpoint 2"):
        generalization_onset([[0, 1, 1], [1, 1, 0.5]], [1, 2, 3])
    with pytest.raises(InputError, match="'correct' parameter of generalization_onset"):
        generalization_onset([0, 1, 1], [1, 2, 3])
    with pytest.raises(InputError, match="strictly increasing"):
        generalization_onset([[0, 1, 1]], [1, 1, 3])


def test_group_labels():
    assert group_labels([5000, -1, 10], kind="test").tolist() == [
        "test@5000",
        "test@never",
        "test@10",
    ]
    with pytest.raises(InputError, match="'kind' parameter"):
        group_labels([1], kind="val")


def test_memorization_table_chooses_eps_per_domain():
    paper, steps = synthetic_losses(1.75, n=400, seed=3)
    tiny, _ = synthetic_losses(0.05, n=300, seed=4)
    domains = ["math"] * 400 + ["code"] * 300
    onsets, eps = memorization_table(np.r_[paper, tiny], steps, domains)
    assert onsets.columns == ["sample_index", "domain", "mem_onset", "epsilon"]
    assert onsets["sample_index"].to_list() == list(range(700))
    assert eps.columns == [
        "domain",
        "epsilon",
        "memorized_fraction",
        "in_target",
        "grid_step",
        "note",
        "delta",
    ]
    assert eps["domain"].to_list() == ["code", "math"]
    for domain, losses in [("math", paper), ("code", tiny)]:
        choice = auto_epsilon(losses, steps)
        row = eps.filter(eps["domain"] == domain).row(0, named=True)
        assert (row["epsilon"], row["memorized_fraction"], row["in_target"]) == (
            choice.epsilon,
            choice.fraction,
            True,
        )
        mine = onsets.filter(onsets["domain"] == domain)
        np.testing.assert_array_equal(
            mine["mem_onset"], memorization_onset(losses, steps, choice.epsilon, choice.delta)
        )
        assert (mine["epsilon"] == choice.epsilon).all()


def test_memorization_table_with_given_eps():
    losses, steps = synthetic_losses(1.0, n=100)
    _, eps = memorization_table(
        losses, steps, ["a"] * 50 + ["b"] * 50, epsilon={"a": 0.01, "b": 5.0}
    )
    assert eps["memorized_fraction"].to_list()[0] == 0.0
    assert eps["grid_step"].is_null().all()
    assert eps["note"][1].startswith("ε = 5 given")
    with pytest.raises(InputError, match="'epsilon' parameter of memorization_table"):
        memorization_table(losses, steps, ["a"] * 50 + ["b"] * 50, epsilon={"a": 0.1})
    with pytest.raises(InputError, match="'domains' parameter"):
        memorization_table(losses, steps, ["a"] * 3)
