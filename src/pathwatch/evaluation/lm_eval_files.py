"""lm-evaluation-harness output as the harness writes it: ``results_*.json`` and ``samples_*.jsonl``.

lm-eval writes ``<output_path>/<model name>/results_<date>.json`` and, with ``--log_samples``, one
``samples_<task>_<date>.jsonl`` per task beside it. What pathwatch reads from them:

- the **step** only from an explicit word (:func:`pathwatch.steps.step_from_name`): the model's
  ``revision=`` / ``pretrained=`` in the results' ``config.model_args``, else the file's directory or
  the one above it. A name that merely ends in a number (``OLMoE-1B-7B-0924``, a snapshot hash) gives
  no step; two sources stating different steps are an error. Each file says where its step came from.
- the **task** (a results key, or the samples file's name), later mapped to a probe domain;
- per item (samples): the id from the doc's ``item_id_field`` (default ``id``) when the docs have
  one, else ``<task>/<doc_id>``; correctness from the metric (``acc``, ``exact_match``, ``acc_norm``
  by preference, or the one named) under one filter (``none`` first, or the one named).

Every table these readers return carries the ``file`` it came from, so that duplicates and bad
steps can be named by file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from pathwatch._files import read_json, read_jsonl
from pathwatch.errors import InputError
from pathwatch.steps import STEP_NAME_EXAMPLES, step_from_name

LM_EVAL_METRICS = ("acc", "exact_match", "acc_norm")
"""Metrics read from lm-eval files when none is named, in order of preference."""
_WHAT = "accuracy file"
_DATE_ID = re.compile(r"_(\d{4}-\d{2}-\d{2}T[\d\-.]+)$")
_MODEL_KEYS = ("revision", "pretrained", "path", "model")


def is_results(path: Path) -> bool:
    """Whether ``path`` is named like lm-eval's aggregated results.

    >>> is_results(Path("step-5/model/results_2026-11-25T12-30-05.json"))
    True
    """
    return path.name.startswith("results_") and path.suffix.lower() == ".json"


def is_samples(path: Path) -> bool:
    """Whether ``path`` is named like one of lm-eval's ``--log_samples`` files."""
    return path.name.startswith("samples_") and path.suffix.lower() == ".jsonl"


def _model_args(results: Mapping[str, Any] | None) -> str:
    args = (results or {}).get("config", {}).get("model_args", "") or ""
    if isinstance(args, dict):
        args = ",".join(f"{k}={v}" for k, v in args.items())
    return str(args)


def lm_eval_step(path: Path, results: Mapping[str, Any] | None) -> tuple[int, str]:
    """(step, where it came from) of an lm-eval file: model_args, else the nearest directory.

    Raises InputError naming the file when nothing states a step, or when model_args and the
    directory state different steps.

    >>> args = {"config": {"model_args": "pretrained=allenai/OLMoE-1B-7B-0924,revision=step5000-tokens20B"}}
    >>> lm_eval_step(Path("evals/OLMoE/results_x.json"), args)
    (5000, 'model_args revision=step5000-tokens20B')
    """
    args = _model_args(results)
    stated = None
    for key in _MODEL_KEYS:
        match = re.search(rf"(?:^|,){key}=([^,]+)", args)
        if match and (step := step_from_name(match.group(1))) is not None:
            stated = (step, f"model_args {key}={match.group(1)}")
            break
    folder = None
    for part in reversed(path.parent.resolve().parts[-2:]):  # lm-eval's model dir and the one above
        if (step := step_from_name(part)) is not None:
            folder = (step, f"directory {part!r}")
            break
    if stated and folder and stated[0] != folder[0]:
        raise InputError(
            f"{path}: {stated[1]} states step {stated[0]} but its {folder[1]} states step "
            f"{folder[0]}. Move the file into its checkpoint's directory."
        )
    if found := stated or folder:
        return found
    names = [m.group(1) for k in _MODEL_KEYS if (m := re.search(rf"(?:^|,){k}=([^,]+)", args))]
    seen = (
        f" (model_args {names[0]!r} states none: a trailing date or hash is no step)"
        if names
        else ""
    )
    raise InputError(
        f"{path}: cannot tell the checkpoint step{seen}: no 'revision=step<N>' in config.model_args "
        f"and no directory named like {STEP_NAME_EXAMPLES}. Put each checkpoint's files in a "
        "directory named after its step (pathwatch evaluate does)."
    )


def _fail(where: str, message: str) -> InputError:
    return InputError(f"{where}: {message}")


def _pick_metric(available: Iterable[str], metric: str | None, flt: str | None, where: str) -> str:
    """The lm-eval key to read: ``name`` or ``name,filter``; by preference unless named."""
    keys = [k for k in available if "_stderr" not in k]
    wanted = (metric,) if metric else LM_EVAL_METRICS
    for name in wanted:
        exact = [k for k in keys if k == name and flt is None]
        filtered = sorted(
            (
                k
                for k in keys
                if k.split(",")[0] == name and (flt is None or k.partition(",")[2] == flt)
            ),
            key=lambda k: k != f"{name},none",
        )
        if exact or filtered:
            return (exact or filtered)[0]
    with_filter = f" with filter {flt!r}" if flt else ""
    raise _fail(
        where,
        f"no metric {' / '.join(wanted)}{with_filter} among {sorted(keys)}. Name one with "
        "--metric NAME (and --filter FILTER).",
    )


