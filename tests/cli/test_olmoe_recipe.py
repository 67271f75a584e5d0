"""The README's OLMoE recipe, command for command, offline on a tiny OLMoE published as hub
revisions: probes → capture from the revisions in bfloat16 → lm-eval per revision → analyze →
report. The commands are read from the README itself, with only the names a tiny offline run must
change substituted (repo, task names and their local YAMLs, sizes, and ``--device cpu``: no GPU in
the test), so the README cannot drift from what runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import polars as pl
import pytest

from hub_cache import hub_cache
from lm_eval_tasks import write_tasks

README = Path(__file__).resolve().parents[2] / "README.md"
REPO = "tiny-org/tiny-olmoe-testbed"
STEPS = (0, 20, 40, 60)
#: README text -> what the tiny offline run uses instead
SUBSTITUTIONS = {
    "allenai/OLMoE-1B-7B-0924@step5000-tokens20B": f"{REPO}@step60-tokens6B",
    "allenai/OLMoE-1B-7B-0924": REPO,
    "--device cuda": "--device cpu",
    "--per-domain 1000": "--per-domain 12",
    "--max-tokens 512": "--max-tokens 16",
    "--tasks arc_easy,gsm8k": "--tasks arith_add,arith_mul --include-path tasks --no-progress",
    "arc_easy=commonsense": "arith_add=add",
    "gsm8k=math": "arith_mul=mul",
}

pytestmark = pytest.mark.skipif(
    find_spec("lm_eval") is None,
    reason='lm-evaluation-harness is not installed: pip install "pathwatch[lmeval]"',
)


def recipe_commands() -> list[str]:
    """The pathwatch commands of the README's recipe block, continuation lines joined."""
    block = README.read_text().split("<!-- olmoe-recipe")[1].split("<!-- /olmoe-recipe -->")[0]
    code = block.split("```bash\n")[1].split("```")[0].replace("\\\n", " ")
    return [line.strip() for line in code.splitlines() if line.strip().startswith("pathwatch ")]


def _substituted(command: str) -> list[str]:
    for old, new in SUBSTITUTIONS.items():
        command = command.replace(old, new)
    return shlex.split(command)


def test_the_recipe_has_the_five_steps():
    assert [c.split()[1] for c in recipe_commands()] == [
        "probes",
        "capture",
        "evaluate",
        "analyze",
        "report",
    ]
    assert all(old in " ".join(recipe_commands()) for old in SUBSTITUTIONS)


def test_the_readme_recipe_runs_offline_end_to_end(captured_testbed, tmp_path):
    testbed = captured_testbed.testbed
    cache = tmp_path / "hub-cache"
    commits = hub_cache(
        cache,
        REPO,
        {f"step{s}-tokens{s // 10}B": testbed.out_dir / f"step-{s}" for s in STEPS},
    )
    (tmp_path / "corpus.jsonl").write_text(captured_testbed.samples.read_text())
    tasks = write_tasks(testbed, tmp_path)
    assert tasks == tmp_path / "tasks"
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    outputs = {}
    for command in recipe_commands():
        args = _substituted(command)
        done = subprocess.run(
            [sys.executable, "-m", "pathwatch", *args[1:]],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stderr[-3000:]}"
        outputs[args[1]] = done.stdout
    probes = [json.loads(line) for line in (tmp_path / "probes.jsonl").open()]
    assert len(probes) == 12 * 5 and len({p["text"] for p in probes}) == len(probes)
    manifest = json.loads((tmp_path / "runs/olmoe/manifest.json").read_text())
    assert manifest["settings"]["dtype"] == "bfloat16"
    assert [(c["step"], c["commit"]) for c in manifest["checkpoints"]] == [
        (s, commits[f"step{s}-tokens{s // 10}B"]) for s in STEPS
    ]
    assert sorted(p.name for p in (tmp_path / "evals").iterdir()) == [f"step-{s}" for s in STEPS]
    record = json.loads((tmp_path / "evals/step-20/pathwatch-evaluate.json").read_text())
    assert record["checkpoint"] == f"pretrained={REPO},revision=step20-tokens2B"
    assert record["commit"] == commits["step20-tokens2B"]
    for step in STEPS:  # analyze read each revision's files at its step, from lm-eval's model_args
        assert re.search(
            rf"accuracy step {step}: from model_args .*revision=step{step}-", outputs["analyze"]
        )
    accuracy = pl.read_parquet(tmp_path / "runs/olmoe/tables/accuracy.parquet")
    assert set(accuracy["domain"]) == {"add", "mul", "all"} and set(accuracy["step"]) == set(STEPS)
    assert (tmp_path / "runs/olmoe/report.html").is_file()
