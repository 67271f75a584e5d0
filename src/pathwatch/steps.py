"""Training steps read from checkpoint names: only from an explicit pattern, never from any number.

A checkpoint's name often ends in a number that is not its step: ``OLMoE-1B-7B-0924`` (a date),
``snapshots/0a1b…901234567`` (a commit hash). A step is therefore read only where a word says it is
one: ``step5000``, ``step-5000``, ``step5000-tokens20B`` (OLMoE's hub revisions), ``checkpoint-5000``
(the HF Trainer), ``ckpt_5000``, ``global_step5000`` (DeepSpeed), ``iter_0005000`` (Megatron). Anything
else has no step, and the caller asks for one (``--steps``).
"""

from __future__ import annotations

import re
from pathlib import Path

from pathwatch.errors import InputError

__all__ = ["STEP_NAME_EXAMPLES", "checkpoint_step", "step_from_name"]

_STEP_WORD = re.compile(
    r"(?<![A-Za-z0-9])(?:global_step|step|checkpoint|ckpt|iter)[-_]?(\d+)(?![0-9])", re.IGNORECASE
)
STEP_NAME_EXAMPLES = "'step-1000', 'step1000-tokens4B' or 'checkpoint-1000'"
"""How a name that carries its step looks, for error messages."""


def step_from_name(name: str) -> int | None:
    """The training step that ``name`` states explicitly, or None.

    >>> step_from_name("step5000-tokens20B"), step_from_name("checkpoint-60")
    (5000, 60)
    >>> step_from_name("OLMoE-1B-7B-0924") is None, step_from_name("0a1b2c901234567") is None
    (True, True)

    When several step words occur (``runs/step-100/checkpoint-200``) the last one wins: it names
    the innermost directory.
    """
    found = _STEP_WORD.findall(name)
    return int(found[-1]) if found else None


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint directory's name states; the one-line error that asks for --steps."""
    step = step_from_name(path.name)
    if step is None:
        raise InputError(
            f"Cannot read a training step from checkpoint directory name {path.name!r} "
            f"({path}); name it like {STEP_NAME_EXAMPLES}, or pass --steps."
        )
    return step
