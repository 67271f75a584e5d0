"""PathwayMonitor in a plain training loop: its numbers, its warning, its care for the model."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from monitor_oracle import assert_records_match, make_probe, reference_records

from pathwatch.capture import capture
from pathwatch.errors import InputError
from pathwatch.monitor import (
    JSONLSink,
    MonitorWarning,
    PathwayMonitor,
    consecutive_rises,
    consecutive_stalls,
)
from tiny_models import WORDS, build_tiny_model, build_tiny_tokenizer

CHECKPOINTS = (6, 12, 18, 24)


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("olmoe", seed=0)


def _train_and_monitor(monitor: PathwayMonitor, probe: list[dict]) -> list:
    """A plain PyTorch loop that memorizes the probe; returns the capture of each checkpoint."""
    model = build_tiny_model("olmoe", seed=1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.tensor([s["input_ids"] for s in probe])
    captures = []
    for step in range(1, CHECKPOINTS[-1] + 1):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step in CHECKPOINTS:
            monitor.on_checkpoint(model, step)
            cap = capture(model, probe)
            # keep a snapshot: Capture.router_weights may share memory with the live parameters
            captures.append(replace(cap, router_weights=[w.copy() for w in cap.router_weights]))
    return captures


@pytest.mark.parametrize(
    ("domains", "epsilon", "unit"),
    [(True, None, "char"), (True, 1.0, "expert"), (False, None, "char"), (False, 0.5, "char")],
)
def test_plain_loop_records_equal_the_library_on_each_checkpoint(tmp_path, domains, epsilon, unit):
    probe = make_probe()
    if not domains:
        probe = [{k: v for k, v in s.items() if k != "domain"} for s in probe]
    monitor = PathwayMonitor(
        probe,
        sinks=[JSONLSink(tmp_path / "m.jsonl")],
        epsilon="auto" if epsilon is None else epsilon,
        unit=unit,
        delta=0.5,
    )
    captures = _train_and_monitor(monitor, probe)
    want = reference_records(
        captures, list(CHECKPOINTS), probe, unit=unit, delta=0.5, epsilon=epsilon
    )
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(CHECKPOINTS)
    scopes = {"all", "alpha", "beta"} if domains else {"all"}
    assert {key.split("/")[1] for key in want[0]} == scopes
    for record, row, expected in zip(monitor.history, rows, want, strict=True):
        extra = set(record) - set(expected) - {"step", "monitor/seconds"}
        assert extra == {f"{flag}/{scope}" for scope in scopes for flag in ("warning", "stalled")}
        assert_records_match(record, expected)
        assert {k: v for k, v in row.items() if v is not None} == {
            k: v for k, v in record.items() if not np.isnan(v)
        }
    assert max(r["memorized_fraction/all"] for r in monitor.history) > 0  # memorized branch ran
    np.testing.assert_array_equal(monitor.losses, np.stack([c.loss for c in captures], axis=1))


def test_churn_and_its_excess_over_a_control_domain_equal_the_library():
    probe = make_probe()
    monitor = PathwayMonitor(probe, delta=0.5, control_domains=("beta",))
    captures = _train_and_monitor(monitor, probe)
    want = reference_records(captures, list(CHECKPOINTS), probe, delta=0.5, controls=("beta",))
    for record, expected in zip(monitor.history, want, strict=True):
        assert {"churn_excess/all", "churn_excess/alpha", "churn/beta"} <= set(record)
        assert_records_match(record, expected)
    assert np.isnan(monitor.history[0]["churn/all"])  # no checkpoint before the first
    assert any(np.isfinite(r["churn/all"]) for r in monitor.history[1:])  # the churn branch ran
    assert all(
        r["churn_excess/beta"] in (0.0,) or np.isnan(r["churn_excess/beta"])
        for r in monitor.history
    )


@given(st.lists(st.floats(-1e6, 1e6) | st.just(float("nan")), max_size=12))
def test_consecutive_rises_counts_the_trailing_run_of_rises(values):
    expected = 0
    for t in range(len(values) - 1, 0, -1):
        if not values[t] > values[t - 1]:
            break
        expected += 1
    assert consecutive_rises(values) == expected


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=12, unique=True))
def test_a_sorted_series_rises_at_every_step_and_its_reverse_never(values):
    assert consecutive_rises(sorted(values)) == len(values) - 1
    assert consecutive_rises(sorted(values, reverse=True)) == 0


@given(
    st.lists(st.floats(-1e6, 1e6) | st.just(float("nan")), max_size=12),
    st.floats(0.0, 0.5),
)
def test_consecutive_stalls_counts_the_trailing_run_of_small_moves(values, tolerance):
    expected = 0
    for t in range(len(values) - 1, 0, -1):
        if not abs(values[t] - values[t - 1]) <= tolerance * abs(values[t - 1]):
            break
        expected += 1
    assert consecutive_stalls(values, tolerance) == expected


def _route_with_gate_scale(model, original: dict, scale: float) -> None:
    """Scale every router's weights: larger scales route more sharply, so pathways get shorter."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in original:
                param.copy_(original[name] * scale)


