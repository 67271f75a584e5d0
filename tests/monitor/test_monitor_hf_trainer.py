"""A real transformers.Trainer run with PathwayCallback logs what the library computes on its checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from monitor_oracle import assert_records_match, make_probe, reference_records
from transformers import OlmoeForCausalLM, Trainer, TrainingArguments

from pathwatch.analysis import AnalyzeConfig, analyze_run
from pathwatch.capture import capture
from pathwatch.capture.run import capture_run
from pathwatch.config import CaptureConfig
from pathwatch.errors import InputError
from pathwatch.monitor import JSONLSink, PathwayCallback, PathwayMonitor, TensorBoardSink
from pathwatch.monitor.hf_trainer import STATE_FILE
from tiny_models import build_tiny_model

pytest.importorskip(
    "accelerate", reason="transformers.Trainer needs accelerate: pip install 'pathwatch[trainer]'"
)

SAVE_STEPS, MAX_STEPS, DELTA = 10, 40, 0.5


def _train(
    tmp_path: Path,
    probe: list[dict],
    sinks: list,
    *,
    on_evaluate: bool = False,
    resume: str | None = None,
    **overrides,
) -> PathwayMonitor:
    """Train a tiny OLMoE on the probe samples (so that it memorizes them) with the callback."""
    monitor = PathwayMonitor(probe, sinks=sinks, delta=DELTA, batch_size=8)
    data = [{"input_ids": s["input_ids"], "labels": s["input_ids"]} for s in probe]
    settings = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=MAX_STEPS,
        save_steps=SAVE_STEPS,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        save_only_model=True,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    args = TrainingArguments(**{**settings, **overrides})
    model = build_tiny_model("olmoe", seed=0).train()
    callback = PathwayCallback(monitor, on_evaluate=on_evaluate)
    eval_data = data if args.eval_strategy != "no" else None
    Trainer(
        model=model, args=args, train_dataset=data, eval_dataset=eval_data, callbacks=[callback]
    ).train(resume_from_checkpoint=resume)
    return monitor


def test_trainer_callback_logs_the_metrics_of_each_saved_checkpoint(tmp_path):
    pytest.importorskip(
        "tensorboard", reason='needs the extra: pip install "pathwatch[tensorboard]"'
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    probe = make_probe()
    monitor = _train(
        tmp_path, probe, [JSONLSink(tmp_path / "monitor.jsonl"), TensorBoardSink(tmp_path / "tb")]
    )
    steps = list(range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS))

    rows = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == steps == monitor.steps

    # the oracle: load every saved checkpoint and call capture + the metrics directly
    captures = []
    for step in steps:
        model = OlmoeForCausalLM.from_pretrained(
            tmp_path / "out" / f"checkpoint-{step}", dtype=torch.float32
        )
        captures.append(capture(model, probe, batch_size=8))
    want = reference_records(captures, steps, probe, delta=DELTA)
    for row, expected in zip(rows, want, strict=True):
        got = {key: float("nan") if value is None else value for key, value in row.items()}
        assert_records_match(got, expected)
        assert row["monitor/seconds"] > 0
    assert max(row["memorized_fraction/all"] for row in rows) > 0  # the memorized branch ran

    # the offline path sees the same numbers: capture_run over the saved checkpoints
    samples = tmp_path / "probe.jsonl"
    samples.write_text("".join(json.dumps(sample) + "\n" for sample in probe))
    checkpoints = [tmp_path / "out" / f"checkpoint-{step}" for step in steps]
    run = capture_run(
        checkpoints, samples, tmp_path / "run", config=CaptureConfig(batch_size=8), progress=False
    )
    offline = np.stack([run.load_checkpoint(step).loss for step in steps], axis=1)
    np.testing.assert_allclose(monitor.losses, offline, rtol=1e-6)

    # ... and `pathwatch analyze` on that run reports the monitor's numbers
    tables = analyze_run(run.path, config=AnalyzeConfig(delta=DELTA), progress=False).tables
    whole = tables["group_metrics"].filter((pl.col("group") == "all") & (pl.col("layer") == -1))
    assert whole.select("step", "domain").sort("step", "domain").rows() == [
        (step, domain) for step in steps for domain in ("all", "alpha", "beta")
    ]
    for row in rows:
        for offline_row in whole.filter(pl.col("step") == row["step"]).iter_rows(named=True):
            for metric in ("distance", "loss", "consistency", "smoothness", "adjacent_cosine"):
                got = row[f"{metric}/{offline_row['domain']}"]
                assert got == pytest.approx(offline_row[metric], rel=1e-6, nan_ok=True), metric
            assert row[f"consistency_nan/{offline_row['domain']}"] == offline_row["consistency_nan"]
    # at the last checkpoint the online memorization rule is the offline one (same ε, same fraction)
    for epsilon_row in tables["epsilon"].iter_rows(named=True):
        domain = epsilon_row["domain"]
        assert rows[-1][f"epsilon/{domain}"] == pytest.approx(epsilon_row["epsilon"])
        assert rows[-1][f"memorized_fraction/{domain}"] == epsilon_row["memorized_fraction"]

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(rows[0]) - {"step"}
    for key in want[0]:
        scalars = events.Scalars(key)
        assert [e.step for e in scalars] == steps
        assert [e.value for e in scalars] == pytest.approx(  # TensorBoard stores float32
            [row[key] if row[key] is not None else float("nan") for row in rows],
            rel=1e-6,
            nan_ok=True,
        ), key


def test_trainer_callback_runs_at_evaluations_on_request_once_per_step(tmp_path):
    # evaluations every 5 steps, saves every 10: steps 10 and 20 see both events
    monitor = _train(
        tmp_path,
        make_probe(2),
        [JSONLSink(tmp_path / "m.jsonl")],
        on_evaluate=True,
        max_steps=20,
        eval_strategy="steps",
        eval_steps=5,
    )
    assert monitor.steps == [5, 10, 15, 20]
    rows = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [json.loads(row)["step"] for row in rows] == [5, 10, 15, 20]


def test_a_resumed_run_restores_the_monitor_history_from_the_checkpoint(tmp_path):
    probe = make_probe()
    first = _train(tmp_path, probe, [], max_steps=20)
    checkpoint = tmp_path / "out" / "checkpoint-20"
    assert json.loads((checkpoint / STATE_FILE).read_text())["steps"] == [10, 20]

    resumed = _train(tmp_path, probe, [], max_steps=30, resume=str(checkpoint))
    assert resumed.steps == [10, 20, 30]
    np.testing.assert_array_equal(resumed.losses[:, :2], first.losses)
    for restored, original in zip(resumed.history[:2], first.history, strict=True):
        assert_records_match(restored, original, rel=0)
    # step 30 judged memorization on all three checkpoints, exactly as the offline rule does
    captures = []
    for step in (10, 20, 30):
        model = OlmoeForCausalLM.from_pretrained(
            tmp_path / "out" / f"checkpoint-{step}", dtype=torch.float32
        )
        captures.append(capture(model, probe, batch_size=8))
    want = reference_records(captures, [10, 20, 30], probe, delta=DELTA)
    # the routing of the checkpoint before is not saved: the first churn after a resume is NaN
    churn = {k for k in want[-1] if k.startswith("churn")}
    assert churn and all(np.isnan(resumed.history[-1][k]) for k in churn)
    assert_records_match(resumed.history[-1], {k: v for k, v in want[-1].items() if k not in churn})


def test_a_state_from_another_probe_set_is_rejected():
    saved = PathwayMonitor(make_probe(2)).state_dict()
    with pytest.raises(InputError, match="belongs to another probe set"):
        PathwayMonitor(make_probe(3)).load_state_dict(saved)
