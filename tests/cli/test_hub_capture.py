"""Hub checkpoints (REPO@REVISION, --revisions GLOB) and load options (--dtype, --device,
--device-map) of `pathwatch capture`, offline against a hub cache laid out on disk."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from capture_fixtures import Checkpoints
from test_capture_cli import capture_args, run_cli

from pathwatch import _hf
from pathwatch.capture.run import capture_run
from pathwatch.checkpoints import resolve_checkpoints
from pathwatch.config import CaptureConfig
from pathwatch.errors import InputError
from pathwatch.store import RunStore


def test_revisions_glob_expands_the_cached_revisions_with_their_steps(offline_hub):
    _, repo, commits = offline_hub
    got = resolve_checkpoints([repo], revisions="step*")
    assert [(c.revision, c.step, c.commit) for c in got] == [
        ("step100-tokens1B", 100, commits["step100-tokens1B"]),
        ("step200-tokens2B", 200, commits["step200-tokens2B"]),
        ("step300-tokens3B", 300, commits["step300-tokens3B"]),
    ]
    assert all((c.path / "config.json").is_file() and c.path.name == c.commit for c in got)
    one = resolve_checkpoints([f"{repo}@step200-tokens2B"])
    assert one == [got[1]]


def test_capture_from_hub_revisions_equals_capture_of_the_directories(
    offline_hub, checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
):
    _, repo, commits = offline_hub
    hub = tmp_path / "hub-run"
    args = capture_args([repo], checkpoints.samples, hub, "--revisions", "step*")
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert "in float32" in out
    local = tmp_path / "local-run"
    code, _, err = run_cli(
        capture_args(checkpoints.series, checkpoints.samples, local), monkeypatch, capsys
    )
    assert code == 0, err
    manifest = json.loads((hub / "manifest.json").read_text())
    assert manifest["settings"]["dtype"] == "float32"
    assert [(c["repo"], c["revision"], c["commit"]) for c in manifest["checkpoints"]] == [
        (repo, r, commits[r]) for r in ("step100-tokens1B", "step200-tokens2B", "step300-tokens3B")
    ]
    assert manifest["checkpoints"][0]["name"] == f"{repo}@step100-tokens1B"
    a, b = RunStore(hub), RunStore(local)
    for step in (100, 200, 300):
        np.testing.assert_array_equal(a.load_checkpoint(step).loss, b.load_checkpoint(step).loss)
        np.testing.assert_array_equal(
            a.load_checkpoint(step).mean_weights, b.load_checkpoint(step).mean_weights
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--checkpoint", "tiny-org/tiny-olmoe@step999-tokens9B"],
            r"Hub checkpoint tiny-org/tiny-olmoe@step999-tokens9B: no such revision in the hub "
            r"cache \(offline\); known revisions: main, step100-tokens1B",
        ),
        (
            ["--checkpoint", "tiny-org/tiny-olmoe", "--revisions", "iter*"],
            r"--revisions 'iter\*' matches no revision of tiny-org/tiny-olmoe in the hub cache",
        ),
        (
            ["--checkpoint", "tiny-org/tiny-olmoe@main"],
            r"Cannot read a training step from hub revision 'main' of tiny-org/tiny-olmoe",
        ),
        (
            ["--checkpoint", "tiny-org/not-cached"],
            r"Checkpoint directory .*not-cached does not exist .* or a hub checkpoint REPO@REVISION",
        ),
        (
            ["--checkpoint", "tiny-org/tiny-olmoe@step100-tokens1B", "--device", "cuda:7"],
            r"device 'cuda:7' is not on this machine",
        ),
        (
            ["--checkpoint", "tiny-org/tiny-olmoe@step100-tokens1B", "--dtype", "float8"],
            r"Unknown dtype 'float8'. Did you mean 'float32'\? Valid: auto, bfloat16, float16, float32",
        ),
        (
            ["--checkpoint", "tiny-org/tiny-olmoe@step100-tokens1B", "--device", "tpu"],
            r"The 'device' parameter of capture_run must be None, 'cpu', 'cuda' or 'cuda:N'",
        ),
    ],
    ids=[
        "unknown-revision",
        "pattern-matches-nothing",
        "no-step",
        "repo-not-cached",
        "no-such-gpu",
        "bad-dtype",
        "bad-device",
    ],
)
def test_bad_hub_input_is_one_line_before_any_work(
    offline_hub, checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys, extra, message
):
    out = tmp_path / "run"
    args = [*capture_args([], checkpoints.samples, out), *extra]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 2
    line = err.splitlines()[0]
    assert re.search(message, line), line
    assert not out.exists()


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_device_map_auto_without_a_gpu_is_refused(checkpoints: Checkpoints, tmp_path: Path):
    with pytest.raises(InputError, match=r"device_map 'auto' spreads a model over GPUs"):
        capture_run(
            checkpoints.series[:1],
            checkpoints.samples,
            tmp_path / "run",
            config=CaptureConfig(device_map="auto"),
            progress=False,
        )
    assert not (tmp_path / "run").exists()


def test_a_dtype_the_device_cannot_run_is_one_line_before_any_work(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch
):
    real = _hf._runs
    monkeypatch.setattr(
        _hf, "_runs", lambda dtype, device: dtype != "bfloat16" and real(dtype, device)
    )
    with pytest.raises(InputError, match=r"device 'cpu' cannot run dtype 'bfloat16'"):
        capture_run(
            checkpoints.series[:1],
            checkpoints.samples,
            tmp_path / "run",
            config=CaptureConfig(dtype="bfloat16", device="cpu"),
            progress=False,
        )
    assert not (tmp_path / "run").exists()
    assert real("float32", "cpu") and real("bfloat16", "cpu")  # the real check runs both


def _bf16_vs_fp32(checkpoints: Checkpoints, tmp_path: Path, device: str) -> tuple[float, float]:
    """Largest routing and relative loss differences of a bfloat16 capture to a float32 one."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        runs[dtype] = capture_run(
            checkpoints.series[:1],
            checkpoints.samples,
            tmp_path / dtype,
            config=CaptureConfig(dtype=dtype, device=device if dtype == "bfloat16" else "cpu"),
            progress=False,
        )
    assert runs["bfloat16"].manifest.settings.dtype == "bfloat16"
    a, b = (runs[d].load_checkpoint(100) for d in ("float32", "bfloat16"))
    assert b.mean_weights.dtype == np.float32 and b.loss.dtype == np.float32
    routing = float(np.abs(a.mean_weights - b.mean_weights).max())
    loss = float(np.abs(a.loss - b.loss).max() / np.abs(a.loss).max())
    return routing, loss


