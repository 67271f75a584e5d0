"""The public API of SPEC §4: every advertised name resolves, and importing pathwatch stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pathwatch as pw

SPEC_NAMES = [
    "capture",
    "pathways",
    "pathway_string",
    "pathway_distance",
    "mean_pairwise_distance",
    "consistency",
    "memorization_onset",
    "generalization_onset",
]


@pytest.mark.parametrize("name", sorted(pw.__all__))
def test_every_public_name_resolves(name):
    assert getattr(pw, name) is not None
    assert name in dir(pw)


def test_spec_functions_are_callable():
    for name in SPEC_NAMES:
        assert callable(getattr(pw, name)), name


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'pathway'"):
        _ = pw.pathway


def test_import_does_not_load_torch():
    code = "import sys, pathwatch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_spec_example_runs_on_arrays():
    import numpy as np

    weights = np.array([[[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], [[0.5, 0.4, 0.1], [0.8, 0.1, 0.1]]])
    paths = pw.pathways(weights, threshold=0.7)
    assert [pw.pathway_string(p) for p in paths] == ["0,1-2,1", "0,1-0"]
    # "0,1-2,1" -> "0,1-0": substitute 2 by 0, delete ",1"
    assert pw.pathway_distance(paths[0], paths[1]) == 3
    # per expert: [0, 1, |, 2, 1] -> [0, 1, |, 0]: substitute, delete
    assert pw.pathway_distance(paths[0], paths[1], unit="expert") == 2
    assert pw.mean_pairwise_distance(paths) == 3.0
