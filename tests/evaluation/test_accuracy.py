"""Accuracy readers: plain tables, per-item JSONL, and lm-evaluation-harness output as the harness writes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pathwatch.dynamics import generalization_onset
from pathwatch.errors import InputError
from pathwatch.evaluation import correctness_matrix, generalization_table, read_accuracy

DATE = "2026-11-25T12-30-05.123456"


def lm_eval_results(tasks: dict[str, dict], model_args: str) -> dict:
    """A results_*.json as lm-eval 0.4 writes it (trimmed configs)."""
    return {
        "results": tasks,
        "group_subtasks": {task: [] for task in tasks},
        "configs": {task: {"task": task, "num_fewshot": 0} for task in tasks},
        "versions": dict.fromkeys(tasks, 1.0),
        "n-shot": dict.fromkeys(tasks, 0),
        "higher_is_better": {task: {"acc": True} for task in tasks},
        "n-samples": {task: {"original": 4, "effective": 4} for task in tasks},
        "config": {"model": "hf", "model_args": model_args, "batch_size": "8", "device": "cuda:0"},
        "git_hash": "a1b2c3d",
        "date": 1764073805.0,
        "task_hashes": {},
        "model_source": "hf",
        "model_name": "allenai/OLMoE-1B-7B-0924",
        "model_name_sanitized": "allenai__OLMoE-1B-7B-0924",
    }


def hellaswag_sample(doc_id: int, acc: float) -> dict:
    """One line of samples_hellaswag_*.jsonl (loglikelihood task)."""
    return {
        "doc_id": doc_id,
        "doc": {"ctx": "A man is sitting on a roof. he", "endings": ["is using wrap", "starts"]},
        "target": "1",
        "arguments": {
            "gen_args_0": {"arg_0": "A man is sitting on a roof. he", "arg_1": " is using wrap"},
            "gen_args_1": {"arg_0": "A man is sitting on a roof. he", "arg_1": " starts"},
        },
        "resps": [[["-12.5", "False"]], [["-10.2", "False"]]],
        "filtered_resps": [["-12.5", "False"], ["-10.2", "False"]],
        "filter": "none",
        "metrics": ["acc", "acc_norm"],
        "doc_hash": "9f8e",
        "prompt_hash": "7d6c",
        "target_hash": "5b4a",
        "acc": acc,
        "acc_norm": 1.0 - acc,
    }


def gsm8k_samples(doc_id: int, strict: float, flexible: float) -> list[dict]:
    """The lines of samples_gsm8k_*.jsonl for one doc: one per filter (generate_until task)."""
    base = {
        "doc_id": doc_id,
        "doc": {"question": "Janet has 3 apples ...", "answer": "... #### 18"},
        "target": "... #### 18",
        "arguments": {"gen_args_0": {"arg_0": "Question: ...", "arg_1": {"until": ["Question:"]}}},
        "resps": [["She has 18 apples. The answer is 18."]],
        "metrics": ["exact_match"],
        "doc_hash": "1a",
        "prompt_hash": "2b",
        "target_hash": "3c",
    }
    return [
        base | {"filtered_resps": ["18"], "filter": "strict-match", "exact_match": strict},
        base | {"filtered_resps": ["18"], "filter": "flexible-extract", "exact_match": flexible},
    ]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_per_checkpoint_csv_and_json(tmp_path):
    csv = tmp_path / "acc.csv"
    csv.write_text(
        "step,domain,accuracy,n_items\n200,math,0.5,10\n100,math,0.25,10\n100,code,0.1,20\n"
    )
    table = read_accuracy(csv).accuracy
    assert table.columns == ["step", "domain", "accuracy", "n_items"]
    assert table.rows() == [(100, "code", 0.1, 20), (100, "math", 0.25, 10), (200, "math", 0.5, 10)]
    records = tmp_path / "acc.json"
    records.write_text(json.dumps([{"step": 5, "domain": "math", "accuracy": 0.75}]))
    read = read_accuracy(records)
    assert read.accuracy.rows() == [(5, "math", 0.75, None)]
    assert read.correctness is None


def test_per_item_jsonl_gives_accuracy_and_correctness(tmp_path):
    rng = np.random.default_rng(0)
    correct = rng.integers(0, 2, size=(6, 5))
    steps = [10, 20, 30, 40, 50]
    lines = [
        {
            "step": s,
            "domain": "add" if i < 4 else "mul",
            "item_id": f"q{i}",
            "correct": int(correct[i, t]),
        }
        for t, s in enumerate(steps)
        for i in range(6)
    ]
    read = read_accuracy(write_jsonl(tmp_path / "items.jsonl", lines))
    add = read.accuracy.filter(pl.col("domain") == "add")
    np.testing.assert_allclose(add["accuracy"], correct[:4].mean(axis=0))
    assert add["n_items"].to_list() == [4] * 5
    items, got_steps, matrix = correctness_matrix(read.correctness)
    assert items.rows() == [
        ("q0", "add"),
        ("q1", "add"),
        ("q2", "add"),
        ("q3", "add"),
        ("q4", "mul"),
        ("q5", "mul"),
    ]
    np.testing.assert_array_equal(got_steps, steps)
    np.testing.assert_array_equal(matrix, correct)
    onsets = generalization_table(read.correctness)
    assert onsets.columns == ["item_id", "domain", "gen_onset"]
    np.testing.assert_array_equal(onsets["gen_onset"], generalization_onset(correct, steps))


def test_lm_eval_results_step_from_revision(tmp_path):
    out = tmp_path / "evals" / "allenai__OLMoE-1B-7B-0924"
    for step, acc in [(5000, 0.31), (10000, 0.42)]:
        tasks = {
            "hellaswag": {
                "alias": "hellaswag",
                "acc,none": acc,
                "acc_stderr,none": 0.004,
                "acc_norm,none": acc + 0.1,
                "acc_norm_stderr,none": 0.004,
            },
            "gsm8k": {
                "alias": "gsm8k",
                "exact_match,strict-match": acc / 2,
                "exact_match_stderr,strict-match": 0.01,
                "exact_match,flexible-extract": acc / 3,
                "exact_match_stderr,flexible-extract": 0.01,
            },
        }
        args = f"pretrained=allenai/OLMoE-1B-7B-0924,revision=step{step}-tokens{step // 250}B"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"results_2026-11-25T12-00-0{step // 5000}.json").write_text(
            json.dumps(lm_eval_results(tasks, args), indent=2)
        )
    table = read_accuracy(tmp_path / "evals").accuracy
    assert table.rows() == [
        (5000, "gsm8k", 0.155, 4),
        (10000, "gsm8k", 0.21, 4),
        (5000, "hellaswag", 0.31, 4),
        (10000, "hellaswag", 0.42, 4),
    ]
    with pytest.raises(
        InputError,
        match=r"results.hellaswag: no metric exact_match with filter 'flexible-extract' among \['acc,none', 'acc_norm,none'\]",
    ):
        read_accuracy(tmp_path / "evals", metric="exact_match,flexible-extract")


def test_lm_eval_metric_that_a_task_lacks_is_named(tmp_path):
    args = "pretrained=/ckpt/step300"
    tasks = {"hellaswag": {"alias": "hellaswag", "acc,none": 0.3, "acc_stderr,none": 0.01}}
    path = tmp_path / "results_x.json"
    path.write_text(json.dumps(lm_eval_results(tasks, args)))
    assert read_accuracy(path).accuracy["step"].to_list() == [300]
    with pytest.raises(
        InputError, match=r"results.hellaswag: no metric exact_match among \['acc,none'\]"
    ):
        read_accuracy(path, metric="exact_match")


def test_lm_eval_samples_step_from_directory_and_filters(tmp_path):
    for step, strict in [(1000, [1.0, 0.0, 0.0]), (2000, [1.0, 1.0, 0.0])]:
        model_dir = tmp_path / f"checkpoint-{step}" / "__ckpts__olmoe"
        lines = [line for i, s in enumerate(strict) for line in gsm8k_samples(i, s, 1.0)]
        write_jsonl(model_dir / f"samples_gsm8k_{DATE}.jsonl", lines)
        write_jsonl(
            model_dir / f"samples_hellaswag_{DATE}.jsonl",
            [hellaswag_sample(i, float(i == 0)) for i in range(4)],
        )
    read = read_accuracy(tmp_path)
    assert read.accuracy.rows() == [
        (1000, "gsm8k", pytest.approx(1 / 3), 3),
        (2000, "gsm8k", pytest.approx(2 / 3), 3),
        (1000, "hellaswag", 0.25, 4),
        (2000, "hellaswag", 0.25, 4),
    ]
    assert read.correctness.filter(pl.col("domain") == "gsm8k").sort("step", "item_id")[
        "correct"
    ].to_list() == [1, 0, 0, 1, 1, 0]
    gsm8k = sorted(tmp_path.rglob("samples_gsm8k_*.jsonl"))
    flexible = read_accuracy(gsm8k, metric="exact_match,flexible-extract")
    assert flexible.accuracy.filter(pl.col("domain") == "gsm8k")["accuracy"].to_list() == [1.0, 1.0]


def test_lm_eval_samples_take_the_step_from_the_sibling_results(tmp_path):
    out = tmp_path / "allenai__OLMoE-1B-7B-0924"
    tasks = {"hellaswag": {"alias": "hellaswag", "acc,none": 0.5, "acc_stderr,none": 0.01}}
    out.mkdir()
    (out / f"results_{DATE}.json").write_text(
        json.dumps(
            lm_eval_results(
                tasks, "pretrained=allenai/OLMoE-1B-7B-0924,revision=step7000-tokens29B"
            )
        )
    )
    write_jsonl(
        out / f"samples_hellaswag_{DATE}.jsonl",
        [hellaswag_sample(i, float(i % 2)) for i in range(4)],
    )
    read = read_accuracy(out / f"samples_hellaswag_{DATE}.jsonl")
    assert read.accuracy.rows() == [(7000, "hellaswag", 0.5, 4)]
    # docs without an 'id' field: items are '<task>/<doc_id>', distinct across tasks
    assert read.correctness["item_id"].to_list() == [f"hellaswag/{i}" for i in range(4)]


def test_domains_pool_tasks_and_colliding_ids_name_both_tasks(tmp_path):
    lines = [
        {"step": 1, "domain": task, "item_id": f"{task[4]}{i}", "correct": c}
        for task, cs in [("arc_easy", [1, 1]), ("arc_challenge", [0, 0])]
        for i, c in enumerate(cs)
    ]
    science = {"arc_easy": "science", "arc_challenge": "science"}
    read = read_accuracy(write_jsonl(tmp_path / "items.jsonl", lines), domains=science)
    assert read.accuracy.rows() == [(1, "science", 0.5, 4)]
    assert sorted(read.correctness["item_id"]) == ["c0", "c1", "e0", "e1"]
    same_ids = [line | {"item_id": line["item_id"][1:]} for line in lines]
    with pytest.raises(
        InputError,
        match=r"two results for step=1, domain='science', item_id='0' twice in .*same.jsonl "
        r"\(tasks 'arc_challenge', 'arc_easy' map to one domain\)",
    ):
        read_accuracy(write_jsonl(tmp_path / "same.jsonl", same_ids), domains=science)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        (
            "acc.csv",
            "step,domain,accuracy\n1,math,0.5\n2,math,1.5\n",
            r"acc.csv:3: field 'accuracy' must be a number in \[0, 1\]; got '1.5'",
        ),
        ("acc.csv", "step,domain\n1,math\n", r"acc.csv:2: field 'accuracy' is missing"),
        (
            "acc.csv",
            "step,domain,accuracy\n-1,math,0.5\n",
            r"acc.csv:2: field 'step' must be a non-negative integer",
        ),
        (
            "acc.csv",
            "step,domain,accuracy\n1,math,0.5\n1,math,0.6\n",
            r"two accuracy rows for step=1, domain='math'",
        ),
        ("acc.json", '{"step": 1}', r"expected a JSON list of records"),
        (
            "acc.json",
            '[{"step": 1, "domain": "m", "accuracy": "high"}]',
            r"acc.json: record 0: field 'accuracy' must be a number",
        ),
        (
            "items.jsonl",
            '{"step": 1, "domain": "m", "item_id": "a", "correct": 1}\n{"step": 1, "domain": ',
            r"items.jsonl:2: malformed JSON",
        ),
        (
            "items.jsonl",
            '{"step": 1, "domain": "m", "item_id": "a", "correct": 2}\n',
            r"items.jsonl:1: field 'correct' must be 0 or 1; got 2",
        ),
        (
            "items.jsonl",
            '{"step": 1, "domain": "m", "correct": 1}\n',
            r"items.jsonl:1: field 'item_id' is missing",
        ),
        ("items.jsonl", "[1, 2]\n", r"items.jsonl:1: each line must be a JSON object; got list"),
        (
            "items.jsonl",
            '{"step": 1, "domain": "m", "item_id": "a", "correct": 1}\n' * 2,
            r"two results for step=1, domain='m', item_id='a'",
        ),
        ("acc.txt", "step,domain,accuracy\n", r"unknown accuracy file type"),
        ("results_x.json", '{"results": {}}', r"field 'results' is missing or empty"),
        (
            "samples_t_x.jsonl",
            '{"doc_id": 0, "filter": "none", "metrics": ["acc"], "acc": 0.5}\n',
            r"samples_t_x.jsonl:1: field 'acc' must be 0 or 1",
        ),
    ],
)
def test_bad_files_get_one_line_errors(tmp_path, name, content, match):
    path = tmp_path / "step-1" / name  # lm-eval files take their step from the directory
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(InputError, match=match) as info:
        read_accuracy(path)
    assert "\n" not in str(info.value)


def test_missing_paths_and_steps(tmp_path):
    with pytest.raises(InputError, match=r"Accuracy file .* does not exist"):
        read_accuracy(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="holds no lm-eval"):
        read_accuracy(tmp_path)
    path = tmp_path / "a" / "b" / f"samples_hellaswag_{DATE}.jsonl"
    write_jsonl(path, [hellaswag_sample(0, 1.0)])
    with pytest.raises(InputError, match="cannot tell the checkpoint step"):
        read_accuracy(path)


def test_correctness_matrix_needs_every_item_at_every_step():
    long = pl.DataFrame(
        {"step": [1, 2, 1], "domain": ["m"] * 3, "item_id": ["a", "a", "b"], "correct": [1, 1, 0]},
        schema={"step": pl.Int64, "domain": pl.String, "item_id": pl.String, "correct": pl.Int8},
    )
    with pytest.raises(InputError, match=r"item 'b' of domain 'm' has no result at step 2"):
        correctness_matrix(long)


def test_renaming_applies_once_and_unreadable_files_are_named(tmp_path):
    csv = tmp_path / "acc.csv"
    csv.write_text("\ufeffstep,domain,accuracy\n1,a,0.5\n1,b,0.25\n")  # Excel's byte-order mark
    renamed = read_accuracy(csv, domains={"a": "b", "b": "c"}).accuracy
    assert renamed.rows() == [(1, "b", 0.5, None), (1, "c", 0.25, None)]
    binary = tmp_path / "items.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(InputError, match=r"Cannot read accuracy file .*items.jsonl"):
        read_accuracy(binary)


@pytest.mark.parametrize(
    "pretrained",
    [
        "/models/allenai/OLMoE-1B-7B-0924",  # a date at the end
        "/hub/models--allenai--OLMoE/snapshots/0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",  # a hash
    ],
    ids=["date", "snapshot-hash"],
)
def test_a_trailing_date_or_hash_is_no_step(tmp_path, pretrained):
    tasks = {"hellaswag": {"alias": "hellaswag", "acc,none": 0.5, "acc_stderr,none": 0.01}}
    path = tmp_path / "evals" / "run" / f"results_{DATE}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(lm_eval_results(tasks, f"pretrained={pretrained}")))
    with pytest.raises(InputError, match="cannot tell the checkpoint step") as info:
        read_accuracy(tmp_path / "evals")
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "924" not in message.replace(pretrained, "") and "901234567" not in message.replace(
        pretrained, ""
    )
    # a step directory above the model's directory states it
    in_step = tmp_path / "by-step" / "step-300" / "run" / path.name
    in_step.parent.mkdir(parents=True)
    in_step.write_text(path.read_text())
    read = read_accuracy(tmp_path / "by-step")
    assert read.accuracy["step"].to_list() == [300]
    assert read.steps.rows() == [(str(in_step), 300, "directory 'step-300'")]


def test_model_args_and_directory_stating_different_steps_is_an_error(tmp_path):
    tasks = {"hellaswag": {"alias": "hellaswag", "acc,none": 0.5}}
    path = tmp_path / "step-100" / f"results_{DATE}.json"
    path.parent.mkdir()
    path.write_text(json.dumps(lm_eval_results(tasks, "pretrained=/ckpt/step-200")))
    with pytest.raises(InputError, match=r"states step 200 but its directory 'step-100' states"):
        read_accuracy(path)


def test_a_rerun_of_one_checkpoint_names_both_files(tmp_path):
    model_dir = tmp_path / "step-60" / "model"
    first = write_jsonl(model_dir / f"samples_hellaswag_{DATE}.jsonl", [hellaswag_sample(0, 1.0)])
    second = write_jsonl(
        model_dir / "samples_hellaswag_2026-11-26T08-00-00.000001.jsonl",
        [hellaswag_sample(0, 0.0)],
    )
    with pytest.raises(InputError) as info:
        read_accuracy(tmp_path)
    message = str(info.value)
    assert "two results for step=60, domain='hellaswag', item_id='hellaswag/0'" in message
    assert f"in {first} and {second}" in message and "\n" not in message
    results = {"hellaswag": {"alias": "hellaswag", "acc,none": 0.5}}
    for name in (f"results_{DATE}.json", "results_2026-11-26T08-00-00.json"):
        (tmp_path / "again" / "step-5").mkdir(parents=True, exist_ok=True)
        (tmp_path / "again" / "step-5" / name).write_text(json.dumps(lm_eval_results(results, "")))
    with pytest.raises(InputError, match=r"two accuracy rows for step=5, domain='hellaswag' in "):
        read_accuracy(tmp_path / "again")


def test_a_results_only_checkpoint_is_read_with_a_note(tmp_path):
    for step in (10, 20):
        write_jsonl(
            tmp_path / f"step-{step}" / "m" / f"samples_hellaswag_{DATE}.jsonl",
            [hellaswag_sample(i, float(i < step // 10)) for i in range(4)],
        )
    results = {"hellaswag": {"alias": "hellaswag", "acc,none": 0.75}}
    only = tmp_path / "step-30" / "m"
    only.mkdir(parents=True)
    (only / f"results_{DATE}.json").write_text(json.dumps(lm_eval_results(results, "")))
    read = read_accuracy(tmp_path)
    assert read.accuracy.rows() == [
        (10, "hellaswag", 0.25, 4),
        (20, "hellaswag", 0.5, 4),
        (30, "hellaswag", 0.75, 4),
    ]
    assert sorted(read.correctness["step"].unique()) == [10, 20]
    assert len(read.notes) == 1 and str(only) in read.notes[0] and "no samples_" in read.notes[0]


def test_item_ids_come_from_the_doc_field(tmp_path):
    lines = [
        hellaswag_sample(i, 1.0) | {"doc": {"ctx": "c", "id": f"q{i}", "key": f"k{i}"}}
        for i in range(3)
    ]
    path = write_jsonl(tmp_path / "step-1" / f"samples_hellaswag_{DATE}.jsonl", lines)
    assert read_accuracy(path).correctness["item_id"].to_list() == ["q0", "q1", "q2"]
    keyed = read_accuracy(path, item_id_field="key").correctness
    assert keyed["item_id"].to_list() == ["k0", "k1", "k2"]
    with pytest.raises(
        InputError,
        match=r"no field 'name' for --item-id-field \(they have \['ctx', 'id', 'key'\]\)",
    ):
        read_accuracy(path, item_id_field="name")
    lines[2]["doc"].pop("id")
    write_jsonl(path, lines)
    with pytest.raises(
        InputError, match=r"samples_hellaswag_.*jsonl:3: doc field 'id' must be an item id"
    ):
        read_accuracy(path)


def test_metric_and_filter_are_chosen_separately(tmp_path):
    lines = [line for i in range(2) for line in gsm8k_samples(i, 1.0, 0.0)]
    path = write_jsonl(tmp_path / "step-1" / f"samples_gsm8k_{DATE}.jsonl", lines)
    assert read_accuracy(path).accuracy["accuracy"].to_list() == [1.0]  # first filter
    flexible = read_accuracy(path, metric="exact_match", metric_filter="flexible-extract")
    assert flexible.accuracy["accuracy"].to_list() == [0.0]
    with pytest.raises(InputError, match=r"no samples with filter 'bogus'"):
        read_accuracy(path, metric_filter="bogus")


def test_domain_map_from_arguments_and_files(tmp_path):
    from pathwatch.evaluation.accuracy import read_domain_map

    lines = tmp_path / "map.txt"
    lines.write_text("# task=domain\narith_add = add\n\narith_mul=mul\n")
    as_json = tmp_path / "map.json"
    as_json.write_text(json.dumps({"arith_sub": "sub"}))
    assert read_domain_map([str(lines), str(as_json), "arith_sq=sq"]) == {
        "arith_add": "add",
        "arith_mul": "mul",
        "arith_sub": "sub",
        "arith_sq": "sq",
    }
    with pytest.raises(InputError, match=r"task 'a' is already mapped to 'x'"):
        read_domain_map(["a=x", "a=y"])
    with pytest.raises(InputError, match=r"--domain-map 'a=': expected TASK=DOMAIN"):
        read_domain_map(["a="])
    with pytest.raises(InputError, match=r"Domain map file .*nope.txt does not exist"):
        read_domain_map([str(tmp_path / "nope.txt")])
    csv = tmp_path / "acc.csv"
    csv.write_text("step,domain,accuracy\n1,a,0.5\n")
    with pytest.raises(InputError, match=r"'domains' parameter .* Got 'arith_typo'"):
        read_accuracy(csv, domains={"arith_typo": "add"})
