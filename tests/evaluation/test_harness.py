"""`pathwatch evaluate` runs the real lm-evaluation-harness on testbed checkpoints, and `pathwatch
analyze` reads its files as they come: task names mapped to domains, item ids from the docs, each
file at its checkpoint's step, and the same correctness as the testbed's own evaluation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import polars as pl
import pytest

from lm_eval_tasks import TASKS, write_tasks
from pathwatch.errors import InputError, MissingExtraError
from pathwatch.evaluation import read_accuracy
from pathwatch.evaluation.harness import evaluate_checkpoints

needs_lm_eval = pytest.mark.skipif(
    find_spec("lm_eval") is None,
    reason='lm-evaluation-harness is not installed: pip install "pathwatch[lmeval]"',
)
STEPS = (20, 40, 60)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(cwd / "hf-datasets"),
    }
    return subprocess.run(
        [sys.executable, "-m", "pathwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def evaluated(captured_testbed, tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-eval")
    testbed = captured_testbed.testbed
    tasks = write_tasks(testbed, root)
    checkpoints = [str(testbed.out_dir / f"step-{s}") for s in STEPS]
    args = [*checkpoints, "--tasks", ",".join(TASKS), "--out", str(root / "evals")]
    done = _cli("evaluate", *args, "--include-path", str(tasks), "--no-progress", cwd=root)
    assert done.returncode == 0, done.stderr
    return root, args, tasks, done


@needs_lm_eval
def test_evaluate_writes_lm_eval_files_per_checkpoint(evaluated):
    root, _, _, done = evaluated
    assert "Evaluated 3 checkpoint(s) on arith_add, arith_mul" in done.stdout
    assert "it/s" not in done.stderr  # --no-progress: none of lm-eval's bars
    for step in STEPS:
        folder = root / "evals" / f"step-{step}"
        assert len(list(folder.rglob("results_*.json"))) == 1
        assert sorted(p.name.split("_2")[0] for p in folder.rglob("samples_*.jsonl")) == [
            "samples_arith_add",
            "samples_arith_mul",
        ]
    assert not list((root / "evals").glob(".*"))  # no partial directory left


@needs_lm_eval
def test_analyze_reads_it_at_the_right_steps_and_equals_the_testbed(evaluated, captured_testbed):
    root, _, _, _ = evaluated
    run = root / "run"
    shutil.copytree(captured_testbed.run, run)
    domain_map = root / "map.json"
    domain_map.write_text(json.dumps({"arith_mul": "mul"}))
    test_items = captured_testbed.testbed.out_dir / "test_items.jsonl"
    done = _cli(
        "analyze",
        str(run),
        "--accuracy",
        str(root / "evals"),
        "--domain-map",
        "arith_add=add",
        "--domain-map",
        str(domain_map),
        "--test-items",
        str(test_items),
        "--no-progress",
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    for step in STEPS:
        assert (
            f"note: accuracy step {step}: from model_args pretrained="
            f"{captured_testbed.testbed.out_dir / f'step-{step}'} (2 file(s))" in done.stdout
        )
    assert "Matched groups" in done.stdout
    # lm-eval's per-item correctness is the testbed's own, item for item, at every step
    own = pl.read_ndjson(captured_testbed.testbed.accuracy_file).filter(
        pl.col("step").is_in(STEPS) & pl.col("domain").is_in(list(TASKS.values()))
    )
    lm_eval = read_accuracy(root / "evals", domains=TASKS).correctness
    joined = own.join(lm_eval, on=["step", "domain", "item_id"], how="full", coalesce=True)
    assert joined.height == own.height == lm_eval.height
    assert (joined["correct"] == joined["correct_right"]).all()
    accuracy = pl.read_parquet(run / "tables" / "accuracy.parquet")
    expected = own.group_by("step", "domain").agg(pl.col("correct").mean())
    got = accuracy.join(expected, on=["step", "domain"])
    assert got.height == len(STEPS) * len(TASKS)
    assert (got["accuracy"] - got["correct"]).abs().max() < 1e-12
    onsets = pl.read_parquet(run / "tables" / "test_onsets.parquet")
    assert set(onsets["item_id"]) == set(own["item_id"])  # the items' own ids, not doc_ids


@needs_lm_eval
def test_a_rerun_resumes_and_another_task_set_is_refused(evaluated):
    root, args, tasks, _ = evaluated
    before = {p: p.stat().st_mtime_ns for p in (root / "evals").rglob("*")}
    again = _cli("evaluate", *args, "--include-path", str(tasks), "--no-progress", cwd=root)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in (root / "evals").rglob("*")} == before
    other = [*args[:3], "--tasks", "arith_add", "--out", str(root / "evals")]
    refused = _cli("evaluate", *other, "--include-path", str(tasks), cwd=root)
    assert refused.returncode == 2
    assert "already holds an evaluation of other checkpoints or tasks" in refused.stderr


@needs_lm_eval
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tasks": ["arith_ad"]}, r"lm-eval knows no task 'arith_ad'.*Did you mean 'arith_add'"),
        (
            {"checkpoints": ["nowhere/step-5"]},
            r"Checkpoint directory nowhere/step-5 does not exist",
        ),
        ({"steps": [20, 21, 22]}, r"--steps gives step 21 to checkpoint .*step-40, whose name"),
        ({"include_path": "no-such-dir"}, r"--include-path no-such-dir is not a directory"),
    ],
    ids=["unknown-task", "missing-checkpoint", "steps-contradict-names", "missing-include"],
)
def test_bad_input_is_one_line_before_any_model(evaluated, tmp_path, change, message):
    _, args, tasks, _ = evaluated
    call = {
        "checkpoints": args[:3],
        "tasks": list(TASKS),
        "out": tmp_path / "evals",
        "include_path": tasks,
        "progress": False,
    } | change
    with pytest.raises(InputError, match=message) as info:
        evaluate_checkpoints(call.pop("checkpoints"), call.pop("tasks"), call.pop("out"), **call)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "evals").exists()


def test_a_missing_lm_eval_names_the_extra(tmp_path, monkeypatch):
    checkpoint = tmp_path / "step-1"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "pathwatch\[lmeval\]"'):
        evaluate_checkpoints([checkpoint], ["arc_easy"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@needs_lm_eval
def test_generate_until_runs_on_a_saved_testbed_checkpoint(captured_testbed, tmp_path):
    """The saved tokenizer's EOS lets lm-eval generate without hand edits; one greedy token is the
    testbed's argmax, so exact match equals its own correctness item for item."""
    testbed = captured_testbed.testbed
    items = [json.loads(line) for line in (testbed.out_dir / "test_items.jsonl").open()]
    data = tmp_path / "mul.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i["id"], "prompt": i["prompt"], "answer": i["text"].split()[-1]})
            + "\n"
            for i in items
            if i["domain"] == "mul"
        )
    )
    (tmp_path / "gen_mul.yaml").write_text(
        f"task: gen_mul\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: prompt\n"
        "doc_to_target: answer\ngeneration_kwargs:\n  until: ['=']\n  max_gen_toks: 1\n"
        "  do_sample: false\nmetric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    higher_is_better: true\n    regexes_to_ignore: [' ']\n"
    )
    out = tmp_path / "evals"
    evaluate_checkpoints(
        [testbed.out_dir / "step-60"], ["gen_mul"], out, include_path=tmp_path, progress=False
    )
    got = read_accuracy(out, domains={"gen_mul": "mul"}).correctness
    own = pl.read_ndjson(testbed.accuracy_file).filter(
        (pl.col("step") == 60) & (pl.col("domain") == "mul")
    )
    joined = own.join(got, on=["step", "domain", "item_id"])
    assert joined.height == own.height and own["correct"].sum() > 0
    assert (joined["correct"] == joined["correct_right"]).all()
