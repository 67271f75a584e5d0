"""Lead and lag of a metric against accuracy, and a test-free detector of generalization under way.

``lagged_correlation`` correlates a metric at checkpoint t with accuracy at checkpoint t + k for
lags k in −K … K: a positive best lag means the metric *leads* accuracy by k checkpoints.
``detect_generalization`` flags "generalization under way" from a training-only signal (e.g. the
pathway distance of memorized samples): the first checkpoint after the memorization onset at which
its trailing moving average has fallen for ``run`` consecutive checkpoints and lies at least
``min_drop`` (relative) below its running maximum since the onset. ``detection_lead`` measures how
many checkpoints before accuracy crosses a level the detector fired.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pathwatch._validate import check_array, check_float, check_int, is_int
from pathwatch.errors import invalid_parameter
from pathwatch.evaluation.correlate import moving_average


def _series(func: str, name: str, values: ArrayLike) -> NDArray[np.float64]:
    arr = check_array(func, name, values)
    if arr.ndim != 1 or arr.size == 0:
        raise invalid_parameter(func, name, "a non-empty 1-D array", arr.shape)
    return arr


def lagged_correlation(
    metric: ArrayLike, accuracy: ArrayLike, *, max_lag: int = 5
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Pearson correlation of ``metric[t]`` with ``accuracy[t + k]`` for every lag k in −K … K.

    Pairs with a NaN on either side are dropped; a lag with fewer than 3 pairs or a constant side
    gives NaN.

    Parameters
    ----------
    metric, accuracy : arrays of shape (T,)
        One value per checkpoint, the same checkpoints in order.
    max_lag : int, default 5
        K, in checkpoints.

    Returns
    -------
    lags : int array of shape (2K + 1,)
    r : float array of shape (2K + 1,)
        ``r[i]`` correlates the metric with accuracy ``lags[i]`` checkpoints later (a metric that
        leads accuracy by k peaks in |r| at lag +k).

    Examples
    --------
    >>> acc = [0, 0, 0, 1, 2, 3, 4, 4, 4]
    >>> lags, r = lagged_correlation([0, 1, 2, 3, 4, 4, 4, 4, 4], acc, max_lag=3)
    >>> int(lags[np.nanargmax(r)])
    2
    """
    x, y = (
        _series("lagged_correlation", "metric", metric),
        _series("lagged_correlation", "accuracy", accuracy),
    )
    if x.shape != y.shape:
        raise invalid_parameter(
            "lagged_correlation", "accuracy", f"an array of the metric's shape {x.shape}", y.shape
        )
    check_int("lagged_correlation", "max_lag", max_lag, low=0, high=x.size - 1)
    lags = np.arange(-max_lag, max_lag + 1)
    r = np.full(lags.size, np.nan)
    for i, k in enumerate(lags):
        a, b = (x[: x.size - k], y[k:]) if k >= 0 else (x[-k:], y[: y.size + k])
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
        if a.size >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
            r[i] = np.corrcoef(a, b)[0, 1]
    return lags, r


def detect_generalization(
    steps: ArrayLike,
    signal: ArrayLike,
    *,
    onset: int | None = None,
    run: int = 3,
    min_drop: float = 0.05,
    window: int = 3,
) -> int | None:
    """First checkpoint at which a training-only signal says "generalization under way".

    The signal (e.g. pathway distance of memorized samples) is smoothed by a trailing moving
    average of ``window`` checkpoints. From ``onset`` on (the first memorization onset; default the
    first checkpoint), the detector fires at the first checkpoint where the smoothed signal has
    decreased at ``run`` consecutive checkpoints and lies at least ``min_drop`` × its running
    maximum (since ``onset``) below that maximum. NaN checkpoints (e.g. no memorized sample yet)
    are skipped and break a run.

    Parameters
    ----------
    steps : int array of shape (T,)
        Checkpoint steps, strictly increasing.
    signal : array of shape (T,)
    onset : int, optional
        Step from which to watch; None watches from the first checkpoint.
    run : int, default 3
        Consecutive decreasing checkpoints required.
    min_drop : float, default 0.05
        Required fall below the running maximum, relative to it.
    window : int, default 3
        Trailing moving-average window (1: no smoothing).

    Returns
    -------
    int or None
        The step where it fires, or None when it never does.

    Examples
    --------
    >>> detect_generalization(range(8), [5, 6, 7, 7, 6.5, 6, 5, 4], run=2, window=1)
    5
    """
    step_arr = np.asarray(steps)
    x = _series("detect_generalization", "signal", signal)
    if step_arr.shape != x.shape:
        raise invalid_parameter(
            "detect_generalization",
            "steps",
            f"an array of the signal's shape {x.shape}",
            step_arr.shape,
        )
    if np.any(np.diff(step_arr) <= 0):
        raise invalid_parameter(
            "detect_generalization", "steps", "strictly increasing", step_arr.tolist()
        )
    func = "detect_generalization"
    check_int(func, "onset", onset, allow_none=True)
    check_int(func, "run", run, low=1)
    check_float(func, "min_drop", min_drop, low=0, high=1, high_open=True)
    check_int(func, "window", window, low=1)
    watch = step_arr >= (step_arr[0] if onset is None else onset)
    finite = np.isfinite(x) & watch
    smooth = np.full(x.shape, np.nan)
    if finite.any():
        smooth[finite] = moving_average(x[finite], window)
    peak = np.fmax.accumulate(np.where(finite, smooth, -np.inf))
    falling = np.zeros(x.size, bool)
    falling[1:] = finite[1:] & finite[:-1] & (smooth[1:] < smooth[:-1])
    # length of the current run of consecutive decreases ending at each checkpoint
    breaks = np.flatnonzero(~falling)
    streak = np.arange(x.size) - breaks[np.searchsorted(breaks, np.arange(x.size), "right") - 1]
    fired = finite & (streak >= run) & (smooth <= (1 - min_drop) * peak)
    hits = np.flatnonzero(fired)
    return int(step_arr[hits[0]]) if hits.size else None


def crossing_step(steps: ArrayLike, accuracy: ArrayLike, *, level: float = 0.5) -> int | None:
    """First checkpoint step at which accuracy reaches ``level``, or None.

    Examples
    --------
    >>> crossing_step([0, 10, 20, 30], [0.0, 0.2, 0.6, 0.9])
    20
    """
    acc = _series("crossing_step", "accuracy", accuracy)
    step_arr = np.asarray(steps)
    if step_arr.shape != acc.shape:
        raise invalid_parameter(
            "crossing_step", "steps", f"an array of accuracy's shape {acc.shape}", step_arr.shape
        )
    hits = np.flatnonzero(acc >= level)
    return int(step_arr[hits[0]]) if hits.size else None


def detection_lead(steps: ArrayLike, fired: int | None, crossed: int | None) -> int | None:
    """Checkpoints from a detection to accuracy's crossing: > 0 fired before, < 0 after.

    None when either never happened.

    Examples
    --------
    >>> detection_lead([0, 10, 20, 30, 40], 10, 40)
    3
    """
    if fired is None or crossed is None:
        return None
    steps = check_array("detection_lead", "steps", steps, dtype=np.int64)
    index = {int(s): i for i, s in enumerate(steps.ravel().tolist())}
    for name, value in (("fired", fired), ("crossed", crossed)):
        if not is_int(value) or value not in index:
            raise invalid_parameter("detection_lead", name, "a step of steps", value)
    return index[crossed] - index[fired]
