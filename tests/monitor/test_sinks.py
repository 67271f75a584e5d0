"""The monitor's sinks write what they are given, readably, and name the extra they miss."""

from __future__ import annotations

import json
import math
import sys

import pytest

from pathwatch.errors import InputError
from pathwatch.monitor.sinks import JSONLSink, Sink, TensorBoardSink, WandbSink

RECORDS = [
    (10, {"distance/all": 4.25, "loss/all": 2.0, "distance_memorized/all": math.nan}),
    (20, {"distance/all": 3.5, "loss/all": 1.25, "distance_memorized/all": 7.0}),
]


def test_jsonl_sink_writes_one_strict_json_line_per_checkpoint(tmp_path):
    path = tmp_path / "sub" / "monitor.jsonl"
    sink = JSONLSink(path)
    for step, record in RECORDS:
        sink.log(record, step)
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    rows = [json.loads(line, parse_constant=pytest.fail) for line in lines]  # no NaN tokens
    assert rows[0] == {
        "step": 10,
        "distance/all": 4.25,
        "loss/all": 2.0,
        "distance_memorized/all": None,
    }
    assert rows[1] == {"step": 20, **RECORDS[1][1]}


def test_jsonl_sink_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "monitor.jsonl"
    for step, record in RECORDS:
        sink = JSONLSink(path)
        sink.log(record, step)
        sink.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [10, 20]


def test_sinks_satisfy_the_protocol(tmp_path):
    assert isinstance(JSONLSink(tmp_path / "m.jsonl"), Sink)


def test_tensorboard_sink_writes_scalars_read_back_by_tensorboard(tmp_path):
    pytest.importorskip(
        "tensorboard", reason='needs the extra: pip install "pathwatch[tensorboard]"'
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = TensorBoardSink(tmp_path)
    for step, record in RECORDS:
        sink.log(record, step)
    sink.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == sorted(RECORDS[0][1])
    for key in RECORDS[0][1]:
        got = [(e.step, e.value) for e in events.Scalars(key)]
        want = [(step, record[key]) for step, record in RECORDS]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], nan_ok=True)


def test_wandb_sink_logs_against_its_own_step_axis(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason='needs the extra: pip install "pathwatch[wandb]"')
    monkeypatch.setenv("WANDB_SILENT", "true")
    sink = WandbSink(project="pathwatch-test", dir=tmp_path)
    for step, record in RECORDS:
        sink.log(record, step)
    summary = dict(sink.run.summary)
    sink.close()
    assert summary["pathwatch/step"] == 20
    assert summary["pathwatch/distance/all"] == 3.5
    assert summary["pathwatch/distance_memorized/all"] == 7.0
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))


def test_wandb_sink_rejects_an_unknown_mode():
    with pytest.raises(InputError, match="'mode' parameter of WandbSink"):
        WandbSink(mode="cloud")


@pytest.mark.parametrize(
    ("sink", "modules", "extra"),
    [
        (TensorBoardSink, ["tensorboard", "torch.utils.tensorboard"], "tensorboard"),
        (WandbSink, ["wandb"], "wandb"),
    ],
)
def test_missing_extra_names_the_pip_command(tmp_path, monkeypatch, sink, modules, extra):
    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in modules):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, modules[0], None)  # makes `import <extra>` fail
    with pytest.raises(ImportError, match=rf'pip install "pathwatch\[{extra}\]"'):
        sink(dir=tmp_path) if sink is WandbSink else sink(tmp_path)
