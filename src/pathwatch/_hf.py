"""Shared transformers plumbing: loading without transformers' own progress bars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_hf_progress_bars() -> Iterator[None]:
    """Silence transformers' progress bars (weight loading, saving) inside the block, then restore
    them: pathwatch shows its own bars, and ``--no-progress`` must mean none at all."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
