"""Read per-checkpoint accuracy, the ground truth the routing metrics are validated against (SPEC §2.3).

Accepted inputs (``--accuracy FILE``; a directory is searched recursively for the lm-eval files):

- per checkpoint: CSV, or JSON records, with ``step``, ``domain``, ``accuracy`` (optional ``n_items``);
- per item: JSONL with ``step``, ``domain``, ``item_id``, ``correct`` (0/1);
- lm-evaluation-harness: ``results_*.json`` (accuracy from ``results`` → task → ``"acc,none"``
  etc.) and ``samples_*.jsonl`` from ``--log_samples`` (per item: ``doc_id`` and the metric).
  The task is the domain. The step comes from the model's ``revision=`` (e.g. ``step5000-tokens20B``)
  or path in the results' ``config.model_args``, else from the file's directory or the one above it
  (lm-eval writes into ``<output_path>/<model name>/``): the nearest whose name holds ``step<N>`` /
  ``checkpoint-<N>`` or ends in a number.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pathwatch._files import read_json, read_jsonl, require_path, unreadable
from pathwatch._validate import check_paths, check_text
from pathwatch.dynamics.onsets import generalization_onset
from pathwatch.errors import InputError, invalid_parameter
from pathwatch.steps import STEP_NAME_EXAMPLES, step_from_name

ACCURACY_SCHEMA = {
    "step": pl.Int64,
    "domain": pl.String,
    "accuracy": pl.Float64,
    "n_items": pl.Int64,
}
CORRECTNESS_SCHEMA = {
    "step": pl.Int64,
    "domain": pl.String,
    "item_id": pl.String,
    "correct": pl.Int8,
}
LM_EVAL_METRICS = ("acc", "exact_match", "acc_norm")
_WHAT = "accuracy file"  # how file errors name these files
"""Metrics read from lm-eval files when none is named, in order of preference."""

_DATE_ID = re.compile(r"_(\d{4}-\d{2}-\d{2}T[\d\-.]+)$")


@dataclass(frozen=True)
class AccuracyTables:
    """Accuracy read from one or more files.

    Attributes
    ----------
    accuracy : polars.DataFrame
        ``step, domain, accuracy, n_items`` (n_items null when the file does not say), sorted.
    correctness : polars.DataFrame or None
        ``step, domain, item_id, correct`` for per-item inputs, else None.
    sources : tuple of str
        The files read.
    """

    accuracy: pl.DataFrame
    correctness: pl.DataFrame | None
    sources: tuple[str, ...]


def _fail(where: str, message: str) -> InputError:
    return InputError(f"{where}: {message}")


_CHECKS = {
    "step": lambda v: v >= 0 and v == int(v),
    "n_items": lambda v: v >= 0 and v == int(v),
    "accuracy": lambda v: 0 <= v <= 1,
    "correct": lambda v: v in (0, 1),
}


def _field(record: Mapping[str, Any], name: str, where: str, *, kind: str | None = None) -> Any:
    """Field ``name`` of a record, validated as the ``kind`` of _KINDS (default: the field's own)."""
    kind = kind or name
    expected = _KINDS[kind]
    value = record.get(name)
    if value is None or value == "":
        raise _fail(where, f"field {name!r} is missing; expected {expected}. Add it.")
    if kind in ("domain", "item_id"):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _fail(where, f"field {name!r} must be {expected}; got {value!r}.")
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(where, f"field {name!r} must be {expected}; got {value!r}.") from None
    if isinstance(value, bool) or not np.isfinite(number) or not _CHECKS[kind](number):
        raise _fail(where, f"field {name!r} must be {expected}; got {value!r}.")
    return number if kind == "accuracy" else int(number)


_KINDS = {
    "step": "a non-negative integer checkpoint step",
    "domain": "a domain name",
    "accuracy": "a number in [0, 1]",
    "n_items": "a non-negative integer",
    "item_id": "an item id (string or integer)",
    "correct": "0 or 1",
}


def _records(rows: Iterable[tuple[str, Mapping[str, Any]]], fields: tuple[str, ...]) -> list[tuple]:
    return [tuple(_field(row, f, where) for f in fields) for where, row in rows]


def _read_table(path: Path) -> pl.DataFrame:
    """Per-checkpoint CSV or JSON records."""
    if path.suffix.lower() == ".csv":
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                rows = [(f"{path}:{n}", r) for n, r in enumerate(csv.DictReader(handle), start=2)]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _fail(str(path), f"not a readable CSV file ({exc}).") from exc
    else:
        data = read_json(path, _WHAT)
        if not isinstance(data, list):
            raise _fail(str(path), "expected a JSON list of records with step, domain, accuracy.")
        rows = [
            (f"{path}: record {i}", r if isinstance(r, dict) else {}) for i, r in enumerate(data)
        ]
    if not rows:
        raise _fail(str(path), "no rows; expected columns step, domain, accuracy.")
    has_n = "n_items" in rows[0][1]
    fields = ("step", "domain", "accuracy", *(("n_items",) if has_n else ()))
    table = pl.DataFrame(_records(rows, fields), schema=dict.fromkeys(fields), orient="row")
    if not has_n:
        table = table.with_columns(n_items=pl.lit(None))
    return table.cast(ACCURACY_SCHEMA).select(list(ACCURACY_SCHEMA))


def _read_items(path: Path) -> pl.DataFrame:
    """Per-item JSONL: step, domain, item_id, correct."""
    rows = [(f"{path}:{n}", r) for n, r in read_jsonl(path, _WHAT)]
    if not rows:
        raise _fail(
            str(path), "no lines; expected JSON objects with step, domain, item_id, correct."
        )
    fields = tuple(CORRECTNESS_SCHEMA)
    return pl.DataFrame(_records(rows, fields), schema=CORRECTNESS_SCHEMA, orient="row")


def _lm_eval_step(path: Path, results: Mapping[str, Any] | None) -> int:
    """Checkpoint step of an lm-eval file: model_args revision/path, then the nearest directory."""
    args = (results or {}).get("config", {}).get("model_args", "") or ""
    if isinstance(args, dict):
        args = ",".join(f"{k}={v}" for k, v in args.items())
    for key in ("revision", "pretrained", "path", "model"):
        match = re.search(rf"(?:^|,){key}=([^,]+)", str(args))
        step = step_from_name(match.group(1)) if match else None
        if step is not None:
            return step
    for part in reversed(path.parent.resolve().parts[-2:]):  # lm-eval's model dir and the one above
        if (step := step_from_name(part)) is not None:
            return step
    raise _fail(
        str(path),
        "cannot tell the checkpoint step: no 'revision=step<N>' in config.model_args and no "
        f"directory named like {STEP_NAME_EXAMPLES}. Put each checkpoint's files "
        "in a directory named after its step.",
    )


def _pick_metric(available: Iterable[str], metric: str | None, where: str) -> str:
    """The lm-eval key to read: ``metric`` if given (``name`` or ``name,filter``), else by preference."""
    if isinstance(available, Mapping):  # a results entry: metric keys hold numbers
        available = [k for k, v in available.items() if isinstance(v, int | float)]
    keys = [k for k in available if "_stderr" not in k]
    wanted = (metric,) if metric else LM_EVAL_METRICS
    for name in wanted:
        exact = [k for k in keys if k == name]
        filtered = sorted(
            (k for k in keys if k.split(",")[0] == name), key=lambda k: k != f"{name},none"
        )
        if exact or filtered:
            return (exact or filtered)[0]
    raise _fail(
        where,
        f'no metric {" / ".join(wanted)} among {sorted(keys)}. Name one with metric="<name>[,<filter>]".',
    )


def _read_lm_eval_results(path: Path, metric: str | None) -> pl.DataFrame:
    data = read_json(path, _WHAT)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or not results:
        raise _fail(
            str(path), "field 'results' is missing or empty; expected lm-eval's results_*.json."
        )
    step = _lm_eval_step(path, data)
    n_samples = data.get("n-samples", {})
    rows = []
    for task, values in results.items():
        where = f"{path}: results.{task}"
        key = _pick_metric(values, metric, where)
        value = _field(values, key, where, kind="accuracy")
        n = n_samples.get(task, {}).get("effective") if isinstance(n_samples, dict) else None
        rows.append((step, task, value, n))
    return pl.DataFrame(rows, schema=ACCURACY_SCHEMA, orient="row")


def _read_lm_eval_samples(path: Path, metric: str | None) -> pl.DataFrame:
    date = _DATE_ID.search(path.stem)
    task = path.stem[len("samples_") : date.start()] if date else path.stem[len("samples_") :]
    sibling = path.with_name(f"results_{date.group(1)}.json") if date else None
    step = _lm_eval_step(path, read_json(sibling, _WHAT) if sibling and sibling.is_file() else None)
    rows, chosen_filter, key = [], None, None
    for number, record in read_jsonl(path, _WHAT):
        where = f"{path}:{number}"
        flt = record.get("filter", "none")
        if chosen_filter is None:
            key = _pick_metric(
                record.get("metrics") or record, metric and metric.split(",")[0], where
            )
            wanted = metric.split(",")[1] if metric and "," in metric else None
            chosen_filter = wanted or flt
        if flt != chosen_filter:
            continue
        item = _field(record, "doc_id", where, kind="item_id")
        rows.append((step, task, item, _field(record, key, where, kind="correct")))
    if not rows:
        raise _fail(str(path), f"no samples with filter {chosen_filter!r}.")
    return pl.DataFrame(rows, schema=CORRECTNESS_SCHEMA, orient="row")


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    require_path(
        path, "Accuracy file", "pass an existing accuracy file or lm-eval directory", directory=True
    )
    samples = sorted(path.rglob("samples_*.jsonl"))
    files = samples or sorted(path.rglob("results_*.json"))
    if not files:
        raise _fail(
            str(path), "directory holds no lm-eval results_*.json or samples_*.jsonl files."
        )
    return files


def _accuracy_from_items(correctness: pl.DataFrame) -> pl.DataFrame:
    return (
        correctness.group_by("step", "domain", maintain_order=True)
        .agg(accuracy=pl.col("correct").cast(pl.Float64).mean(), n_items=pl.len().cast(pl.Int64))
        .select(list(ACCURACY_SCHEMA))
    )


def _no_duplicates(table: pl.DataFrame, keys: list[str], what: str) -> None:
    dup = table.filter(table.select(keys).is_duplicated())
    if dup.height:
        first = dup.row(0, named=True)
        raise InputError(
            f"two {what} for "
            + ", ".join(f"{k}={first[k]!r}" for k in keys)
            + ". Keep one per key."
        )


def _read_file(file: Path, metric: str | None) -> tuple[str, pl.DataFrame]:
    """("items", correctness) or ("table", accuracy) from one file, by its name."""
    name, suffix = file.name, file.suffix.lower()
    if name.startswith("samples_") and suffix == ".jsonl":
        return "items", _read_lm_eval_samples(file, metric)
    if name.startswith("results_") and suffix == ".json":
        return "table", _read_lm_eval_results(file, metric)
    if suffix == ".jsonl":
        return "items", _read_items(file)
    if suffix in (".csv", ".json"):
        return "table", _read_table(file)
    raise _fail(str(file), "unknown accuracy file type; expected .csv, .json or .jsonl.")


def read_accuracy(
    paths: str | Path | Iterable[str | Path],
    *,
    metric: str | None = None,
    domains: Mapping[str, str] | None = None,
) -> AccuracyTables:
    """Read per-checkpoint accuracy and, from per-item files, per-item correctness.

    Parameters
    ----------
    paths : path or iterable of paths
        Files (per-checkpoint CSV/JSON, per-item JSONL, lm-eval ``results_*.json`` /
        ``samples_*.jsonl``) or directories holding lm-eval files (``samples_*`` preferred, one
        directory per checkpoint).
    metric : str, optional
        lm-eval metric, ``"name"`` or ``"name,filter"``; default the first of acc, exact_match,
        acc_norm present (filter ``none`` first).
    domains : mapping of str to str, optional
        Renames domains (e.g. lm-eval task → domain); tasks mapped to one domain are pooled, and
        item ids become ``"<task>/<item_id>"`` so that they stay distinct.

    Returns
    -------
    AccuracyTables
        ``accuracy`` (step, domain, accuracy, n_items) and ``correctness`` (step, domain,
        item_id, correct) or None.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "acc.csv"
    >>> _ = path.write_text("step,domain,accuracy\\n100,math,0.2\\n200,math,0.6\\n")
    >>> read_accuracy(path).accuracy.rows()
    [(100, 'math', 0.2, None), (200, 'math', 0.6, None)]
    """
    paths = check_paths("read_accuracy", "paths", paths)
    check_text("read_accuracy", "metric", metric, allow_none=True)
    if domains is not None and not (
        isinstance(domains, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) and v for k, v in domains.items())
    ):
        raise invalid_parameter(
            "read_accuracy", "domains", "None or a mapping of task to domain name", domains
        )
    files = [f for p in paths for f in _files(p)]
    tables, items = [], []
    for file in files:
        try:
            kind, table = _read_file(file, metric)
        except (OSError, UnicodeDecodeError) as exc:
            raise unreadable(file, _WHAT, exc) from exc
        (items if kind == "items" else tables).append(table)
    rename = pl.col("domain").replace(dict(domains)) if domains else pl.col("domain")
    tables = [table.with_columns(rename) for table in tables]
    correctness = None
    if items:
        correctness = pl.concat(items)
        if domains:  # items of tasks pooled into one domain keep distinct ids
            correctness = correctness.with_columns(
                item_id=pl.col("domain") + "/" + pl.col("item_id"), domain=rename
            )
        _no_duplicates(correctness, ["step", "domain", "item_id"], "results")
        correctness = correctness.sort("domain", "item_id", "step")
        tables.append(_accuracy_from_items(correctness))
    accuracy = pl.concat(tables)
    _no_duplicates(accuracy, ["step", "domain"], "accuracy rows")
    return AccuracyTables(accuracy.sort("domain", "step"), correctness, tuple(map(str, files)))