#: stated tolerance of a bfloat16 capture to float32 (tiny OLMoE; docs/scaling.md)
BF16_ROUTING_ATOL, BF16_LOSS_RTOL = 0.02, 0.01


def test_bfloat16_capture_on_cpu_is_within_tolerance_of_float32(checkpoints, tmp_path):
    routing, loss = _bf16_vs_fp32(checkpoints, tmp_path, "cpu")
    assert 0 < routing < BF16_ROUTING_ATOL  # differs (ran in bf16), but only by rounding
    assert loss < BF16_LOSS_RTOL


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bfloat16_capture_on_cuda_is_within_tolerance_of_float32(checkpoints, tmp_path):
    routing, loss = _bf16_vs_fp32(checkpoints, tmp_path, "cuda")
    assert routing < BF16_ROUTING_ATOL and loss < BF16_LOSS_RTOL


def test_trust_remote_code_stays_off_unless_given(checkpoints: Checkpoints, tmp_path: Path):
    custom = tmp_path / "custom-step-1"
    custom.mkdir()
    config = json.loads((checkpoints.series[0] / "config.json").read_text())
    config |= {"model_type": "pw_custom", "auto_map": {"AutoConfig": "configuration_x.XConfig"}}
    (custom / "config.json").write_text(json.dumps(config))
    (custom / "configuration_x.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(InputError, match=r"cannot read its config.json.*trust_remote_code") as info:
        capture_run([custom], checkpoints.samples, tmp_path / "run", progress=False)
    assert "\n" not in str(info.value)


def test_pw_capture_and_the_monitor_load_a_hub_checkpoint_in_the_dtype_asked(
    offline_hub, checkpoints: Checkpoints
):
    import pathwatch as pw
    from pathwatch.capture import load_model

    repo = offline_hub[1]
    texts = [row["text"] for row in map(json.loads, checkpoints.samples.read_text().splitlines())]
    model, tokenizer = load_model(checkpoints.series[0], dtype="float32", device="cpu")
    reference = pw.capture(model, texts, tokenizer)
    got = pw.capture(f"{repo}@step100-tokens1B", texts, dtype="bfloat16", device="cpu")
    assert got.mean_weights.dtype == np.float32
    assert 0 < np.abs(got.mean_weights - reference.mean_weights).max() < BF16_ROUTING_ATOL
    assert np.abs(got.loss - reference.loss).max() < BF16_LOSS_RTOL * reference.loss.max()
    monitor = pw.PathwayMonitor(texts, dtype="bfloat16", device="cpu")
    record = monitor.on_checkpoint(f"{repo}@step100-tokens1B", step=100)
    assert record["loss/all"] == pytest.approx(float(got.loss.mean()), rel=1e-6)
    with pytest.raises(InputError, match=r"'dtype' parameter of capture .*model in memory"):
        pw.capture(model, texts, tokenizer, dtype="bfloat16")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"checkpoints": ["tiny-org/tiny-olmoe@step7-tokens0B"]}, r"no such revision in the hub"),
        ({"checkpoints": ["tiny-org/tiny-olmoe"], "revisions": "final*"}, r"matches no revision"),
        ({"device": "cuda:7"}, r"device 'cuda:7' is not on this machine"),
        ({"dtype": "bf16"}, r"Unknown dtype 'bf16'"),
        ({"lm_eval_missing": True}, r'pip install "pathwatch\[lmeval\]"'),
    ],
    ids=["unknown-revision", "pattern-matches-nothing", "no-such-gpu", "bad-dtype", "no-lm-eval"],
)
def test_evaluate_of_hub_revisions_refuses_bad_input_before_any_work(
    offline_hub, tmp_path: Path, monkeypatch, change, message
):
    from pathwatch.evaluation.harness import evaluate_checkpoints

    if change.pop("lm_eval_missing", False):
        monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    call = {"checkpoints": ["tiny-org/tiny-olmoe"], "revisions": "step*", "progress": False}
    call |= change
    with pytest.raises(InputError, match=message) as info:
        evaluate_checkpoints(call.pop("checkpoints"), ["arc_easy"], tmp_path / "evals", **call)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "evals").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None,
    reason='needs lm-eval: pip install "pathwatch[lmeval]"',
)
def test_evaluate_of_hub_revisions_refuses_an_unknown_task_before_any_model(
    offline_hub, tmp_path: Path
):
    from pathwatch.evaluation.harness import evaluate_checkpoints

    with pytest.raises(
        InputError, match=r"lm-eval knows no task 'arc_eazy'.*Did you mean 'arc_easy'"
    ):
        evaluate_checkpoints(
            ["tiny-org/tiny-olmoe"],
            ["arc_eazy"],
            tmp_path / "evals",
            revisions="step*",
            progress=False,
        )
    assert not (tmp_path / "evals").exists()