@pytest.mark.parametrize(
    ("stall_tolerance", "warned_at"),
    [(0.01, [4, 5]), (None, [])],  # memorized from checkpoint 2; unchanged at 3, 4, 5
)
def test_warns_when_memorized_distance_stalls(model, stall_tolerance, warned_at):
    monitor = PathwayMonitor(
        make_probe(), epsilon=100.0, delta=10.0, warn_after=2, stall_tolerance=stall_tolerance
    )
    warned = []
    for checkpoint in range(1, 6):  # the same weights at every checkpoint: nothing moves
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            record = monitor.on_checkpoint(model, 10 * checkpoint)
        if any("stalled" in str(w.message) for w in caught):
            warned.append(checkpoint)
        assert record["stalled/all"] == record["warning/all"] == float(checkpoint in warned)
    assert warned == warned_at


@pytest.mark.parametrize(
    ("scales", "warn_after", "warned_at"),
    [
        ((2.0, 1.0, 0.5, 0.2, 0.1), 3, [5]),  # memorized distance rises at checkpoints 3, 4, 5
        ((2.0, 1.0, 0.5, 0.2, 0.1), 1, [3, 4, 5]),
        ((0.1, 0.2, 0.5, 1.0, 2.0), 1, []),  # falling: never
    ],
)
def test_warns_when_memorized_distance_keeps_rising(model, scales, warn_after, warned_at):
    probe = make_probe()
    # every sample counts as memorized from the second checkpoint: ε and δ far above the losses
    monitor = PathwayMonitor(
        probe, epsilon=100.0, delta=10.0, warn_after=warn_after, stall_tolerance=None
    )
    original = {
        n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("gate.weight")
    }
    warned, flagged = [], []
    try:
        for checkpoint, scale in enumerate(scales, start=1):
            _route_with_gate_scale(model, original, scale)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                record = monitor.on_checkpoint(model, 10 * checkpoint)
            if any(issubclass(w.category, MonitorWarning) for w in caught):
                warned.append(checkpoint)
            if record["warning/all"] == 1.0:
                flagged.append(checkpoint)
    finally:
        _route_with_gate_scale(model, original, 1.0)
    distances = [r["distance_memorized/all"] for r in monitor.history]
    assert np.isnan(distances[0])
    rising = scales[0] > scales[-1]
    assert np.all(np.diff(distances[1:]) > 0) if rising else np.all(np.diff(distances[1:]) < 0)
    assert warned == flagged == warned_at
    assert {"warning/alpha", "warning/beta"} <= set(monitor.history[-1])