def correctness_matrix(
    correctness: pl.DataFrame,
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Pivot long correctness into a matrix for :func:`generalization_onset`.

    Parameters
    ----------
    correctness : polars.DataFrame
        ``step, domain, item_id, correct``, one row per (item, step).

    Returns
    -------
    items : polars.DataFrame
        ``item_id, domain`` of the M rows, sorted.
    steps : int array of shape (T,)
        Checkpoint steps, ascending.
    correct : int8 array of shape (M, T)

    Examples
    --------
    >>> long = pl.DataFrame({"step": [2, 1, 1, 2], "domain": "math", "item_id": ["b", "b", "a", "a"],
    ...                      "correct": [1, 0, 1, 1]})
    >>> items, steps, correct = correctness_matrix(long)
    >>> items["item_id"].to_list(), steps.tolist(), correct.tolist()
    (['a', 'b'], [1, 2], [[1, 1], [0, 1]])
    """
    if not isinstance(correctness, pl.DataFrame) or set(CORRECTNESS_SCHEMA) - set(
        correctness.columns
    ):
        raise invalid_parameter(
            "correctness_matrix",
            "correctness",
            f"a polars DataFrame with columns {', '.join(CORRECTNESS_SCHEMA)}",
            correctness,
        )
    wide = correctness.pivot(
        "step", index=["item_id", "domain"], values="correct", sort_columns=True
    )
    step_cols = [c for c in wide.columns if c not in ("item_id", "domain")]
    steps = np.array(sorted(int(c) for c in step_cols), dtype=np.int64)
    wide = wide.sort("domain", "item_id")
    matrix = wide.select([str(s) for s in steps])
    missing = matrix.select(pl.all().is_null().any()).row(0)
    if any(missing):
        step = steps[missing.index(True)]
        row = wide.filter(pl.col(str(step)).is_null()).row(0, named=True)
        raise InputError(
            f"item {row['item_id']!r} of domain {row['domain']!r} has no result at step {step}; "
            "generalization onsets need every item at every checkpoint. Evaluate it or drop it."
        )
    return wide.select("item_id", "domain"), steps, matrix.to_numpy().astype(np.int8)


def generalization_table(correctness: pl.DataFrame) -> pl.DataFrame:
    """Generalization onset of every test item: the ``test_onsets`` table.

    Parameters
    ----------
    correctness : polars.DataFrame
        ``step, domain, item_id, correct`` (see :func:`read_accuracy`).

    Returns
    -------
    polars.DataFrame
        ``item_id, domain, gen_onset`` (step, or -1 when the item never generalizes).

    Examples
    --------
    >>> long = pl.DataFrame({"step": [1, 2, 3] * 2, "domain": "math", "item_id": ["a"] * 3 + ["b"] * 3,
    ...                      "correct": [0, 1, 1, 1, 0, 0]})
    >>> generalization_table(long).rows()
    [('a', 'math', 2), ('b', 'math', -1)]
    """
    items, steps, correct = correctness_matrix(correctness)
    return items.with_columns(gen_onset=pl.Series(generalization_onset(correct, steps)))
