"""The Examples blocks of the array-level packages' docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ["pathwatch.dynamics", "pathwatch.evaluation"]

MODULES = [
    info.name
    for package in PACKAGES
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__, f"{package}.")
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE
    )
    assert result.failed == 0
    assert result.attempted > 0
