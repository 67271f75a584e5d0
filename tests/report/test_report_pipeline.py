"""The report on a real run: testbed checkpoints → capture → analyze (with ground truth) → report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_report_build import parse

import pathwatch as pw
from pathwatch.report.summary import load_tables, summarize
from pathwatch.testbed.train import TestbedConfig, train_testbed


@pytest.mark.slow
def test_report_of_a_real_analysed_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    testbed = train_testbed(tmp_path / "testbed", config=TestbedConfig.tiny(), progress=False)
    run = tmp_path / "run"
    pw.capture_run(
        testbed.checkpoints, testbed.train_samples, run, steps=list(testbed.steps), progress=False
    )
    pw.analyze_run(run, accuracy=testbed.accuracy_file, progress=False)

    page = parse(pw.build_report(run))  # the pipeline's entry point
    tables = load_tables(run)
    assert tables.accuracy is not None and tables.correlations is not None
    shown = {(a["data-domain"], a["data-figure"]) for a in page.find("div", **{"class": "figure"})}
    for domain in tables.domains:
        assert {
            (domain, "memorization"),
            (domain, "group_distance"),
            (domain, "consistency"),
        } <= shown
    if tables.matches is not None:
        assert {(d, "pairs") for d in tables.matches["domain"].unique().to_list()} <= shown
    assert len(list((run / "figures").glob("*.png"))) == len(shown)
    assert [f.text for f in summarize(tables)] == page.summary
