"""The stream testbed: its configuration's checks, the layout it writes, and the demo through it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pathwatch.errors import InputError
from pathwatch.evaluation.accuracy import read_accuracy
from pathwatch.testbed.presets import preset_config
from pathwatch.testbed.stream import StreamConfig, train_stream_testbed

TINY = StreamConfig.tiny()

#: every field of StreamConfig -> a bad value and the message it must get
BAD_FIELDS = {
    "prime": (15, "'prime' parameter of build_corpus"),
    "domains": (("add", "div"), "Unknown domain 'div'"),
    "branching": ((2, 2), "'branching' parameter of StreamConfig"),
    "validation_branching": (99, "'validation_branching' parameter"),
    "mix": ((1, 1, 0, 1), "'mix' parameter"),
    "filler_vocab": (0, "'filler_vocab' parameter"),
    "seq_len": (11, "'seq_len' parameter"),
    "n_equations": (0, "'n_equations' parameter"),
    "train_fraction": (1.0, "'train_fraction' parameter"),
    "n_probe": (10**6, "'n_probe' parameter"),
    "probe_window": (0.0, "'probe_window' parameter"),
    "n_validation": (0, "'n_validation' parameter"),
    "n_heldout_docs": (0, "'n_heldout_docs' parameter"),
    "hidden_size": (33, "multiple of num_heads"),
    "intermediate_size": (0, "'intermediate_size' parameter"),
    "num_layers": (0, "'num_layers' parameter"),
    "num_heads": (0, "'num_heads' parameter"),
    "num_experts": (0, "'num_experts' parameter"),
    "top_k": (5, "'top_k' parameter"),
    "router_aux_loss_coef": (-0.1, "'router_aux_loss_coef' parameter"),
    "lr": (-1.0, "'lr' parameter"),
    "weight_decay": (-1.0, "'weight_decay' parameter"),
    "beta1": (1.0, "'beta1' parameter"),
    "beta2": (0.0, "'beta2' parameter"),
    "warmup_steps": (-1, "'warmup_steps' parameter"),
    "batch_size": (0, "'batch_size' parameter"),
    "max_steps": (0, "'max_steps' parameter"),
    "checkpoint_every": (0, "'checkpoint_every' parameter"),
    "stop_accuracy": (1.5, "'stop_accuracy' parameter"),
    "stop_domains": (0, "'stop_domains' parameter"),
}


def test_every_field_has_a_bad_value_row() -> None:
    assert set(BAD_FIELDS) == {f.name for f in dataclasses.fields(StreamConfig)}


@pytest.mark.parametrize("field", sorted(BAD_FIELDS))
def test_a_bad_field_is_one_line(field: str) -> None:
    value, match = BAD_FIELDS[field]
    with pytest.raises(InputError, match=match) as info:
        dataclasses.replace(TINY, **{field: value})
    assert "\n" not in str(info.value)


def test_presets_name_the_stream_configs() -> None:
    assert preset_config("stream") == StreamConfig()
    assert preset_config("stream-tiny") == TINY
    assert StreamConfig().num_layers >= 4  # consistency needs more than two adjacent layer pairs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_stream_testbed(tmp_path_factory.mktemp("stream"), config=TINY, progress=False)


def test_tiny_writes_the_testbed_layout(tiny_run) -> None:
    out = tiny_run.out_dir
    assert tiny_run.steps == tuple(range(0, TINY.max_steps + 1, TINY.checkpoint_every))
    for path in tiny_run.checkpoints:
        assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    probes = [json.loads(line) for line in tiny_run.train_samples.read_text().splitlines()]
    assert len(probes) == TINY.n_probe * len(TINY.domains)
    assert {p["domain"] for p in probes} == set(TINY.domains)
    assert tiny_run.test_items is not None
    validation = tiny_run.validation_samples.read_text().splitlines()
    assert len(validation) == TINY.n_validation
    truth = read_accuracy(tiny_run.accuracy_file)
    assert set(truth.accuracy["domain"]) == set(TINY.domains)
    assert sorted(set(truth.accuracy["step"])) == list(tiny_run.steps)
    summary = json.loads(tiny_run.summary.read_text())
    assert summary["testbed"] == "stream" and summary["probe_max_trained"] == 1
    assert {"heldout_doc_accuracy", "train_prompt_accuracy"} <= set(tiny_run.curves[0])
    assert (out / "testbed.json").is_file()


def test_probes_come_from_the_probe_window_and_were_trained_once(tiny_run) -> None:
    summary = json.loads(tiny_run.summary.read_text())
    corpus = TINY.corpus(0)
    window = TINY.window_steps * TINY.batch_size
    assert summary["probe_last_row"] < window
    probes = [json.loads(line) for line in tiny_run.train_samples.read_text().splitlines()]
    texts = corpus.words(corpus.docs)
    for record in probes:
        row = int(record["id"].rsplit("-", 1)[1])
        assert texts[row] == record["text"]
        assert corpus.domains[corpus.doc_domain[row]] == record["domain"]
    # each probe text occurs once in the whole stream
    _, counts = np.unique(np.asarray(texts), return_counts=True)
    assert counts.max() == 1


def test_a_complete_run_is_reused(tiny_run) -> None:
    again = train_stream_testbed(tiny_run.out_dir, config=TINY, progress=False)
    assert again.reused and again.curves == tiny_run.curves


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'seed' parameter of train_stream_testbed"):
        train_stream_testbed(tmp_path, config=TINY, seed=-1)
    with pytest.raises(InputError, match="'config' parameter"):
        train_stream_testbed(tmp_path, config=preset_config("tiny"))
