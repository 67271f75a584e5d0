"""Local lm-eval tasks over a testbed's held-out items, shared by the evaluate and recipe tests."""

from __future__ import annotations

import json
from pathlib import Path

#: lm-eval task name -> probe domain: the names differ, as they do in practice
TASKS = {"arith_add": "add", "arith_mul": "mul"}


def write_tasks(testbed, root: Path) -> Path:
    """Local multiple-choice tasks (``dataset_path: json``) over the testbed's held-out items.

    The choices are the whole vocabulary in id order, so lm-eval's argmax of the answer's
    loglikelihood is the testbed's own exact match (argmax of the answer logits).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(testbed.checkpoints[-1])
    vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    items = [json.loads(line) for line in (testbed.out_dir / "test_items.jsonl").open()]
    folder = root / "tasks"
    folder.mkdir()
    for task, domain in TASKS.items():
        docs = [
            {
                "id": item["id"],
                "prompt": item["prompt"],
                "choices": vocab,
                "target": vocab.index(item["text"].split()[-1]),
            }
            for item in items
            if item["domain"] == domain
        ]
        data = folder / f"{domain}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        (folder / f"{task}.yaml").write_text(
            f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
            "doc_to_text: prompt\ndoc_to_choice: choices\ndoc_to_target: target\n"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        )
    return folder
