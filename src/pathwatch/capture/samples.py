"""Samples: read them from JSONL or Parquet, check them, and turn them into token ids.

A sample is text (``text``, optionally starting with an unscored ``prompt``) or token ids (``input_ids``,
optionally with a ``loss_mask`` that is 1 where a token is a scored *target*), with an ``id`` (default:
its position) and a ``domain`` (default ``"default"``; ``"all"`` is reserved for pooled analysis rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from pathwatch._files import one_line, read_jsonl, require_path, unreadable
from pathwatch._validate import check_path, is_int
from pathwatch.errors import InputError

DEFAULT_DOMAIN = "default"
RESERVED_DOMAIN = "all"
_PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Sample:
    """One probe sample; exactly one of ``text`` and ``input_ids`` is set."""

    id: str
    domain: str = DEFAULT_DOMAIN
    text: str | None = None
    input_ids: tuple[int, ...] | None = None
    prompt: str | None = None
    loss_mask: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Encoded:
    """Token ids of N samples after truncation.

    Attributes
    ----------
    ids : list of int64 arrays
        Token ids of each sample, of length n_tokens[i].
    scored : list of bool arrays
        Same lengths; True where the token is a scored next-token target (never the first token).
    truncated : bool array of shape (N,)
        The sample was cut to ``max_length`` tokens.
    """

    ids: list[np.ndarray]
    scored: list[np.ndarray]
    truncated: np.ndarray


def _int_list(value: object, where: str, field: str) -> tuple[int, ...]:
    """A non-empty list of non-negative ints, or a one-line InputError."""
    if (  # the common case, a list of Python ints, checked without a NumPy round trip
        type(value) in (list, tuple)
        and value
        and set(map(type, value)) == {int}
        and min(value) >= 0
        and max(value) < 2**63
    ):
        return tuple(value)
    array = None
    if not isinstance(value, (str, bytes, Mapping)):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError, OverflowError):
            array = None
    if array is None or array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise InputError(
            f"{where}: field {field!r} must be a list of integer token ids; got {_short(value)}."
        )
    if array.size == 0:
        raise InputError(f"{where}: field {field!r} is empty; remove the sample or give it tokens.")
    if array.min() < 0:
        raise InputError(f"{where}: field {field!r} has a negative token id {array.min()}.")
    return tuple(array.tolist())


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(value: object, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: field {field!r} must be a string; got {_short(value)}.")
    if not value.strip():
        raise InputError(
            f"{where}: field {field!r} must be a non-empty string; got {value!r}. "
            "Remove or fill the sample."
        )
    return value


def to_sample(obj: object, index: int, *, where: str | None = None) -> Sample:
    """Check one sample given as a str, a sequence of token ids, a mapping, or a :class:`Sample`.

    ``index`` is the default id; ``where`` names the sample in errors (default ``samples[index]``).
    """
    where = where or f"samples[{index}]"
    if type(obj) in (list, tuple):  # token ids, the common case: no ABC checks
        return Sample(id=str(index), input_ids=_int_list(obj, where, "input_ids"))
    if isinstance(obj, Sample):
        obj = {k: v for k, v in vars(obj).items() if v is not None}
    if isinstance(obj, str):
        return Sample(id=str(index), text=_text(obj, where, "text"))
    if not isinstance(obj, Mapping):
        if isinstance(obj, (Sequence, np.ndarray)) and not isinstance(obj, bytes):
            return Sample(id=str(index), input_ids=_int_list(obj, where, "input_ids"))
        raise InputError(
            f"{where}: a sample must be a string, a list of token ids, or a mapping with 'text' or "
            f"'input_ids'; got {type(obj).__name__}."
        )
    fields = {k: v for k, v in obj.items() if v is not None}
    has_text, has_ids = "text" in fields, "input_ids" in fields
    if has_text == has_ids:
        problem = (
            "both" if has_text else f"neither (fields: {', '.join(map(str, fields)) or 'none'})"
        )
        raise InputError(
            f"{where}: a sample needs exactly one of field 'text' (a string) or 'input_ids' "
            f"(a list of token ids); got {problem}."
        )
    sample_id = fields.get("id", index)
    if not (isinstance(sample_id, str) or is_int(sample_id)) or str(sample_id) == "":
        raise InputError(
            f"{where}: field 'id' must be a non-empty string or an integer; got {_short(sample_id)}."
        )
    domain = fields.get("domain", DEFAULT_DOMAIN)
    if not isinstance(domain, str) or not domain:
        raise InputError(
            f"{where}: field 'domain' must be a non-empty string; got {_short(domain)}."
        )
    if domain == RESERVED_DOMAIN:
        raise InputError(
            f"{where}: domain {RESERVED_DOMAIN!r} is reserved for the pooled analysis rows; "
            "rename the domain."
        )
    if has_text:
        if "loss_mask" in fields:
            raise InputError(
                f"{where}: field 'loss_mask' needs 'input_ids'; for text use 'prompt' to leave "
                "the prompt unscored."
            )
        text = _text(fields["text"], where, "text")
        prompt = _text(fields["prompt"], where, "prompt") if "prompt" in fields else None
        if prompt is not None and (not text.startswith(prompt) or text == prompt):
            raise InputError(
                f"{where}: field 'prompt' must be the start of field 'text' (the unscored prefix of "
                f"the sample) and shorter than it; got prompt {_short(prompt)} and text {_short(text)}."
            )
        return Sample(str(sample_id), domain, text=text, prompt=prompt)
    if "prompt" in fields:
        raise InputError(
            f"{where}: field 'prompt' needs 'text'; for token ids use 'loss_mask' (1 = scored target)."
        )
    ids = _int_list(fields["input_ids"], where, "input_ids")
    mask = None
    if "loss_mask" in fields:
        mask = _int_list(fields["loss_mask"], where, "loss_mask")
        if len(mask) != len(ids) or not set(mask) <= {0, 1}:
            raise InputError(
                f"{where}: field 'loss_mask' must hold one 0/1 per token ({len(ids)} values); "
                f"got {len(mask)} values {sorted(set(mask))[:5]}."
            )
    return Sample(str(sample_id), domain, input_ids=ids, loss_mask=mask)


def check_samples(items: Iterable[tuple[object, str]]) -> list[Sample]:
    """Check (sample, location) pairs in order; ids must be unique."""
    samples: list[Sample] = []
    first_seen: dict[str, str] = {}
    for index, (obj, where) in enumerate(items):
        sample = to_sample(obj, index, where=where)
        if sample.id in first_seen:
            raise InputError(
                f"{where}: id {sample.id!r} is already used by {first_seen[sample.id]}; "
                "ids must be unique."
            )
        first_seen[sample.id] = where
        samples.append(sample)
    if not samples:
        raise InputError("No samples given; pass at least one sample.")
    return samples


def _parquet_rows(path: Path) -> list[tuple[object, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except pa.ArrowException as exc:
        raise InputError(f"Cannot read samples file {path} as Parquet: {one_line(exc)}.") from exc
    return [(row, f"{path}:row {i}") for i, row in enumerate(table.to_pylist(), start=1)]


def read_samples(path: str | Path) -> list[Sample]:
    """Read samples from a JSONL or Parquet file.

    Each line (row) has ``text`` or ``input_ids``, and optionally ``id`` (default: the sample's
    0-based position), ``domain`` (default ``"default"``), ``prompt`` (text only) and ``loss_mask``
    (ids only). Blank JSONL lines are skipped.

    Parameters
    ----------
    path : str or Path
        ``*.parquet`` / ``*.pq`` is read as Parquet, anything else as JSONL.

    Returns
    -------
    list of Sample
        In file order.

    Raises
    ------
    InputError
        One line naming ``file:line`` (or ``file:row``), the field and the fix.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.jsonl"
    >>> _ = p.write_text(json.dumps({"text": "2 + 2 = 4", "domain": "math"}) + "\\n")
    >>> read_samples(p)[0].domain
    'math'
    """
    path = require_path(
        check_path("read_samples", "path", path),
        "Samples file",
        "pass a JSONL or Parquet file with a 'text' or 'input_ids' field",
    )
    try:
        if path.suffix.lower() in _PARQUET_SUFFIXES:
            rows: Iterable[tuple[object, str]] = _parquet_rows(path)
        else:
            rows = ((row, f"{path}:{n}") for n, row in read_jsonl(path, "samples file"))
        samples = check_samples(rows)
    except OSError as exc:
        raise unreadable(path, "samples file", exc) from exc
    except InputError as exc:
        if str(exc).startswith("No samples"):
            raise InputError(f"{path}: the file has no samples; add lines with 'text'.") from None
        raise
    return samples


def encode_samples(
    samples: Sequence[Sample],
    tokenizer: Any = None,
    *,
    max_length: int,
    vocab_size: int | None = None,
) -> Encoded:
    """Token ids and scored-target masks of checked samples, cut to ``max_length`` tokens.

    Text is tokenized whole, with the tokenizer's special tokens, so a ``prompt`` (the start of the
    text) changes no token: only the tokens that hold a character after the prompt are scored targets
    (found from the offsets of a fast tokenizer).

    Raises
    ------
    InputError
        Text without a tokenizer, a token id outside the vocabulary, or a sample with no scored token.
    """
    texts = [i for i, s in enumerate(samples) if s.text is not None]
    token_ids: dict[int, list[int]] = {}
    prompt_mask: dict[
        int, np.ndarray
    ] = {}  # True on tokens that hold no character after the prompt
    if texts:
        if tokenizer is None:
            raise InputError(
                f"samples[{texts[0]}] is text; pass tokenizer= (or give 'input_ids' instead of 'text')."
            )
        prompts = {i: len(samples[i].prompt) for i in texts if samples[i].prompt is not None}
        try:
            encoded = tokenizer(
                [samples[i].text for i in texts], return_offsets_mapping=bool(prompts)
            )
        except NotImplementedError as exc:
            raise InputError(
                f"samples[{next(iter(prompts))}] has a 'prompt', which needs a fast tokenizer (token "
                "offsets); load it with use_fast=True, or give 'input_ids' with a 'loss_mask'."
            ) from exc
        token_ids.update(zip(texts, map(list, encoded["input_ids"]), strict=True))
        for position, i in enumerate(texts):
            if i in prompts:
                ends = np.array([end for _, end in encoded["offset_mapping"][position]])
                prompt_mask[i] = ends <= prompts[i]
    # all samples' tokens in one flat array; each sample's ids and scored mask are views into it
    seqs = [token_ids[i] if s.text is not None else s.input_ids for i, s in enumerate(samples)]
    lengths = np.fromiter(map(len, seqs), np.int64, count=len(seqs))
    flat = np.fromiter(chain.from_iterable(seqs), np.int64, count=int(lengths.sum()))
    starts = np.cumsum(lengths) - lengths
    owner = np.repeat(np.arange(len(seqs)), lengths)  # sample of each token
    flat_scored = np.ones(flat.size, bool)
    for i, sample in enumerate(samples):
        if sample.loss_mask is not None:
            flat_scored[starts[i] : starts[i] + lengths[i]] = sample.loss_mask
        elif i in prompt_mask:
            flat_scored[starts[i] : starts[i] + lengths[i]] = ~prompt_mask[i]
    flat_scored[starts[lengths > 0]] = False  # the first token is never a target
    kept = np.minimum(lengths, max_length)
    ids = [flat[a : a + n] for a, n in zip(starts.tolist(), kept.tolist(), strict=True)]
    scored = [flat_scored[a : a + n] for a, n in zip(starts.tolist(), kept.tolist(), strict=True)]
    in_cut = np.arange(flat.size) - starts[owner] < max_length
    n_scored = np.bincount(owner[in_cut & flat_scored], minlength=len(seqs))
    out_of_vocab = np.zeros(len(seqs), bool)
    if vocab_size is not None:
        out_of_vocab[owner[in_cut & (flat >= vocab_size)]] = True
    bad = np.flatnonzero((n_scored == 0) | out_of_vocab)
    if bad.size:  # the first bad sample, as a per-sample check would find it
        i = int(bad[0])
        if n_scored[i] == 0:
            raise InputError(
                f"samples[{i}] (id {samples[i].id!r}) has no scored next-token target "
                f"({ids[i].size} tokens after truncation to {max_length}); give it at least 2 "
                "tokens with a scored token after the first (and after any prompt)."
            )
        raise InputError(
            f"samples[{i}] (id {samples[i].id!r}) has token id {int(ids[i].max())} but the model's "
            f"vocabulary has {vocab_size} ids; use the model's own tokenizer."
        )
    return Encoded(ids=ids, scored=scored, truncated=lengths > max_length)