def read_results(
    path: Path, metric: str | None, flt: str | None, check: Any
) -> tuple[pl.DataFrame, int, str]:
    """``step, task, accuracy, n_items, file`` of a results_*.json, its step and the step's source.

    ``check(record, key, where)`` validates an accuracy value (the accuracy module's field check).
    """
    data = read_json(path, _WHAT)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or not results:
        raise _fail(
            str(path), "field 'results' is missing or empty; expected lm-eval's results_*.json."
        )
    step, source = lm_eval_step(path, data)
    n_samples = data.get("n-samples", {})
    rows = []
    for task, values in results.items():
        where = f"{path}: results.{task}"
        numbers = [k for k, v in values.items() if isinstance(v, int | float)]
        key = _pick_metric(numbers, metric, flt, where)
        n = n_samples.get(task, {}).get("effective") if isinstance(n_samples, dict) else None
        rows.append((step, task, check(values, key, where), n, str(path)))
    schema = {"step": pl.Int64, "domain": pl.String, "accuracy": pl.Float64}
    schema |= {"n_items": pl.Int64, "file": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row"), step, source


def _item_id(record: Mapping[str, Any], task: str, field: str | None, where: str) -> str:
    """The item's id: the doc's ``field`` when the file uses one, else ``task/doc_id``."""
    if field is None:
        doc_id = record.get("doc_id")
        if isinstance(doc_id, bool) or not isinstance(doc_id, int | str) or doc_id == "":
            raise _fail(where, f"field 'doc_id' must be an item id; got {doc_id!r}.")
        return f"{task}/{doc_id}"
    value = (record.get("doc") or {}).get(field)
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise _fail(
            where,
            f"doc field {field!r} must be an item id (string or integer) on every line, as on "
            f"the first; got {value!r}. Fill it, or name another with --item-id-field.",
        )
    return str(value)


def _id_field(first: Mapping[str, Any], field: str, default: str, where: str) -> str | None:
    """The doc field a samples file takes its ids from (None: ``task/doc_id``), from its first line."""
    doc = first.get("doc")
    if isinstance(doc, dict) and field in doc:
        return field
    if field == default:
        return None
    fields = sorted(doc) if isinstance(doc, dict) else []
    raise _fail(
        where,
        f"the docs have no field {field!r} for --item-id-field (they have {fields}). Name one "
        f"of them, or leave the option at {default!r}.",
    )


def read_samples(
    path: Path,
    metric: str | None,
    flt: str | None,
    id_field: str,
    default_id_field: str,
    check: Any,
) -> tuple[pl.DataFrame, int, str]:
    """``step, task, item_id, correct, file`` of a samples_*.jsonl, its step and the step's source.

    ``check(record, key, where)`` validates a 0/1 value (the accuracy module's field check).
    """
    date = _DATE_ID.search(path.stem)
    task = path.stem[len("samples_") : date.start()] if date else path.stem[len("samples_") :]
    sibling = path.with_name(f"results_{date.group(1)}.json") if date else None
    step, source = lm_eval_step(
        path, read_json(sibling, _WHAT) if sibling and sibling.is_file() else None
    )
    rows, chosen, key, field = [], None, None, None
    for number, record in read_jsonl(path, _WHAT):
        where = f"{path}:{number}"
        record_filter = record.get("filter", "none")
        if chosen is None:
            available = record.get("metrics") or [k for k, v in record.items() if _number(v)]
            key = _pick_metric(available, metric, None, where)
            chosen = flt or record_filter
            field = _id_field(record, id_field, default_id_field, where)
        if record_filter != chosen:
            continue
        item = _item_id(record, task, field, where)
        rows.append((step, task, item, check(record, key, where), str(path)))
    if not rows:
        raise _fail(
            str(path), f"no samples with filter {chosen!r}. Name one of the file's with --filter."
        )
    schema = {"step": pl.Int64, "domain": pl.String, "item_id": pl.String}
    schema |= {"correct": pl.Int8, "file": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row"), step, source


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def lm_eval_files(directory: Path) -> tuple[list[Path], list[str]]:
    """The lm-eval files to read under ``directory``, and a note per results-only checkpoint.

    Per directory (one per checkpoint, as lm-eval writes): its ``samples_*.jsonl`` where it has
    any (per-item correctness), else its ``results_*.json`` (per-checkpoint accuracy only).
    """
    samples = sorted(directory.rglob("samples_*.jsonl"))
    results = sorted(directory.rglob("results_*.json"))
    with_samples = {p.parent for p in samples}
    results_only = [p for p in results if p.parent not in with_samples]
    notes = []
    if samples:
        for folder in sorted({p.parent for p in results_only}):
            notes.append(
                f"{folder}: no samples_*.jsonl (lm-eval --log_samples), so its results_*.json "
                "give this checkpoint's accuracy but no per-item correctness"
            )
    return sorted(samples + results_only), notes
