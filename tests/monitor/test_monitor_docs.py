"""The examples of docs/monitor.md run as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "monitor.md"


def test_every_python_block_of_the_monitor_doc_runs(tmp_path, monkeypatch):
    pytest.importorskip(
        "tensorboard", reason='needs the extra: pip install "pathwatch[tensorboard]"'
    )
    pytest.importorskip(
        "accelerate",
        reason="the Trainer example needs accelerate: pip install 'pathwatch[trainer]'",
    )
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    rows = [json.loads(line) for line in Path("runs/monitor.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [15, 30, 45, 60]
    assert {"distance/math", "distance/code", "memorized_fraction/all"} <= set(rows[-1])
    assert rows[-1]["loss/all"] < rows[0]["loss/all"]
    assert namespace["monitor"].steps == [10, 20]  # the Trainer block's monitor
    assert list(Path("runs/trainer/pathwatch").glob("events.out.tfevents.*"))
