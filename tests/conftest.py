"""Session fixtures shared across stages: one tiny testbed run, trained and captured once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# CI sets HYPOTHESIS_PROFILE=ci: the same examples on every run, so a red CI is reproducible;
# local runs keep drawing fresh examples to find new counterexamples.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@dataclass(frozen=True)
class CapturedTestbed:
    """A tiny testbed (checkpoints + ground truth) and the run directory captured from it."""

    testbed: object  # pathwatch.testbed.TestbedRun
    samples: Path  # training probes + validation samples, one JSONL
    run: Path


@pytest.fixture(scope="session")
def captured_testbed(tmp_path_factory: pytest.TempPathFactory) -> CapturedTestbed:
    """``TestbedConfig.tiny()`` trained for seed 0 and captured with ``capture_run`` (≈ 20 s)."""
    from pathwatch.capture.run import capture_run
    from pathwatch.testbed.train import TestbedConfig, train_testbed

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("testbed")
    testbed = train_testbed(root / "testbed", config=TestbedConfig.tiny(), seed=0, progress=False)
    samples = root / "samples.jsonl"
    samples.write_text(testbed.train_samples.read_text() + testbed.validation_samples.read_text())
    capture_run(list(testbed.checkpoints), samples, root / "run", progress=False)
    return CapturedTestbed(testbed, samples, root / "run")
