"""The checks of public parameters, in one wording (scikit-learn's).

Every public function and config checks its options with these before any work, so a bad value is
always one line of the same form::

    The 'batch_size' parameter of capture_run must be an int >= 1. Got 0 instead.

Bounds read ``an int >= 1``, ``an int in [2, 64]``, ``a float in (0, 1]``, ``a float >= 0``; ``None
or …`` where None is allowed. bool is never an int here, and floats must be finite. Each check
returns the value in its plain Python type (``numpy.int64(3)`` -> ``3``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from numbers import Integral, Real
from pathlib import Path
from typing import Any, TypeVar

from pathwatch.errors import invalid_parameter, unknown_name

T = TypeVar("T")


def _bounds(low: float | None, high: float | None, *, low_open: bool, high_open: bool) -> str:
    """`` >= 1`` / `` > 0`` / `` in [2, 64]`` / `` in (0, 1]``; empty without bounds."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def _expected(kind: str, bounds: str, allow_none: bool) -> str:
    return f"{'None or ' if allow_none else ''}{kind}{bounds}"


def is_int(value: object) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_int(
    func: str,
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> Any:
    """``value`` as an int within ``[low, high]`` (None passes when ``allow_none``).

    >>> check_int("capture_run", "batch_size", 0, low=1)
    Traceback (most recent call last):
    ...
    pathwatch.errors.InputError: The 'batch_size' parameter of capture_run must be an int >= 1. Got 0 instead.
    """
    if value is None and allow_none:
        return None
    inside = is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not inside:
        bounds = _bounds(low, high, low_open=False, high_open=False)
        raise invalid_parameter(func, name, _expected("an int", bounds, allow_none), value)
    return int(value)


def check_float(
    func: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> Any:
    """``value`` as a finite float within its bounds (open or closed; None when ``allow_none``).

    >>> check_float("pathways", "threshold", 1.5, low=0, high=1, low_open=True)
    Traceback (most recent call last):
    ...
    pathwatch.errors.InputError: The 'threshold' parameter of pathways must be a float in (0, 1]. Got 1.5 instead.
    """
    if value is None and allow_none:
        return None
    ok = is_real(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = _bounds(low, high, low_open=low_open, high_open=high_open)
        raise invalid_parameter(func, name, _expected("a float", bounds, allow_none), value)
    return float(value)


def check_bool(func: str, name: str, value: Any) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise invalid_parameter(func, name, "a bool", value)
    return value


def check_choice(func: str, name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of the names ``choices``; an unknown name gets 'did you mean'."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise invalid_parameter(func, name, f"one of {', '.join(map(repr, choices))}", value)
    if value not in choices:
        raise unknown_name(name, value, choices)
    return value


def check_text(func: str, name: str, value: Any, *, allow_none: bool = False) -> Any:
    """``value`` if it is a non-empty string (or None when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise invalid_parameter(func, name, _expected("a non-empty str", "", allow_none), value)
    return value


def check_path(func: str, name: str, value: Any, *, allow_none: bool = False) -> Any:
    """``value`` as a Path (a str or os.PathLike; None when ``allow_none``), user home expanded."""
    if value is None and allow_none:
        return None
    if isinstance(value, str) and value:
        return Path(value).expanduser()
    if isinstance(value, os.PathLike) and not isinstance(value, str):
        return Path(value).expanduser()
    raise invalid_parameter(func, name, _expected("a path", "", allow_none), value)


def check_paths(func: str, name: str, value: Any) -> list[Path]:
    """One path or a non-empty sequence of paths, as a list of Paths."""
    if isinstance(value, (str, os.PathLike)):
        return [check_path(func, name, value)]
    items = list(value) if isinstance(value, Iterable) else []
    if not items:
        raise invalid_parameter(func, name, "a path or a non-empty list of paths", value)
    return [check_path(func, name, item) for item in items]


def check_instance(func: str, name: str, value: Any, kind: type[T], *, allow_none: bool) -> Any:
    """``value`` if it is a ``kind`` (or None when ``allow_none``): configs passed to a stage."""
    if value is None and allow_none:
        return None
    if not isinstance(value, kind):
        raise invalid_parameter(func, name, _expected(f"a {kind.__name__}", "", allow_none), value)
    return value


def check_array(func: str, name: str, value: Any, *, dtype: Any = float) -> Any:
    """``value`` as a numpy array of ``dtype`` (numbers by default); a string, an object or a
    ragged list is refused with the one-line error. Shapes are the caller's to check."""
    import numpy as np

    if not isinstance(value, (str, bytes)):
        try:
            return np.asarray(value, dtype=dtype)
        except (TypeError, ValueError, OverflowError):
            pass
    kind = "numbers" if dtype is float else np.dtype(dtype).name
    raise invalid_parameter(func, name, f"an array of {kind}", value)
