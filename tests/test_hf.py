"""transformers' progress bars are silenced inside pathwatch's loads and restored afterwards."""

from __future__ import annotations

import pytest
from transformers.utils import logging as hf_logging

from pathwatch._hf import no_hf_progress_bars


@pytest.mark.parametrize("enabled", [True, False])
def test_bars_are_off_inside_and_restored_after_even_on_error(enabled):
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        with pytest.raises(RuntimeError), no_hf_progress_bars():
            assert not hf_logging.is_progress_bar_enabled()
            raise RuntimeError("load failed")
        assert hf_logging.is_progress_bar_enabled() is enabled
    finally:
        hf_logging.enable_progress_bar()
