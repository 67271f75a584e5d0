"""Write the golden tiny run that tests/golden/test_golden.py compares against.

Run only for an intended change of pathwatch's outputs, and say so in the commit:

    .venv/bin/python tests/golden/regenerate.py             # everything, inputs included
    .venv/bin/python tests/golden/regenerate.py --analysis  # only analyze's tables and output

``--analysis`` keeps the stored inputs and capture byte for byte and re-runs only ``pathwatch
analyze`` on them: the mode for a change of the analysis (inputs must not change with it).
``--manifest`` re-runs ``pathwatch capture`` of the stored checkpoints and rewrites only the run's
``manifest.json``: the mode for a change of what the manifest records (units must not change).

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


def analysis_only() -> None:
    """Re-run ``pathwatch analyze`` on the stored run; rewrite its tables and analyze.txt only."""
    run = GOLDEN / "run"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        copy.mkdir()
        manifest = (run / "manifest.json").read_text().replace("{GOLDEN}", str(GOLDEN))
        (copy / "manifest.json").write_text(manifest)
        for name in ("units", "routers", "samples.parquet"):
            source = run / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy / name)
        result = subprocess.run(
            analyze_args(GOLDEN / "inputs", copy), check=True, capture_output=True, text=True
        )
        shutil.rmtree(run / "tables")
        shutil.copytree(copy / "tables", run / "tables")
        (GOLDEN / "analyze.txt").write_text(normalize(result.stdout, copy))


def manifest_only() -> None:
    """Re-run ``pathwatch capture`` of the stored checkpoints; rewrite the run's manifest only."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        subprocess.run(capture_args(GOLDEN / "inputs", copy), check=True, capture_output=True)
        manifest = (copy / "manifest.json").read_text().replace(str(GOLDEN), "{GOLDEN}")
        (GOLDEN / "run" / "manifest.json").write_text(manifest)


def main() -> None:
    if sys.argv[1:] == ["--analysis"]:
        analysis_only()
        return
    if sys.argv[1:] == ["--manifest"]:
        manifest_only()
        return
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
    main()
