"""Markdown tables of the study's report: one cell format for every section."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def fmt(v: Any, digits: int = 2) -> str:
    """A cell: floats to ``digits`` decimals, NaN and None as "–", anything else as str."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table of ``rows`` under ``header``, cells by :func:`fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
