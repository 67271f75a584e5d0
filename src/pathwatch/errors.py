"""The exceptions pathwatch raises on purpose.

Every error is one line that says where (parameter, ``file:line``, field), what was expected, what was
got, and how to fix it. The CLI catches :class:`PathwatchError` only; anything else is a bug.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches


class PathwatchError(Exception):
    """Base class of every error pathwatch raises on purpose."""

    exit_code = 1


class InputError(PathwatchError, ValueError):
    """Bad input from the user: a parameter, a file, a field, a model."""

    exit_code = 2


class UnsupportedModelError(InputError):
    """The model has no MoE router that pathwatch can record."""


class MissingExtraError(InputError, ImportError):
    """An optional extra that the call needs is not installed; the message names it."""


class StoreError(PathwatchError, OSError):
    """The run directory cannot be read or written (missing, full disk, permissions)."""


class IntegrityError(StoreError):
    """A stored unit or manifest does not verify (truncated, corrupt, or from another run)."""


def invalid_parameter(func: str, name: str, expected: str, got: object) -> InputError:
    """The scikit-learn style error for a bad parameter value (the value's repr on one short line).

    >>> str(invalid_parameter("pathways", "threshold", "a float in (0, 1]", 1.5))
    "The 'threshold' parameter of pathways must be a float in (0, 1]. Got 1.5 instead."
    """
    return InputError(
        f"The {name!r} parameter of {func} must be {expected}. Got {short_repr(got)} instead."
    )


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (arrays and configs can be long)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> InputError:
    """An error for an unknown name, with a 'did you mean' suggestion and the valid list."""
    valid = sorted(valid)
    close = get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return InputError(f"Unknown {kind} {name!r}.{hint} Valid: {', '.join(valid)}.")
