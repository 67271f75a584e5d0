"""Fixtures of the report tests: a fabricated analysed run (see report_tables.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_tables import make_run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fabricated run with ground truth, its report already built."""
    from pathwatch.report import build_report

    run = make_run(tmp_path_factory.mktemp("report"))
    build_report(run)
    return run
