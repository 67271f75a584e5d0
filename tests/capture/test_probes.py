"""`pathwatch probes`: a seeded, deduplicated, length-capped draw per domain from JSONL, Parquet
and saved `datasets` corpora, and a one-line error for each bad input before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pathwatch.capture.probes import draw_probes
from pathwatch.capture.samples import read_samples
from pathwatch.errors import InputError
from tiny_models import build_tiny_tokenizer


def _rows() -> list[dict]:
    math = [{"text": f"{i} + {i} = {2 * i}", "domain": "math"} for i in range(40)]
    prose = [
        {"text": " ".join(["the cat sat"] * (1 + i % 5)) + f" {i}", "domain": "text"}
        for i in range(40)
    ]
    return [*math, *prose, *math[:10], {"text": " ", "domain": "math"}]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return path


def test_a_draw_is_per_domain_deduplicated_and_a_function_of_the_seed(corpus, tmp_path):
    first = draw_probes(corpus, tmp_path / "a.jsonl", per_domain=8, seed=1)
    draw_probes(corpus, tmp_path / "b.jsonl", per_domain=8, seed=1)
    other = draw_probes(corpus, tmp_path / "c.jsonl", per_domain=8, seed=2)
    assert first.drawn == {"math": 8, "text": 8}
    assert (first.duplicates, first.empty) == (10, 1)
    a, c = (tmp_path / "a.jsonl").read_text(), (tmp_path / "c.jsonl").read_text()
    assert a == (tmp_path / "b.jsonl").read_text() and a != c and other.drawn == first.drawn
    probes = read_samples(tmp_path / "a.jsonl")  # what capture reads
    assert len({p.text for p in probes}) == 16
    assert {p.text for p in probes} <= {r["text"] for r in _rows()}


def test_max_tokens_skips_longer_samples_counted_by_the_tokenizer(corpus, tmp_path):
    tokenizer = tmp_path / "tok"
    build_tiny_tokenizer().save_pretrained(tokenizer)
    draw = draw_probes(
        corpus, tmp_path / "p.jsonl", per_domain=40, max_tokens=6, tokenizer=tokenizer
    )
    texts = [p.text for p in read_samples(tmp_path / "p.jsonl")]
    lengths = [len(ids) for ids in build_tiny_tokenizer()(texts)["input_ids"]]
    assert max(lengths) <= 6
    assert draw.drawn == {
        "math": 40,
        "text": 8,
    }  # "N + N = 2N": 6 with BOS; "the cat sat N" only: 5
    assert any(
        "domain 'text' has only 8 distinct samples of at most 6 tokens" in n for n in draw.notes
    )


@pytest.mark.parametrize("kind", ["parquet", "datasets"])
def test_parquet_and_saved_datasets_give_the_jsonl_draw(corpus, tmp_path, kind):
    table = pl.read_ndjson(corpus)
    if kind == "parquet":
        source = tmp_path / "corpus.parquet"
        table.write_parquet(source)
    else:
        datasets = pytest.importorskip("datasets")
        source = tmp_path / "saved"
        datasets.DatasetDict({"train": datasets.Dataset.from_polars(table)}).save_to_disk(source)
    draw_probes(corpus, tmp_path / "jsonl.jsonl", per_domain=6, seed=3)
    draw_probes(source, tmp_path / "other.jsonl", per_domain=6, seed=3)
    assert (tmp_path / "other.jsonl").read_text() == (tmp_path / "jsonl.jsonl").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"corpus": "nope.jsonl"}, r"Corpus nope.jsonl does not exist"),
        (
            {"text_field": "body"},
            r"has no field 'body' \(fields: text, domain\); pass --text-field",
        ),
        ({"max_tokens": 8}, r"'tokenizer' parameter of draw_probes must be a checkpoint"),
        ({"per_domain": 0}, r"'per_domain' parameter of draw_probes must be an int >= 1"),
        ({"tokenizer": "no/such-model@step1"}, r"Hub checkpoint no/such-model@step1"),
    ],
    ids=["missing-corpus", "missing-field", "max-tokens-without-tokenizer", "zero", "no-tokenizer"],
)
def test_bad_input_is_one_line_and_writes_nothing(corpus, tmp_path, monkeypatch, change, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    call = {"corpus": corpus, "out": tmp_path / "p.jsonl", "per_domain": 4} | change
    with pytest.raises(InputError, match=message) as info:
        draw_probes(call.pop("corpus"), call.pop("out"), **call)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "p.jsonl").exists()


def test_a_malformed_corpus_line_is_named(tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "a", "domain": "x"}\n{"text": \n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: malformed JSON"):
        draw_probes(corpus, tmp_path / "p.jsonl", per_domain=1)


def test_the_cli_writes_the_probe_file(corpus, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pathwatch",
            "probes",
            str(corpus),
            "--out",
            str(tmp_path / "p.jsonl"),
            "--per-domain",
            "3",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Drew 6 probes (math 3, text 3)" in done.stdout
    assert len(read_samples(tmp_path / "p.jsonl")) == 6
