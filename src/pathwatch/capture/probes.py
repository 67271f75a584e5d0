"""Probe sets drawn from a training corpus (``pathwatch probes``): the samples file capture reads.

The paper probes each domain with samples the model was trained on. :func:`draw_probes` reads a
corpus — a JSONL or Parquet file, or a directory written by ``datasets``' ``save_to_disk`` — with
a text and a domain field, drops empty and duplicate texts, and draws ``per_domain`` samples of at
most ``max_tokens`` tokens (counted by the checkpoints' tokenizer, as capture will) per domain,
reproducibly from ``seed``. Longer samples are skipped rather than cut, so every probe is whole.
The result is one JSONL file (``id``, ``domain``, ``text``), written atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathwatch._files import one_line, read_jsonl, require_path
from pathwatch._validate import check_int, check_path, check_text
from pathwatch.capture.samples import DEFAULT_DOMAIN
from pathwatch.errors import InputError, MissingExtraError, invalid_parameter
from pathwatch.store import write_atomic

__all__ = ["ProbeDraw", "draw_probes"]

_FUNC = "draw_probes"
_PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class ProbeDraw:
    """What :func:`draw_probes` wrote: the file, the probes drawn per domain, how many duplicate
    and empty texts were skipped, and a note per domain that had fewer than asked for."""

    out: Path
    drawn: dict[str, int]
    duplicates: int
    empty: int
    notes: list[str] = field(default_factory=list)


def _load_dataset(path: Path, split: str) -> Any:
    """A ``save_to_disk`` directory as an Arrow table (``split`` of a DatasetDict)."""
    try:
        import datasets
    except ImportError as exc:
        raise MissingExtraError(
            f"Corpus {path} is a directory (a saved datasets dataset); reading it needs "
            'datasets: pip install "pathwatch[lmeval]".'
        ) from exc
    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise InputError(
            f"Corpus {path}: not a dataset written by datasets' save_to_disk ({one_line(exc)})."
        ) from exc
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise InputError(
                f"Corpus {path} has no split {split!r} (it has {', '.join(data)}); pass --split."
            )
        data = data[split]
    return data.data.table


def _read_table(path: Path, split: str) -> Any:
    """The corpus as a polars DataFrame."""
    import polars as pl

    if path.is_dir():
        return pl.from_arrow(_load_dataset(path, split))
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        try:
            return pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise InputError(f"Cannot read corpus {path} as Parquet: {one_line(exc)}.") from exc
    # JSONL through the one reader that names a malformed line
    return pl.from_dicts([row for _, row in read_jsonl(path, "corpus")], infer_schema_length=None)


def _columns(table: Any, path: Path, text_field: str, domain_field: str) -> Any:
    """``row`` (corpus position), ``id`` (or null), ``domain``, ``text`` of the corpus."""
    import polars as pl

    if text_field not in table.columns:
        raise InputError(
            f"Corpus {path} has no field {text_field!r} (fields: {', '.join(table.columns)}); "
            "pass --text-field."
        )
    if table.schema[text_field] != pl.String:
        raise InputError(
            f"Corpus {path}: field {text_field!r} must hold strings; got "
            f"{table.schema[text_field]}. Pass the text field with --text-field."
        )
    domain = (
        pl.col(domain_field).cast(pl.String)
        if domain_field in table.columns
        else pl.lit(DEFAULT_DOMAIN)
    )
    ids = pl.col("id").cast(pl.String) if "id" in table.columns else pl.lit(None, pl.String)
    return table.with_row_index("row").select(
        "row",
        ids.alias("id"),
        domain.fill_null(DEFAULT_DOMAIN).alias("domain"),
        pl.col(text_field).alias("text"),
    )


def _token_counts(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Tokens of each text as capture encodes it."""
    return np.array([len(ids) for ids in tokenizer(texts)["input_ids"]], np.int64)


