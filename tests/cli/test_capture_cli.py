"""`pathwatch capture` end to end on tiny saved checkpoints: resume, integrity, and every bad input."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from capture_fixtures import Checkpoints, write_jsonl

from pathwatch.cli import main
from pathwatch.errors import InputError
from pathwatch.store import RunStore, _io

FAST = ["--batch-size", "4", "--max-length", "32", "--no-progress"]


def run_cli(args: list, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple:
    """Run the real ``pathwatch`` entry point in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["pathwatch", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def capture_args(checkpoints: list[Path], samples: Path, out: Path, *extra: str) -> list:
    args = ["capture", "--samples", samples, "--out", out, *FAST, *extra]
    for path in checkpoints:
        args += ["--checkpoint", path]
    return args


def unit_files(run: Path) -> dict[Path, tuple[int, int]]:
    """Unit path -> (inode, mtime_ns): a rewritten unit gets a new inode through the rename."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(run.glob("units/*/*"))}


def stored(run: Path) -> dict[str, tuple[dict, dict]]:
    """Every safetensors file of a run: relative path -> (metadata, tensors)."""
    from safetensors import safe_open

    files = {}
    for path in sorted(run.rglob("*.safetensors")):
        with safe_open(path, "np") as handle:
            files[str(path.relative_to(run))] = (
                handle.metadata(),
                {name: handle.get_tensor(name) for name in handle.keys()},  # noqa: SIM118
            )
    return files


def assert_same_tensors(a: dict, b: dict) -> None:
    """Same files, metadata (checksums included) and tensors, bit for bit and dtype for dtype.

    Raw bytes may differ: safetensors orders header keys arbitrarily.
    """
    assert a.keys() == b.keys()
    for rel, (meta, tensors) in a.items():
        assert meta == b[rel][0], rel
        assert tensors.keys() == b[rel][1].keys(), rel
        for name, array in tensors.items():
            other = b[rel][1][name]
            assert array.dtype == other.dtype and array.tobytes() == other.tobytes(), (rel, name)


def test_capture_writes_a_complete_run(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        capture_args(checkpoints.series, checkpoints.samples, out, "--shard-size", "5"),
        monkeypatch,
        capsys,
    )
    assert code == 0
    assert "3 checkpoint(s) (steps 100..300) x 24 samples of a olmoe model" in stdout
    assert "; 0 sample(s) truncated" in stdout
    store = RunStore(out)
    assert store.steps == (100, 200, 300) and store.n_shards == 5 and store.missing_units() == []
    data = store.load_checkpoint(200)
    assert data.mean_weights.shape == (24, 4, 8)
    np.testing.assert_allclose(data.mean_weights.sum(-1), 1, atol=1e-5)
    assert np.isfinite(data.loss).all() and (data.n_tokens > 1).all()
    assert store.samples()["id"].to_list()[:3] == ["t0", "m1", "t2"]
    assert [w.shape for w in store.router_weights(300)] == [(8, 64)] * 4
    # the checkpoints differ, so do their captures
    assert not np.array_equal(store.load_checkpoint(100).loss, data.loss)


def test_steps_option_overrides_directory_names(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"
    args = capture_args([checkpoints.unnumbered, checkpoints.series[0]], checkpoints.samples, out)
    code, _, _ = run_cli([*args, "--steps", "900,5"], monkeypatch, capsys)
    assert code == 0
    manifest = RunStore(out).manifest
    assert [(c.step, c.name) for c in manifest.checkpoints] == [(5, "step-100"), (900, "final")]


def test_capture_killed_while_writing_its_manifest_starts_over(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".manifest.json.k1ll3d.tmp").write_text('{"format_')
    (out / _io.LOCK_NAME).touch()  # its lock file (the lock itself died with the process)
    args = capture_args(checkpoints.series[:1], checkpoints.samples, out)
    assert run_cli(args, monkeypatch, capsys)[0] == 0
    assert RunStore(out).missing_units() == [] and list(out.rglob("*.tmp")) == []
    (out / "manifest.json").unlink()
    code, _, stderr = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "is a non-empty directory without a manifest.json" in stderr


def test_second_writer_is_refused_while_the_first_holds_the_run(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"
    args = capture_args(checkpoints.series[:1], checkpoints.samples, out)
    out.mkdir()
    with _io.exclusive_lock(out):  # what a running capture holds
        code, _, stderr = run_cli(args, monkeypatch, capsys)
    assert code == 1 and "another pathwatch process is writing this run" in stderr
    assert not (out / "manifest.json").exists()
    assert run_cli(args, monkeypatch, capsys)[0] == 0  # released with its holder


def test_rerun_skips_finished_units_and_redoes_damaged_ones(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"
    args = capture_args(checkpoints.series, checkpoints.samples, out, "--shard-size", "8")
    assert run_cli(args, monkeypatch, capsys)[0] == 0
    original = stored(out)
    before = unit_files(out)
    assert len(before) == 9

    assert run_cli(args, monkeypatch, capsys)[0] == 0
    assert unit_files(out) == before  # nothing rewritten

    truncated, flipped = sorted(before)[1], sorted(before)[7]
    truncated.write_bytes(truncated.read_bytes()[:-10])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    router = out / "routers" / "step-00000200.safetensors"
    router.unlink()
    assert RunStore(out).missing_units() == [(100, 1), (300, 1)]

    assert run_cli(args, monkeypatch, capsys)[0] == 0
    after = unit_files(out)
    assert {p for p in before if after[p] != before[p]} == {truncated, flipped}
    assert_same_tensors(stored(out), original)


def test_killed_capture_resumes_bit_identical(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    rows = [{"id": i, "text": f"{i % 50} + {i % 7} = {i % 50 + i % 7}"} for i in range(48)]
    samples = write_jsonl(tmp_path / "samples.jsonl", rows)
    args = capture_args(checkpoints.series, samples, tmp_path / "killed", "--shard-size", "4")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = "import sys; from pathwatch.cli import main; sys.argv[0] = 'pathwatch'; main()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "killed").glob("units/*/shard-*.safetensors")):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    missing = RunStore(tmp_path / "killed").missing_units()
    assert 0 < len(missing) < 3 * 12, "the kill must land in the middle of the capture"

    assert run_cli(args, monkeypatch, capsys)[0] == 0
    reference = capture_args(
        checkpoints.series, samples, tmp_path / "reference", "--shard-size", "4"
    )
    assert run_cli(reference, monkeypatch, capsys)[0] == 0
    assert RunStore(tmp_path / "killed").manifest == RunStore(tmp_path / "reference").manifest
    assert (tmp_path / "killed" / "samples.parquet").read_bytes() == (
        tmp_path / "reference" / "samples.parquet"
    ).read_bytes()
    assert_same_tensors(stored(tmp_path / "killed"), stored(tmp_path / "reference"))
    assert list((tmp_path / "killed").rglob("*.tmp")) == []


# ---- SPEC §7: one row per bad input. Each builds its arguments from the shared checkpoints and
# tmp_path, and says the exit code and the message the user sees.
BadCase = Callable[[Checkpoints, Path], list]


def _samples_with(lines: list) -> Callable[[Checkpoints, Path], list]:
    def build(ck: Checkpoints, tmp: Path) -> list:
        return capture_args(ck.series[:1], write_jsonl(tmp / "samples.jsonl", lines), tmp / "run")

    return build


BAD_INPUTS: dict[str, tuple[BadCase, int, str]] = {
    "missing checkpoint dir": (
        lambda ck, tmp: capture_args([ck.series[0], tmp / "step-7"], ck.samples, tmp / "run"),
        2,
        r"Checkpoint directory .*step-7 does not exist or is not a directory",
    ),
    "non-MoE model": (
        lambda ck, tmp: capture_args([ck.dense], ck.samples, tmp / "run"),
        2,
        r"Checkpoint .*llama-step-100: LlamaForCausalLM has no MoE router .* Supported: olmoe",
    ),
    "malformed JSONL line": (
        _samples_with([{"text": "1 + 1 = 2"}, {"text": "2 + 2 = 4"}, '{"text": "3 + 3 = 6"']),
        2,
        r"samples\.jsonl:3: malformed JSON",
    ),
    "empty sample": (
        _samples_with([{"text": "1 + 1 = 2"}, {"text": ""}]),
        2,
        r"samples\.jsonl:2: field 'text' must be a non-empty string",
    ),
    "duplicate ids": (
        _samples_with(
            [{"id": "a", "text": "1 1"}, {"id": "b", "text": "2 2"}, {"id": "a", "text": "3 3"}]
        ),
        2,
        r"samples\.jsonl:3: id 'a' is already used by .*samples\.jsonl:1",
    ),
    "missing samples file": (
        lambda ck, tmp: capture_args(ck.series, tmp / "nope.jsonl", tmp / "run"),
        2,
        r"Samples file .*nope\.jsonl does not exist",
    ),
    "different architectures": (
        lambda ck, tmp: capture_args(
            [ck.series[0], ck.other_architecture], ck.samples, tmp / "run"
        ),
        2,
        r"step-100 and .*four-experts-step-400 differ in experts \(8 vs 4\)",
    ),
    "different tokenizers": (
        lambda ck, tmp: capture_args([ck.series[0], ck.other_tokenizer], ck.samples, tmp / "run"),
        2,
        r"step-100 and .*retokenized-step-400 have different tokenizers",
    ),
    "unparseable step name": (
        lambda ck, tmp: capture_args([ck.series[0], ck.unnumbered], ck.samples, tmp / "run"),
        2,
        r"Cannot read a training step from checkpoint directory name 'final' .* pass --steps",
    ),
    "name ending in a date, not a step": (
        lambda ck, tmp: capture_args(
            [_copied(ck.unnumbered, tmp / "OLMoE-1B-7B-0924")], ck.samples, tmp / "run"
        ),
        2,
        r"Cannot read a training step from checkpoint directory name 'OLMoE-1B-7B-0924' .* pass --steps",
    ),
    "hub snapshot hash, not a step": (
        lambda ck, tmp: capture_args(
            [_copied(ck.unnumbered, tmp / "snapshots" / "0a1b2c3d4e5f901234567")],
            ck.samples,
            tmp / "run",
        ),
        2,
        r"Cannot read a training step from checkpoint directory name '0a1b2c3d4e5f901234567'",
    ),
    "steps not one per checkpoint": (
        lambda ck, tmp: [*capture_args(ck.series, ck.samples, tmp / "run"), "--steps", "1,2"],
        2,
        r"The 'steps' parameter of capture_run must be 3 non-negative ints, one per checkpoint",
    ),
    "steps not numbers": (
        lambda ck, tmp: [*capture_args(ck.series, ck.samples, tmp / "run"), "--steps", "1,2,x"],
        2,
        r"--steps must be comma-separated non-negative integers",
    ),
    "text samples, checkpoint without tokenizer": (
        lambda ck, tmp: capture_args([ck.untokenized], ck.samples, tmp / "run"),
        2,
        r"Checkpoint .*step-500: cannot load its tokenizer .* give the samples as 'input_ids'",
    ),
    "NaN weights": (
        lambda ck, tmp: capture_args([ck.diverged], ck.samples, tmp / "run", "--shard-size", "10"),
        2,
        r"Checkpoint .*diverged-step-600 \(step 600\), samples 0\.\.9: capture: 10 samples got a "
        r"non-finite loss",
    ),
    "out is a file": (
        lambda ck, tmp: capture_args(ck.series, ck.samples, ck.samples),
        2,
        r"--out .*samples\.jsonl is a file",
    ),
}


def _copied(checkpoint: Path, dest: Path) -> Path:
    """A copy of ``checkpoint`` under another directory name."""
    shutil.copytree(checkpoint, dest)
    return dest


# found only while capturing, after the manifest was written (it then lists every unit as missing)
CAUGHT_WHILE_CAPTURING = {"NaN weights"}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_writes_nothing(
    case: str, checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    build, expected_code, message = BAD_INPUTS[case]
    code, stdout, stderr = run_cli(build(checkpoints, tmp_path), monkeypatch, capsys)
    assert code == expected_code
    error, hint = stderr.splitlines()  # one line of error, one line of hint, no traceback
    assert error.startswith("pathwatch: error: ")
    assert __import__("re").search(message, error), error
    assert "PATHWATCH_DEBUG=1" in hint and stdout == ""
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(_io.TEMP_SUFFIX)] == []
    run = tmp_path / "run"
    if case in CAUGHT_WHILE_CAPTURING:
        assert list(run.glob("units/*/*")) == []
        assert len(RunStore(run).missing_units()) == RunStore(run).n_shards
    else:
        assert not run.exists()


def test_rerun_with_other_inputs_is_refused_and_leaves_the_run_intact(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"
    assert (
        run_cli(
            capture_args(checkpoints.series[:2], checkpoints.samples, out), monkeypatch, capsys
        )[0]
        == 0
    )
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": "1 + 2 = 3"}])
    for args, field in [
        (capture_args(checkpoints.series[:2], other, out), "samples.sha256"),
        (
            capture_args(checkpoints.series[:2], checkpoints.samples, out, "--max-length", "16"),
            "settings.max_length",
        ),
        (capture_args(checkpoints.series, checkpoints.samples, out), "checkpoints.step"),
    ]:
        code, _, stderr = run_cli(args, monkeypatch, capsys)
        assert code == 2
        assert f"this run was captured with {field} = " in stderr and "pass a new --out" in stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("fail_on", ["manifest", "unit"])
def test_full_disk_is_one_line_leaves_no_partial_unit_and_resumes(
    fail_on: str, checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    write = _io._write_bytes

    def full_disk(handle, data: bytes) -> None:
        if {"manifest": "manifest.json", "unit": "shard-"}[fail_on] in Path(handle.name).name:
            write(handle, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        write(handle, data)

    out = tmp_path / "run"
    args = capture_args(checkpoints.series, checkpoints.samples, out, "--shard-size", "12")
    monkeypatch.setattr(_io, "_write_bytes", full_disk)
    code, _, stderr = run_cli(args, monkeypatch, capsys)
    assert code == 1
    assert stderr.splitlines()[0].startswith("pathwatch: error: ")
    assert "No space left on device. Fix: free disk space and re-run the same command" in stderr
    assert list(out.rglob("*.tmp")) == [] and list(out.glob("units/*/*")) == []
    if fail_on == "unit":  # the manifest exists but no unit claims to be done
        assert len(RunStore(out).missing_units()) == 6
    else:
        assert not (out / "manifest.json").exists()

    monkeypatch.setattr(_io, "_write_bytes", write)
    assert run_cli(args, monkeypatch, capsys)[0] == 0
    assert RunStore(out).missing_units() == []


def test_debug_variable_reraises_with_traceback(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PATHWATCH_DEBUG", "1")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "pathwatch",
            *map(str, capture_args([tmp_path / "x-1"], checkpoints.samples, tmp_path / "run")),
        ],
    )
    with pytest.raises(InputError, match="x-1 does not exist"):
        main()


def test_help_lists_every_option_without_importing_torch() -> None:
    code = "import sys; from pathwatch.cli import main; sys.argv = ['pathwatch', 'capture', '--help']\ntry:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    for option in (
        "--checkpoint",
        "--samples",
        "--out",
        "--steps",
        "--batch-size",
        "--max-length",
        "--shard-size",
        "--progress",
    ):
        assert option in result.stdout
    assert result.stdout.strip().endswith("False")


def test_token_id_samples_need_no_tokenizer(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    rows = [{"input_ids": [1, 5 + i, 9, 4 + i], "domain": "ids"} for i in range(6)]
    samples = write_jsonl(tmp_path / "ids.jsonl", rows)
    args = capture_args(
        [checkpoints.untokenized],
        samples,
        tmp_path / "run",
        "--max-length",
        "3",
        "--shard-size",
        "2",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, _ = run_cli(args, monkeypatch, capsys)
    messages = [str(w.message) for w in caught]  # one warning for the run, not one per unit
    assert len(messages) == 1 and messages[0].startswith("capture_run: 6 of 6 samples of ")
    assert "longer than max_length=3 tokens" in messages[0]
    assert code == 0 and "6 sample(s) truncated to --max-length 3" in stdout
    data = RunStore(tmp_path / "run").load_checkpoint(500)
    assert data.n_tokens.tolist() == [3] * 6 and data.truncated.all()


def test_progress_bar_counts_units_and_samples_per_second(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch, capsys
) -> None:
    args = capture_args(checkpoints.series[:1], checkpoints.samples, tmp_path / "run")
    args.remove("--no-progress")
    code, _, stderr = run_cli([*args, "--shard-size", "12"], monkeypatch, capsys)
    assert code == 0
    assert "capture: 100%" in stderr and "2/2" in stderr and "samples_per_s=" in stderr
