"""Memorization onsets of training samples and generalization onsets of test items (SPEC §1).

A training sample is *memorized from* checkpoint t* when, for every checkpoint t ≥ t*, its loss is at
most ε and within δ of its loss at the last checkpoint T. A test item *generalizes from* t# when it is
correct at t#, its accuracy over t# and all later checkpoints exceeds 0.8, and it makes at most one
error after t#. Samples (items) with the same onset form the group ``train@<t*>`` (``test@<t#>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray

from pathwatch._validate import check_array, check_bool, check_float, is_real
from pathwatch.errors import InputError, invalid_parameter

NEVER = -1
"""Onset of a sample (item) that is never memorized (generalized)."""

_TARGET = (0.20, 0.25)
_COARSE_STEP = 0.1
_FINEST_STEP = 1e-6


class EpsilonChoice(NamedTuple):
    """The ε chosen by :func:`auto_epsilon` for one domain.

    Attributes
    ----------
    epsilon : float
        The loss threshold ε.
    fraction : float
        Fraction of the samples memorized before the last checkpoint at this ε.
    in_target : bool
        Whether ``fraction`` lies in the target band.
    grid_step : float
        Spacing of the grid ε was taken from (0.1, or a finer decade).
    note : str
        One line on how ε was chosen; says so when no grid point reached the target band.
    delta : float
        The stability band δ that goes with this ε: the δ given on the 0.1 grid, scaled by
        ``grid_step / 0.1`` on a finer grid (see :func:`scaled_delta`).
    """

    epsilon: float
    fraction: float
    in_target: bool
    grid_step: float
    note: str
    delta: float


def _steps(steps: ArrayLike, n_checkpoints: int, func: str) -> NDArray[np.int64]:
    """Validate checkpoint steps: 1-D integers, strictly increasing, one per checkpoint."""
    arr = np.asarray(steps)
    if arr.ndim != 1 or arr.shape[0] != n_checkpoints:
        raise invalid_parameter(
            func, "steps", f"a 1-D array of {n_checkpoints} checkpoint steps", arr.shape
        )
    integral = np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))
    )
    if not integral:
        raise invalid_parameter(func, "steps", "integer checkpoint steps", arr.tolist())
    arr = arr.astype(np.int64)
    if np.any(np.diff(arr) <= 0):
        raise invalid_parameter(func, "steps", "strictly increasing", arr.tolist())
    return arr


def _losses(losses: ArrayLike, func: str) -> NDArray[np.float64]:
    """Validate an (N, T) loss matrix: numeric, finite, at least one checkpoint."""
    arr = check_array(func, "losses", losses)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise invalid_parameter(
            func, "losses", "a 2-D array of shape (N samples, T checkpoints)", arr.shape
        )
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        i, t = (int(v) for v in bad[0])
        raise InputError(
            f"The 'losses' parameter of {func} must be finite; got {arr[i, t]} for sample {i} at "
            f"checkpoint {t} ({len(bad)} non-finite value(s) in all). Recompute or drop that sample."
        )
    return arr


def _stable_suffix(ok: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """True at (i, t) when ``ok`` holds at t and at every later checkpoint (reverse cumulative AND)."""
    return np.logical_and.accumulate(ok[:, ::-1], axis=1)[:, ::-1]


def _first_step(mask: NDArray[np.bool_], steps: NDArray[np.int64]) -> NDArray[np.int64]:
    """Per row, the step of the first True column of ``mask``, or :data:`NEVER`."""
    first = mask.argmax(axis=1)
    return np.where(mask.any(axis=1), steps[first], NEVER).astype(np.int64)


def memorization_onset(
    losses: ArrayLike, steps: ArrayLike, eps: float | ArrayLike, delta: float | ArrayLike = 0.05
) -> NDArray[np.int64]:
    """Memorization onset t* of each training sample.

    A sample is memorized from t* when, for every checkpoint t ≥ t*, ``loss(t) <= eps`` and
    ``|loss(t) - loss(T)| <= delta``, T the last checkpoint.

    Parameters
    ----------
    losses : array of shape (N, T)
        Per-sample mean token loss at each checkpoint, finite.
    steps : array of shape (T,)
        Checkpoint steps, strictly increasing.
    eps : float or array of shape (N,)
        Loss threshold ε, one for all samples or one per sample (e.g. its domain's ε).
    delta : float or array of shape (N,), default 0.05
        Allowed distance from the final loss, one for all samples or one per sample.

    Returns
    -------
    onsets : int64 array of shape (N,)
        The onset step, or -1 when the sample is never memorized.

    Examples
    --------
    >>> memorization_onset([[2.0, 0.33, 0.31, 0.3], [2.0, 1.0, 0.9, 0.8]], [10, 20, 30, 40], 0.6)
    array([20, -1])
    """
    func = "memorization_onset"
    arr = _losses(losses, func)
    step_arr = _steps(steps, arr.shape[1], func)
    eps_col = _per_sample(func, "eps", eps, arr.shape[0], positive=True)
    if np.ndim(delta) == 0:
        delta = check_float(func, "delta", delta, low=0)
    delta_col = _per_sample(func, "delta", delta, arr.shape[0], positive=False)
    ok = (arr <= eps_col) & (np.abs(arr - arr[:, -1:]) <= delta_col)
    return _first_step(_stable_suffix(ok), step_arr)


def _per_sample(func: str, name: str, value: object, n: int, *, positive: bool) -> NDArray:
    """A float or an (n,) array of finite values (> 0, or >= 0), as a column to broadcast."""
    arr = check_array(func, name, value)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
        raise invalid_parameter(func, name, f"a float or an array of {n} floats", value)
    if not np.all(np.isfinite(arr) & ((arr > 0) if positive else (arr >= 0))):
        raise invalid_parameter(func, name, "positive and finite" if positive else ">= 0", value)
    return arr.reshape(-1, 1) if arr.ndim else arr


def scaled_delta(delta: float, grid_step: float) -> float:
    """The δ that goes with an ε of a grid of spacing ``grid_step``: ``delta * grid_step / 0.1``.

    SPEC's δ = 0.05 is half a step of the paper's 0.1 ε grid, for losses of 1.5–2 nats. Where the
    losses sit at 0.01–0.1 nats and ε is refined to a finer grid, an absolute δ of 0.05 would be
    wider than ε itself and count any low loss as stable; δ keeps its ratio to the grid step instead.
    On the 0.1 grid (or a coarser one) δ is ``delta`` unchanged.

    Examples
    --------
    >>> scaled_delta(0.05, 0.1), scaled_delta(0.05, 0.001)
    (0.05, 0.0005)
    """
    return float(delta) * min(1.0, float(grid_step) / _COARSE_STEP)


def auto_epsilon(
    losses: ArrayLike,
    steps: ArrayLike,
    *,
    delta: float = 0.05,
    target: tuple[float, float] = _TARGET,
    scale_delta: bool = True,
) -> EpsilonChoice:
    """Choose ε for one domain so that a target fraction of its samples is memorized before T.

    The search starts on the paper's 0.1 grid (0.1, 0.2, …). When no point of it lands in the
    target band, it refines the bracket where the fraction crosses the band on a grid ten times
    finer (0.01, then 0.001, … down to 1e-6), so that losses of 0.01–0.1 nats get an ε as well as
    losses of 1.5–2 nats. The smallest ε in the band is chosen; if none is, the grid point whose
    fraction is closest to the band (smallest ε on ties), and ``note`` says so.

    With ``scale_delta`` (the default) each finer grid judges stability with a δ scaled to its
    step (:func:`scaled_delta`): δ stays ``delta`` on the 0.1 grid. The δ that goes with the
    chosen ε is returned with it; :func:`memorization_table` dates onsets with it.

    A sample is memorized before T exactly when it satisfies the rule at the last two checkpoints,
    so the fraction at any ε is read from the sorted losses; no onset is recomputed per grid point.

    Parameters
    ----------
    losses : array of shape (N, T)
        Per-sample losses of one domain, T >= 2 checkpoints.
    steps : array of shape (T,)
        Checkpoint steps, strictly increasing.
    delta : float, default 0.05
        δ of :func:`memorization_onset` on the 0.1 grid.
    target : (float, float), default (0.20, 0.25)
        Band of the fraction memorized before the last checkpoint.
    scale_delta : bool, default True
        Scale δ with the grid step on grids finer than 0.1; False keeps δ absolute.

    Returns
    -------
    EpsilonChoice
        ``(epsilon, fraction, in_target, grid_step, note, delta)``.

    Examples
    --------
    >>> losses = [[2.0, 0.05 * i, 0.05 * i] for i in range(1, 21)]
    >>> choice = auto_epsilon(losses, [1, 2, 3])
    >>> choice.epsilon, choice.fraction
    (0.2, 0.2)
    """
    func = "auto_epsilon"
    arr = _losses(losses, func)
    _steps(steps, arr.shape[1], func)
    if arr.shape[0] == 0 or arr.shape[1] < 2:
        raise invalid_parameter(
            func, "losses", "at least one sample and two checkpoints", arr.shape
        )
    delta, (low, high) = _check_band(func, delta, target)

    check_bool(func, "scale_delta", scale_delta)
    n = arr.shape[0]
    # memorized before T  <=>  rule holds at T-1 and T  <=>  stable & max(last two losses) <= eps
    moved = np.abs(arr[:, -2] - arr[:, -1])
    highest = np.maximum(arr[:, -2], arr[:, -1])

    def band(step: float) -> float:
        return scaled_delta(delta, step) if scale_delta else delta

    def needed(step: float) -> NDArray[np.float64]:
        """Sorted ε each sample stable within this grid's δ needs to count as memorized."""
        return np.sort(highest[moved <= band(step)])

    def fraction(eps: NDArray[np.float64], step: float) -> NDArray[np.float64]:
        return np.searchsorted(needed(step), eps, side="right") / n

    # The fraction only grows with ε, so the smallest grid point in the band, if any, is the
    # first one at or above the loss of the ceil(low * n)-th sample to be memorized: look there.
    step, lo = _COARSE_STEP, 0.0
    need = needed(step)
    k = min(int(np.ceil(low * n)), need.size) - 1
    anchor = need[k] if k >= 0 else step
    base = max(int(np.floor(anchor / step)) - 1, 1)
    grid = np.round((base + np.arange(4)) * step, 1)
    seen_eps, seen_frac, seen_step = [grid], [fraction(grid, step)], [np.full(grid.size, step)]
    while True:
        frac = seen_frac[-1]
        inside = (frac >= low) & (frac <= high)
        if inside.any():
            i = int(np.argmax(inside))
            eps = float(seen_eps[-1][i])
            note = f"ε = {eps:g} on the {step:g} grid"
            note += f" (δ = {band(step):g})" if band(step) != delta else ""
            note += f": {frac[i]:.1%} memorized before the last checkpoint"
            return EpsilonChoice(eps, float(frac[i]), True, step, note, band(step))
        if step / 10 < _FINEST_STEP or not (frac > high).any():
            break  # finest grid reached, or the band lies above every reachable fraction
        below = seen_eps[-1][frac < low]
        lo = float(below.max()) if below.size else lo
        step /= 10
        digits = round(-np.log10(step))
        grid = np.round(lo + np.arange(1, 10) * step, digits)
        seen_eps.append(grid)
        seen_frac.append(fraction(grid, step))
        seen_step.append(np.full(grid.size, step))

    eps_all, frac_all = np.concatenate(seen_eps), np.concatenate(seen_frac)
    step_all = np.concatenate(seen_step)
    gap = np.maximum(low - frac_all, frac_all - high)
    order = np.lexsort((eps_all, gap))
    i = int(order[0])
    chosen = band(float(step_all[i]))
    stable = int((moved <= chosen).sum())
    note = (
        f"no ε on grids down to {_FINEST_STEP:g} puts {low:.0%}–{high:.0%} of the samples in "
        f"memorization before the last checkpoint; closest: ε = {eps_all[i]:g} with {frac_all[i]:.1%}"
        f" ({stable} of {n} samples are stable within δ = {chosen:g} at the last two checkpoints)"
    )
    return EpsilonChoice(
        float(eps_all[i]), float(frac_all[i]), False, float(step_all[i]), note, chosen
    )


def memorization_table(
    losses: ArrayLike,
    steps: ArrayLike,
    domains: Sequence[str],
    *,
    epsilon: str | float | Mapping[str, float] = "auto",
    delta: float = 0.05,
    target: tuple[float, float] = _TARGET,
    scale_delta: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Memorization onsets of all samples, with ε chosen (or given) per domain.

    Parameters
    ----------
    losses : array of shape (N, T)
        Per-sample losses at each checkpoint.
    steps : array of shape (T,)
        Checkpoint steps, strictly increasing.
    domains : sequence of str, length N
        Domain of each sample.
    epsilon : "auto", float or mapping of domain to float, default "auto"
        ``"auto"``: :func:`auto_epsilon` per domain; a float for every domain; or one per domain.
    delta : float, default 0.05
        δ on the 0.1 grid; with ``epsilon="auto"`` and ``scale_delta`` each domain's onsets use
        the δ of its ε's grid (:func:`scaled_delta`), a given ε uses ``delta`` as it is.
    target : (float, float), default (0.20, 0.25)
        Band of :func:`auto_epsilon`; with a given ε it only sets ``in_target``.
    scale_delta : bool, default True
        Passed to :func:`auto_epsilon`.

    Returns
    -------
    onsets : polars.DataFrame
        ``sample_index, domain, mem_onset, epsilon``, one row per sample in input order.
    epsilons : polars.DataFrame
        ``domain, epsilon, memorized_fraction, in_target, grid_step, note, delta``, one row per
        domain; ``memorized_fraction`` counts the samples memorized before the last checkpoint,
        ``grid_step`` is null for a given ε, ``delta`` is the δ its onsets were dated with.

    Examples
    --------
    >>> losses = [[2.0, 0.3, 0.3], [2.0, 2.0, 0.3], [0.12, 0.1, 0.1]]
    >>> onsets, eps = memorization_table(losses, [1, 2, 3], ["a", "a", "b"], epsilon=0.5)
    >>> onsets["mem_onset"].to_list(), eps["memorized_fraction"].to_list()
    ([2, 3, 1], [0.5, 1.0])
    """
    func = "memorization_table"
    arr = _losses(losses, func)
    step_arr = _steps(steps, arr.shape[1], func)
    delta, _ = _check_band(func, delta, target)
    check_bool(func, "scale_delta", scale_delta)
    labels = np.asarray(domains, dtype=object)
    if labels.shape != (arr.shape[0],):
        raise invalid_parameter(
            func, "domains", f"a sequence of {arr.shape[0]} domain names", labels.shape
        )
    names = sorted(set(labels.tolist()))
    if isinstance(epsilon, Mapping):
        missing = [d for d in names if d not in epsilon]
        if missing:
            raise invalid_parameter(
                func, "epsilon", f"a mapping with every domain {names}", epsilon
            )
    elif epsilon != "auto" and not is_real(epsilon):
        raise invalid_parameter(
            func, "epsilon", "'auto', a float, or a mapping of domain to float", epsilon
        )
    given = epsilon.values() if isinstance(epsilon, Mapping) else [epsilon]
    if epsilon != "auto" and not all(is_real(e) and np.isfinite(e) and e > 0 for e in given):
        raise invalid_parameter(func, "epsilon", "'auto' or floats > 0", epsilon)
    choices: dict[str, EpsilonChoice | float] = {}
    for name in names:
        if epsilon == "auto":
            choices[name] = auto_epsilon(
                arr[labels == name], step_arr, delta=delta, target=target, scale_delta=scale_delta
            )
        else:
            choices[name] = float(epsilon[name] if isinstance(epsilon, Mapping) else epsilon)
    eps_of = {d: c.epsilon if isinstance(c, EpsilonChoice) else c for d, c in choices.items()}
    delta_of = {d: c.delta if isinstance(c, EpsilonChoice) else delta for d, c in choices.items()}
    per_sample = np.array([eps_of[d] for d in labels.tolist()], dtype=np.float64)
    delta_per_sample = np.array([delta_of[d] for d in labels.tolist()], dtype=np.float64)
    onsets = memorization_onset(arr, step_arr, per_sample, delta_per_sample)
    before = (onsets != NEVER) & (onsets < step_arr[-1])
    rows = []
    for name, choice in choices.items():
        fraction = float(before[labels == name].mean())
        if isinstance(choice, EpsilonChoice):
            c = choice
            rows.append((name, c.epsilon, fraction, c.in_target, c.grid_step, c.note, c.delta))
        else:
            note = f"ε = {choice:g} given: {fraction:.1%} memorized before the last checkpoint"
            inside = target[0] <= fraction <= target[1]
            rows.append((name, choice, fraction, inside, None, note, delta))
    onset_table = pl.DataFrame(
        {
            "sample_index": np.arange(arr.shape[0], dtype=np.int64),
            "domain": labels.tolist(),
            "mem_onset": onsets,
            "epsilon": per_sample,
        },
        schema={
            "sample_index": pl.Int64,
            "domain": pl.String,
            "mem_onset": pl.Int64,
            "epsilon": pl.Float64,
        },
    )
    epsilon_table = pl.DataFrame(
        rows,
        schema={
            "domain": pl.String,
            "epsilon": pl.Float64,
            "memorized_fraction": pl.Float64,
            "in_target": pl.Boolean,
            "grid_step": pl.Float64,
            "note": pl.String,
            "delta": pl.Float64,
        },
        orient="row",
    )
    return onset_table, epsilon_table


def generalization_onset(correct: ArrayLike, steps: ArrayLike) -> NDArray[np.int64]:
    """Generalization onset t# of each test item.

    The earliest checkpoint at which the item is correct, its accuracy over that checkpoint and
    all later ones exceeds 0.8, and it makes at most one error among the later checkpoints.

    Parameters
    ----------
    correct : array of shape (M, T)
        Correctness (0/1 or bool) of each test item at each checkpoint.
    steps : array of shape (T,)
        Checkpoint steps, strictly increasing.

    Returns
    -------
    onsets : int64 array of shape (M,)
        The onset step, or -1 when the item never generalizes.

    Examples
    --------
    >>> generalization_onset([[0, 1, 1, 0, 1, 1, 1], [1, 0, 0, 1, 0, 1, 0]], range(7))
    array([ 1, -1])
    """
    func = "generalization_onset"
    arr = np.asarray(correct)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise invalid_parameter(
            func, "correct", "a 2-D array of shape (M items, T checkpoints)", arr.shape
        )
    if arr.dtype != np.bool_ and not np.all((arr == 0) | (arr == 1)):
        bad = np.argwhere(~((arr == 0) | (arr == 1)))[0]
        raise InputError(
            f"The 'correct' parameter of {func} must hold 0/1 values; got {arr[tuple(bad)].item()!r} for "
            f"item {bad[0]} at checkpoint {bad[1]}. Convert scores to correctness first."
        )
    step_arr = _steps(steps, arr.shape[1], func)
    hit = arr.astype(bool)
    n_from = np.arange(arr.shape[1], 0, -1)  # checkpoints from t to T, inclusive
    correct_from = np.cumsum(hit[:, ::-1], axis=1)[:, ::-1]  # correct answers from t on
    errors_after = n_from - correct_from - (~hit).astype(np.int64)  # errors strictly after t
    accurate = 5 * correct_from > 4 * n_from  # mean accuracy > 0.8, in exact integers
    return _first_step(hit & accurate & (errors_after <= 1), step_arr)


def group_labels(onsets: ArrayLike, *, kind: str) -> NDArray[np.str_]:
    """Group label of each onset: ``"<kind>@<step>"``, or ``"<kind>@never"`` for -1.

    Parameters
    ----------
    onsets : int array of shape (N,)
        Onsets from :func:`memorization_onset` or :func:`generalization_onset`.
    kind : {"train", "test"}
        Prefix of the label.

    Returns
    -------
    labels : str array of shape (N,)

    Examples
    --------
    >>> group_labels([100, -1], kind="train").tolist()
    ['train@100', 'train@never']
    """
    if kind not in ("train", "test"):
        raise invalid_parameter("group_labels", "kind", "'train' or 'test'", kind)
    arr = np.asarray(onsets, dtype=np.int64)
    named = np.char.add(f"{kind}@", arr.astype(str))
    return np.where(arr == NEVER, f"{kind}@never", named)


def _check_band(func: str, delta: object, target: object) -> tuple[float, tuple[float, float]]:
    """δ (a float >= 0) and the target band (low, high) of memorized fractions, checked."""
    delta = check_float(func, "delta", delta, low=0)
    band = target if isinstance(target, tuple | list) and len(target) == 2 else None
    if band is None or not all(is_real(v) for v in band) or not 0 <= band[0] <= band[1] <= 1:
        raise invalid_parameter(
            func, "target", "a band (low, high) with 0 <= low <= high <= 1", target
        )
    return delta, (float(band[0]), float(band[1]))
