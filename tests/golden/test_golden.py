"""Outputs of the real CLI on a stored tiny run stay what they were (tests/golden/regenerate.py).

A restructuring or an optimisation must not change a table: `pathwatch analyze` of the stored run
gives every golden table again (strings and integers exactly, floats to 1e-12; the embedder's
similarities to 1e-6), and `pathwatch capture` of the stored checkpoints gives the stored units
(routing and loss to 1e-6: a forward pass may round differently on another CPU).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from regenerate import GOLDEN, analyze_args, capture_args, normalize
from safetensors.numpy import load_file

INPUTS = GOLDEN / "inputs"
RUN = GOLDEN / "run"
TABLES = sorted((RUN / "tables").glob("*.parquet"))
#: columns computed through torch (the sentence embedder) rather than from the stored units
TORCH_COLUMNS = {"similarity"}


def _run_copy(tmp_path: Path, *, with_units: bool) -> Path:
    """The golden run's manifest (its paths made real) and, if asked, its units, under tmp_path."""
    run = tmp_path / "run"
    run.mkdir()
    manifest = (RUN / "manifest.json").read_text().replace("{GOLDEN}", str(GOLDEN))
    (run / "manifest.json").write_text(manifest)
    if with_units:
        for name in ("units", "routers", "samples.parquet"):
            source = RUN / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, run / name)
    return run


def _assert_tables_equal(expected: pl.DataFrame, actual: pl.DataFrame, name: str) -> None:
    assert actual.columns == expected.columns, name
    assert actual.schema == expected.schema, name
    for column in expected.columns:
        tolerance = 1e-6 if column in TORCH_COLUMNS else 1e-12
        (
            assert_frame_equal(
                actual.select(column),
                expected.select(column),
                check_exact=False,
                rel_tol=tolerance,
                abs_tol=tolerance,
            ),
            f"{name}.{column}",
        )


def test_golden_inputs_are_there() -> None:
    assert len(TABLES) >= 9
    assert len(list((INPUTS / "checkpoints").iterdir())) == 7


def test_analyze_of_the_golden_run_gives_the_golden_tables(tmp_path: Path) -> None:
    run = _run_copy(tmp_path, with_units=True)
    done = subprocess.run(analyze_args(INPUTS, run), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert normalize(done.stdout, run) == (GOLDEN / "analyze.txt").read_text()
    written = sorted(p.name for p in (run / "tables").glob("*.parquet"))
    assert written == [p.name for p in TABLES]
    for path in TABLES:
        _assert_tables_equal(
            pl.read_parquet(path), pl.read_parquet(run / "tables" / path.name), path.name
        )


@pytest.mark.parametrize("kind", ["units", "routers"])
def test_capture_of_the_golden_checkpoints_gives_the_golden_units(
    tmp_path: Path, kind: str
) -> None:
    run = tmp_path / "run"
    done = subprocess.run(capture_args(INPUTS, run), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (run / "manifest.json").read_text().replace(str(GOLDEN), "{GOLDEN}") == (
        RUN / "manifest.json"
    ).read_text()
    assert_frame_equal(
        pl.read_parquet(run / "samples.parquet"), pl.read_parquet(RUN / "samples.parquet")
    )
    expected_files = sorted(p.relative_to(RUN) for p in (RUN / kind).rglob("*.safetensors"))
    assert expected_files
    assert sorted(p.relative_to(run) for p in (run / kind).rglob("*.safetensors")) == expected_files
    for relative in expected_files:
        expected, actual = load_file(RUN / relative), load_file(run / relative)
        assert actual.keys() == expected.keys(), relative
        for key, value in expected.items():
            assert actual[key].dtype == value.dtype and actual[key].shape == value.shape
            if np.issubdtype(value.dtype, np.floating):
                np.testing.assert_allclose(
                    actual[key], value, rtol=1e-6, atol=1e-6, err_msg=f"{relative}:{key}"
                )
            else:
                np.testing.assert_array_equal(actual[key], value, err_msg=f"{relative}:{key}")
