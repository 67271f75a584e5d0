"""read_samples: JSONL and Parquet sample files, and a one-line error for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pathwatch.capture.samples import Sample, read_samples
from pathwatch.errors import InputError


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_samples_with_defaults(tmp_path):
    path = _write_jsonl(
        tmp_path / "s.jsonl",
        [
            {"text": "1 + 2 = 3", "domain": "math"},
            "",
            {"id": 7, "input_ids": [1, 5, 6], "loss_mask": [0, 0, 1], "extra": "kept out"},
            {"id": "q", "prompt": "the cat", "text": "the cat sat"},
        ],
    )
    assert read_samples(path) == [
        Sample(id="0", domain="math", text="1 + 2 = 3"),
        Sample(id="7", input_ids=(1, 5, 6), loss_mask=(0, 0, 1)),
        Sample(id="q", text="the cat sat", prompt="the cat"),
    ]


def test_parquet_samples(tmp_path):
    path = tmp_path / "s.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b"], "text": ["the cat", "sat on"], "domain": ["x", "y"]}), path
    )
    assert read_samples(path) == [
        Sample(id="a", domain="x", text="the cat"),
        Sample(id="b", domain="y", text="sat on"),
    ]


@settings(max_examples=30, deadline=None)
@given(
    texts=st.lists(st.text(min_size=1).filter(str.strip), min_size=1, max_size=8),
    domains=st.lists(st.text(min_size=1).filter(lambda d: d != "all"), min_size=8, max_size=8),
)
def test_jsonl_round_trip(tmp_path_factory, texts, domains):
    path = tmp_path_factory.mktemp("rt") / "s.jsonl"
    rows = [{"text": t, "domain": d} for t, d in zip(texts, domains, strict=False)]
    _write_jsonl(path, rows)
    samples = read_samples(path)
    assert [s.text for s in samples] == texts
    assert [s.domain for s in samples] == domains[: len(texts)]
    assert [s.id for s in samples] == [str(i) for i in range(len(texts))]


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"text": "a"}', '{"text": "b",}'], r"s\.jsonl:2: malformed JSON"),
        (
            ['{"text": "a"}', "", '{"id": 3}'],
            r"s\.jsonl:3: a sample needs exactly one of field 'text'",
        ),
        (['{"text": "  "}'], r"s\.jsonl:1: field 'text' must be a non-empty string; got '  '"),
        (['{"input_ids": []}'], r"s\.jsonl:1: field 'input_ids' is empty"),
        (['{"text": 5}'], r"s\.jsonl:1: field 'text' must be a string; got 5"),
        (['{"text": "a", "input_ids": [1]}'], r"got both"),
        (
            ['{"id": "x", "text": "a"}', '{"id": "x", "text": "b"}'],
            r"s\.jsonl:2: id 'x' is already used by .*s\.jsonl:1",
        ),
        (['{"text": "a", "domain": "all"}'], r"s\.jsonl:1: domain 'all' is reserved"),
        (
            ['{"input_ids": [1, 2], "loss_mask": [1]}'],
            r"s\.jsonl:1: field 'loss_mask' must hold one 0/1 per token",
        ),
        (['{"text": "a", "loss_mask": [1]}'], r"field 'loss_mask' needs 'input_ids'"),
        (['{"input_ids": [1, 2], "prompt": "a"}'], r"field 'prompt' needs 'text'"),
        (
            ['{"text": "1 + 2 = 3", "prompt": "2 + 1 ="}'],
            r"s\.jsonl:1: field 'prompt' must be the start of field 'text'",
        ),
        (['{"text": "1 + 2", "prompt": "1 + 2"}'], r"field 'prompt' must be the start"),
        (["[1, 2, 3]"], r"s\.jsonl:1: each line must be a JSON object; got list"),
        (["", "  "], r"s\.jsonl: the file has no samples"),
    ],
)
def test_bad_sample_files_get_one_line_errors(tmp_path, lines, match):
    path = _write_jsonl(tmp_path / "s.jsonl", lines)
    with pytest.raises(InputError, match=match) as info:
        read_samples(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"Samples file .*nope\.jsonl does not exist"):
        read_samples(tmp_path / "nope.jsonl")


def test_unreadable_file(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"text": "\xff\xfe"}\n')
    with pytest.raises(InputError, match=r"Cannot read samples file .*s\.jsonl"):
        read_samples(path)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "s.parquet"
    path.write_text("not parquet")
    with pytest.raises(InputError, match=r"Cannot read samples file .*s\.parquet") as info:
        read_samples(path)
    assert "\n" not in str(info.value)