def test_capture_runs_in_eval_mode_and_every_module_mode_is_restored(model):
    model.train()
    model.lm_head.eval()  # a module the user froze in eval mode stays so
    before = {name: m.training for name, m in model.named_modules()}
    try:
        record = PathwayMonitor(make_probe(2)).on_checkpoint(model, 1)
        assert {name: m.training for name, m in model.named_modules()} == before
    finally:
        model.eval()
    # eval mode for the capture: the same numbers as a capture of the model in eval mode
    assert record["loss/all"] == pytest.approx(float(np.mean(capture(model, make_probe(2)).loss)))
    assert record["monitor/seconds"] > 0


def test_steps_must_increase_and_a_rejected_step_leaves_no_trace(model):
    monitor = PathwayMonitor(make_probe(2))
    monitor.on_checkpoint(model, 10)
    for bad in (10, 5):
        with pytest.raises(
            InputError, match=r"'step' parameter .* larger than the last monitored step 10"
        ):
            monitor.on_checkpoint(model, bad)
    with pytest.raises(InputError, match="'step' parameter"):
        monitor.on_checkpoint(model, 20.0)
    assert monitor.steps == [10]
    assert len(monitor.history) == 1
    assert monitor.losses.shape == (4, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"threshold": 1.5},
            r"'threshold' parameter of PathwayMonitor must be a float in \(0, 1\]",
        ),
        ({"threshold": True}, r"'threshold' parameter"),
        ({"unit": "chars"}, r"Unknown distance unit 'chars'\. Did you mean 'char'\?"),
        ({"delta": -0.1}, r"'delta' parameter .* a float >= 0"),
        ({"max_pairs": 0}, r"'max_pairs' parameter"),
        ({"warn_after": 0}, r"'warn_after' parameter .* an int >= 1"),
        ({"stall_tolerance": -0.1}, r"'stall_tolerance' parameter .* None or a float >= 0"),
        ({"epsilon": "fixed"}, r"'epsilon' parameter .* \"auto\""),
        ({"epsilon": -1.0}, r"'epsilon' parameter"),
        ({"epsilon": {"alpha": 0.5}}, r"no value for domain\(s\) \['beta'\]"),
        ({"samples": 3}, r"'samples' parameter of PathwayMonitor must be a list of samples or a"),
        ({"samples": "missing.jsonl"}, r"Samples file missing.jsonl does not exist"),
        ({"samples": []}, r"No samples given"),
        ({"samples": [{"text": ""}]}, r"samples\[0\]: field 'text' must be a non-empty string"),
    ],
)
def test_bad_options_are_rejected_up_front(kwargs, message):
    kwargs = {"samples": make_probe(2), **kwargs}
    with pytest.raises(InputError, match=message):
        PathwayMonitor(kwargs.pop("samples"), **kwargs)


def test_samples_file_gives_the_same_records_as_the_samples(tmp_path, model):
    probe = make_probe(3)
    path = tmp_path / "probe.jsonl"
    path.write_text("".join(json.dumps(sample) + "\n" for sample in probe))
    from_file, from_list = PathwayMonitor(path), PathwayMonitor(probe)
    for step in (1, 2):
        got, want = from_file.on_checkpoint(model, step), from_list.on_checkpoint(model, step)
        assert_records_match(got, {k: v for k, v in want.items() if k != "monitor/seconds"}, rel=0)
    assert {k.split("/")[1] for k in got} >= {"alpha", "beta"}


def test_text_samples_with_a_tokenizer_equal_their_token_ids(model):
    tokenizer = build_tiny_tokenizer()
    words = list(WORDS)
    texts = [" ".join(words[i : i + 6]) for i in range(0, 24, 3)]
    as_text = [{"text": t, "domain": "alpha" if i % 2 else "beta"} for i, t in enumerate(texts)]
    as_ids = [
        {"input_ids": tokenizer(t)["input_ids"], "domain": s["domain"]}
        for t, s in zip(texts, as_text, strict=True)
    ]
    got = PathwayMonitor(as_text, tokenizer=tokenizer).on_checkpoint(model, 1)
    want = PathwayMonitor(as_ids).on_checkpoint(model, 1)
    assert_records_match(got, {k: v for k, v in want.items() if k != "monitor/seconds"}, rel=0)
