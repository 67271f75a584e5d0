"""Write the golden tiny run that tests/golden/test_golden.py compares against.

Run only for an intended change of pathwatch's outputs, and say so in the commit:

    .venv/bin/python tests/golden/regenerate.py

or, when only analyze's outputs change (the stored checkpoints, probes and units stay as they are):

    .venv/bin/python tests/golden/regenerate.py --analysis

It trains ``TestbedConfig.tiny()`` (seed 0), keeps every second checkpoint, captures them with
``pathwatch capture`` and analyses the run with ``pathwatch analyze`` (the demo's options), then
stores the inputs (checkpoints, probes, accuracy, test items) and the outputs (units, routers,
sample table, manifest with the golden directory as ``{GOLDEN}``, every table, analyze's output).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "tiny"
STEPS = (0, 10, 20, 30, 40, 50, 60)
CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)


def main() -> None:
    import torch

    from pathwatch.testbed.train import TestbedConfig, train_testbed

    torch.set_num_threads(1)
    if GOLDEN.exists():
        shutil.rmtree(GOLDEN)
    inputs = GOLDEN / "inputs"
    with tempfile.TemporaryDirectory() as tmp:
        testbed = train_testbed(
            Path(tmp) / "testbed", config=TestbedConfig.tiny(), seed=0, progress=False
        )
        for step in STEPS:
            source = testbed.out_dir / f"step-{step}"
            target = inputs / "checkpoints" / f"step-{step}"
            target.mkdir(parents=True)
            for name in CHECKPOINT_FILES:
                shutil.copy2(source / name, target / name)
        (inputs / "samples.jsonl").write_text(
            testbed.train_samples.read_text() + testbed.validation_samples.read_text()
        )
        records = [json.loads(line) for line in testbed.accuracy_file.read_text().splitlines()]
        (inputs / "accuracy.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records if r["step"] in STEPS)
        )
        shutil.copy2(testbed.out_dir / "test_items.jsonl", inputs / "test_items.jsonl")
    run = GOLDEN / "run"
    for args in capture_args(inputs, run), analyze_args(inputs, run):
        result = subprocess.run(args, check=True, capture_output=True, text=True)
    (GOLDEN / "analyze.txt").write_text(normalize(result.stdout, run))
    manifest = run / "manifest.json"
    manifest.write_text(manifest.read_text().replace(str(GOLDEN), "{GOLDEN}"))
    for name in ("report.html", "figures"):
        assert not (run / name).exists()


def reanalyze() -> None:
    """Rewrite only analyze's outputs (tables, analyze.txt) from the stored run's units."""
    run = GOLDEN / "run"
    shutil.rmtree(run / "tables")
    manifest = (run / "manifest.json").read_text()
    (run / "manifest.json").write_text(manifest.replace("{GOLDEN}", str(GOLDEN)))
    try:
        result = subprocess.run(
            analyze_args(GOLDEN / "inputs", run), check=True, capture_output=True, text=True
        )
    finally:
        (run / "manifest.json").write_text(manifest)
    (GOLDEN / "analyze.txt").write_text(normalize(result.stdout, run))


def capture_args(inputs: Path, run: Path) -> list[str]:
    """`pathwatch capture` of the golden checkpoints into ``run``."""
    args = [sys.executable, "-m", "pathwatch", "capture", "--no-progress"]
    for step in STEPS:
        args += ["--checkpoint", str(inputs / "checkpoints" / f"step-{step}")]
    return [*args, "--samples", str(inputs / "samples.jsonl"), "--out", str(run)]


def analyze_args(inputs: Path, run: Path) -> list[str]:
    """`pathwatch analyze` of ``run`` with the demo's ground truth."""
    return [
        sys.executable,
        "-m",
        "pathwatch",
        "analyze",
        str(run),
        "--no-progress",
        "--accuracy",
        str(inputs / "accuracy.jsonl"),
        "--test-items",
        str(inputs / "test_items.jsonl"),
    ]


def normalize(text: str, run: Path) -> str:
    """analyze's output with the run directory written as RUN."""
    return text.replace(str(run), "RUN")


if __name__ == "__main__":
    reanalyze() if sys.argv[1:] == ["--analysis"] else main()