def draw_probes(
    corpus: str | os.PathLike,
    out: str | os.PathLike,
    *,
    per_domain: int,
    seed: int = 0,
    max_tokens: int | None = None,
    tokenizer: str | os.PathLike | None = None,
    text_field: str = "text",
    domain_field: str = "domain",
    split: str = "train",
) -> ProbeDraw:
    """Draw a probe set, ``per_domain`` samples per domain, from a training corpus.

    Parameters
    ----------
    corpus : path
        JSONL or Parquet file, or a directory written by ``datasets``' ``save_to_disk``.
    out : path
        The probe file to write (JSONL: ``id``, ``domain``, ``text``), for ``pathwatch capture
        --samples``.
    per_domain : int
        Probes per domain (a domain with fewer candidates gives all it has, with a note).
    seed : int, default 0
        The draw is a function of the corpus and the seed.
    max_tokens : int, optional
        Skip samples longer than this many tokens of ``tokenizer`` (needs it).
    tokenizer : path or str, optional
        A checkpoint directory or ``REPO@REVISION`` whose tokenizer counts the tokens.
    text_field, domain_field : str
        The corpus fields of the text and the domain (no domain field: one domain "default").
    split : str, default "train"
        The split of a saved ``DatasetDict``.

    Returns
    -------
    ProbeDraw

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"text": f"{i} + {i} = {2 * i}", "domain": "math"} for i in range(5)]
    >>> _ = (root / "c.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows * 2))
    >>> draw = draw_probes(root / "c.jsonl", root / "p.jsonl", per_domain=3)
    >>> draw.drawn, draw.duplicates
    ({'math': 3}, 5)
    """
    import polars as pl

    source = check_path(_FUNC, "corpus", corpus)
    target = check_path(_FUNC, "out", out)
    check_int(_FUNC, "per_domain", per_domain, low=1)
    check_int(_FUNC, "seed", seed, low=0)
    check_int(_FUNC, "max_tokens", max_tokens, low=2, allow_none=True)
    check_path(_FUNC, "tokenizer", tokenizer, allow_none=True)
    for name, value in (
        ("text_field", text_field),
        ("domain_field", domain_field),
        ("split", split),
    ):
        check_text(_FUNC, name, value)
    if max_tokens is not None and tokenizer is None:
        raise invalid_parameter(
            _FUNC, "tokenizer", "a checkpoint whose tokenizer counts max_tokens", tokenizer
        )
    require_path(
        source,
        "Corpus",
        "pass a JSONL or Parquet file, or a directory written by datasets' save_to_disk",
        directory=True,
    )
    if target.is_dir():
        raise InputError(f"--out {target} is a directory; pass the probe file to write.")
    counter = None
    if tokenizer is not None:
        from transformers import AutoTokenizer

        from pathwatch.checkpoints import checkpoint_directory

        folder = checkpoint_directory(tokenizer, func=_FUNC)
        try:
            counter = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(
                f"Tokenizer {tokenizer}: cannot load it ({type(exc).__name__}); pass a "
                "checkpoint saved with its tokenizer."
            ) from exc
    table = _columns(_read_table(source, split), source, text_field, domain_field)
    kept = table.filter(pl.col("text").str.strip_chars().str.len_chars() > 0)
    empty = table.height - kept.height
    unique = kept.unique(subset="text", keep="first", maintain_order=True)
    duplicates = kept.height - unique.height
    if unique.height == 0:
        raise InputError(f"Corpus {source} has no non-empty {text_field!r}; nothing to draw.")
    # one random key per candidate, from the seed: each domain's draw is its smallest keys
    order = unique.with_columns(key=pl.Series(np.random.default_rng(seed).random(unique.height)))
    order = order.sort("domain", "key")
    drawn, notes, parts = {}, [], []
    for (domain,), group in order.group_by("domain", maintain_order=True):
        chosen = group.head(0)
        start = 0
        while chosen.height < per_domain and start < group.height:
            batch = group.slice(start, max(4 * (per_domain - chosen.height), 64))
            start += batch.height
            if counter is not None and max_tokens is not None:
                fits = _token_counts(counter, batch["text"].to_list()) <= max_tokens
                batch = batch.filter(pl.Series(fits))
            chosen = pl.concat([chosen, batch.head(per_domain - chosen.height)])
        drawn[domain] = chosen.height
        if chosen.height < per_domain:
            limit = f" of at most {max_tokens} tokens" if max_tokens is not None else ""
            notes.append(
                f"domain {domain!r} has only {chosen.height} distinct samples{limit}; all drawn "
                f"(--per-domain {per_domain})."
            )
        parts.append(chosen)
    probes = pl.concat(parts).with_columns(
        id=pl.coalesce("id", pl.format("{}-{}", "domain", "row"))
    )
    lines = (
        json.dumps({"id": r["id"], "domain": r["domain"], "text": r["text"]}, ensure_ascii=False)
        for r in probes.iter_rows(named=True)
    )
    if probes["id"].n_unique() != probes.height:
        raise InputError(
            f"Corpus {source}: its 'id' field repeats among the drawn samples; give every row "
            "its own id, or drop the field to number them."
        )
    write_atomic(target, "".join(line + "\n" for line in lines).encode())
    return ProbeDraw(Path(target), drawn, duplicates, empty, notes)
