"""Fixtures of the capture tests: tiny models of every family, built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny_models import FAMILIES, build_tiny_model


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, torch.nn.Module]:
    """One tiny model per family key of ``tiny_models.FAMILIES`` (do not modify them in tests)."""
    return {family: build_tiny_model(family) for family in FAMILIES}
