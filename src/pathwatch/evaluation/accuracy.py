"""Read per-checkpoint accuracy, the ground truth the routing metrics are validated against (SPEC §2.3).

Accepted inputs (``--accuracy FILE``; a directory is searched recursively for the lm-eval files):

- per checkpoint: CSV, or JSON records, with ``step``, ``domain``, ``accuracy`` (optional ``n_items``);
- per item: JSONL with ``step``, ``domain``, ``item_id``, ``correct`` (0/1);
- lm-evaluation-harness: ``results_*.json`` and ``--log_samples`` ``samples_*.jsonl``
  (:mod:`pathwatch.evaluation.lm_eval_files`: steps only from an explicit word, item ids from the
  doc, one checkpoint per directory). The task is the domain unless ``domains`` maps it.

Every file's steps are recorded with where they came from (``AccuracyTables.steps``), so that the
analysis can say which steps it read and refuse those the run lacks, naming the file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pathwatch._files import read_json, read_jsonl, require_path, unreadable
from pathwatch._validate import check_paths, check_text
from pathwatch.dynamics.onsets import generalization_onset
from pathwatch.errors import InputError, invalid_parameter
from pathwatch.evaluation import lm_eval_files as lm_eval
from pathwatch.evaluation.lm_eval_files import LM_EVAL_METRICS

__all__ = [
    "ACCURACY_SCHEMA",
    "CORRECTNESS_SCHEMA",
    "DEFAULT_ITEM_ID_FIELD",
    "LM_EVAL_METRICS",
    "AccuracyTables",
    "correctness_matrix",
    "generalization_table",
    "read_accuracy",
    "read_domain_map",
]

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
STEPS_SCHEMA = {"file": pl.String, "step": pl.Int64, "source": pl.String}
DEFAULT_ITEM_ID_FIELD = "id"
"""The lm-eval doc field item ids are read from when the docs have it (else ``task/doc_id``)."""
_WHAT = "accuracy file"  # how file errors name these files


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
    steps : polars.DataFrame
        ``file, step, source``: each file's steps and where each came from (a field, the
        model_args, a directory name).
    notes : tuple of str
        What the reading chose (e.g. a checkpoint read from results only).
    """

    accuracy: pl.DataFrame
    correctness: pl.DataFrame | None
    sources: tuple[str, ...]
    steps: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=STEPS_SCHEMA))
    notes: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class _Options:
    """How lm-eval files are read: metric, filter, item id field."""

    metric: str | None
    flt: str | None
    item_id_field: str


def _read_file(file: Path, options: _Options) -> tuple[str, pl.DataFrame, pl.DataFrame]:
    """("items" or "table", its rows with a ``file`` column, its steps) from one file, by name."""
    suffix = file.suffix.lower()
    if lm_eval.is_samples(file):
        table, step, source = lm_eval.read_samples(
            file,
            options.metric,
            options.flt,
            options.item_id_field,
            DEFAULT_ITEM_ID_FIELD,
            lambda r, k, w: _field(r, k, w, kind="correct"),
        )
        return "items", table, _steps(file, [step], source)
    if lm_eval.is_results(file):
        table, step, source = lm_eval.read_results(
            file, options.metric, options.flt, lambda r, k, w: _field(r, k, w, kind="accuracy")
        )
        return "table", table, _steps(file, [step], source)
    if suffix == ".jsonl":
        kind, table = "items", _read_items(file)
    elif suffix in (".csv", ".json"):
        kind, table = "table", _read_table(file)
    else:
        raise _fail(str(file), "unknown accuracy file type; expected .csv, .json or .jsonl.")
    steps = sorted(table["step"].unique().to_list())
    table = table.with_columns(file=pl.lit(str(file)))
    return kind, table, _steps(file, steps, f"field 'step' of {file.name}")


def _steps(file: Path, steps: list[int], source: str) -> pl.DataFrame:
    return pl.DataFrame({"file": str(file), "step": steps, "source": source}, schema=STEPS_SCHEMA)


def _files(path: Path) -> tuple[list[Path], list[str]]:
    """The files behind one ``paths`` entry, and notes on what a directory's reading chose."""
    if path.is_file():
        return [path], []
    require_path(
        path, "Accuracy file", "pass an existing accuracy file or lm-eval directory", directory=True
    )
    files, notes = lm_eval.lm_eval_files(path)
    if not files:
        raise _fail(
            str(path), "directory holds no lm-eval results_*.json or samples_*.jsonl files."
        )
    return files, notes


def _accuracy_from_items(correctness: pl.DataFrame) -> pl.DataFrame:
    return (
        correctness.group_by("step", "domain", maintain_order=True)
        .agg(
            accuracy=pl.col("correct").cast(pl.Float64).mean(),
            n_items=pl.len().cast(pl.Int64),
            file=pl.col("file").first(),
        )
        .select(*ACCURACY_SCHEMA, "file")
    )


def _no_duplicates(table: pl.DataFrame, keys: list[str], what: str) -> None:
    """InputError naming the key and the files of the first row that occurs twice."""
    dup = table.filter(table.select(keys).is_duplicated())
    if not dup.height:
        return
    first = dup.row(0, named=True)
    same = dup.filter(pl.all_horizontal([pl.col(k) == first[k] for k in keys]))
    files = list(dict.fromkeys(same["file"]))
    where = f"in {files[0]} and {files[1]}" if len(files) > 1 else f"twice in {files[0]}"
    tasks = sorted(set(same["task"])) if "task" in same.columns else []
    if len(tasks) > 1:
        fix = (
            f" (tasks {', '.join(map(repr, tasks))} map to one domain). Give their items "
            "distinct ids, or map the tasks to distinct domains."
        )
    else:
        fix = ". Keep one per key (e.g. remove an older lm-eval run of that checkpoint)."
    raise InputError(
        f"two {what} for " + ", ".join(f"{k}={first[k]!r}" for k in keys) + f" {where}{fix}"
    )


def _pool_tables(table: pl.DataFrame) -> pl.DataFrame:
    """One row per (step, domain): rows of tasks mapped to one domain averaged by their n_items."""
    grouped = table.group_by("step", "domain", maintain_order=True).agg(
        rows=pl.len(),
        unknown_n=pl.col("n_items").null_count(),
        pooled=(pl.col("accuracy") * pl.col("n_items")).sum() / pl.col("n_items").sum(),
        accuracy=pl.col("accuracy").first(),
        n_items=pl.col("n_items").sum(),
        first_n=pl.col("n_items").first(),
        file=pl.col("file").first(),
        tasks=pl.col("task"),
    )
    bad = grouped.filter((pl.col("rows") > 1) & (pl.col("unknown_n") > 0))
    if bad.height:
        row = bad.row(0, named=True)
        raise InputError(
            f"{row['file']}: tasks {row['tasks']} map to domain {row['domain']!r} but not all "
            f"say how many items they have (n_items), so step {row['step']} cannot be pooled. "
            "Give per-item files (lm-eval --log_samples) or map them to distinct domains."
        )
    many = pl.col("rows") > 1
    return grouped.select(
        "step",
        "domain",
        accuracy=pl.when(many).then("pooled").otherwise("accuracy"),
        n_items=pl.when(many).then("n_items").otherwise("first_n"),
        file="file",
    )


def _check_domain_map(domains: Mapping[str, str], tasks: set[str]) -> None:
    unknown = sorted(set(domains) - tasks)
    if unknown:
        raise invalid_parameter(
            "read_accuracy",
            "domains",
            f"tasks of the accuracy files ({', '.join(sorted(tasks))}) as keys",
            unknown if len(unknown) > 1 else unknown[0],
        )


def read_accuracy(
    paths: str | Path | Iterable[str | Path],
    *,
    metric: str | None = None,
    metric_filter: str | None = None,
    domains: Mapping[str, str] | None = None,
    item_id_field: str = DEFAULT_ITEM_ID_FIELD,
) -> AccuracyTables:
    """Read per-checkpoint accuracy and, from per-item files, per-item correctness.

    Parameters
    ----------
    paths : path or iterable of paths
        Files (per-checkpoint CSV/JSON, per-item JSONL, lm-eval ``results_*.json`` /
        ``samples_*.jsonl``) or directories holding lm-eval files, one directory per checkpoint
        (its ``samples_*`` where it has any, else its ``results_*``, with a note).
    metric : str, optional
        lm-eval metric, ``"name"`` or ``"name,filter"``; default the first of acc, exact_match,
        acc_norm present.
    metric_filter : str, optional
        lm-eval filter of the metric (e.g. ``"strict-match"``); default ``none`` first, else the
        first the file has.
    domains : mapping of str to str, optional
        Renames domains (e.g. lm-eval task → domain); tasks mapped to one domain are pooled
        (items kept apart by their ids; per-checkpoint rows averaged over their n_items).
    item_id_field : str, default "id"
        lm-eval doc field holding the item's id; docs without it give ``<task>/<doc_id>``.

    Returns
    -------
    AccuracyTables
        ``accuracy`` (step, domain, accuracy, n_items), ``correctness`` (step, domain,
        item_id, correct) or None, the files, their steps and where each came from.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "acc.csv"
    >>> _ = path.write_text("step,domain,accuracy\\n100,math,0.2\\n200,math,0.6\\n")
    >>> read_accuracy(path).accuracy.rows()
    [(100, 'math', 0.2, None), (200, 'math', 0.6, None)]
    """
    func = "read_accuracy"
    paths = check_paths(func, "paths", paths)
    check_text(func, "metric", metric, allow_none=True)
    check_text(func, "metric_filter", metric_filter, allow_none=True)
    check_text(func, "item_id_field", item_id_field)
    if domains is not None and not (
        isinstance(domains, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) and v for k, v in domains.items())
    ):
        raise invalid_parameter(
            func, "domains", "None or a mapping of task to domain name", domains
        )
    if metric and "," in metric:
        if metric_filter is not None:
            raise invalid_parameter(
                func, "metric_filter", "None when metric names a filter", metric_filter
            )
        metric, metric_filter = metric.split(",", 1)
    options = _Options(metric, metric_filter, item_id_field)
    found = [_files(p) for p in paths]
    files = [f for fs, _ in found for f in fs]
    notes = tuple(note for _, ns in found for note in ns)
    tables, items, steps = [], [], []
    for file in files:
        try:
            kind, table, file_steps = _read_file(file, options)
        except (OSError, UnicodeDecodeError) as exc:
            raise unreadable(file, _WHAT, exc) from exc
        (items if kind == "items" else tables).append(table.with_columns(task=pl.col("domain")))
        steps.append(file_steps)
    if domains:
        _check_domain_map(domains, {t for f in tables + items for t in f["task"].unique()})
    rename = pl.col("domain").replace(dict(domains)) if domains else pl.col("domain")
    correctness = None
    frames = []
    if tables:
        table = pl.concat(tables)
        _no_duplicates(table, ["step", "domain"], "accuracy rows")  # one per (step, task)
        frames.append(_pool_tables(table.with_columns(rename)))
    if items:
        correctness = pl.concat(items).with_columns(rename)
        _no_duplicates(correctness, ["step", "domain", "item_id"], "results")
        correctness = correctness.sort("domain", "item_id", "step")
        frames.append(_accuracy_from_items(correctness))
        correctness = correctness.select(list(CORRECTNESS_SCHEMA))
    accuracy = pl.concat(frames)
    _no_duplicates(accuracy, ["step", "domain"], "accuracy rows")
    return AccuracyTables(
        accuracy.select(list(ACCURACY_SCHEMA)).sort("domain", "step"),
        correctness,
        tuple(map(str, files)),
        pl.concat(steps),
        notes,
    )


def read_domain_map(specs: Iterable[str]) -> dict[str, str]:
    """Task → domain from ``--domain-map`` values: ``TASK=DOMAIN``, or a file of them.

    A file holds one ``TASK=DOMAIN`` per line (blank lines and ``#`` comments skipped) or a JSON
    object; a task mapped twice is an error.

    Examples
    --------
    >>> read_domain_map(["arith_add=add", "arith_mul=mul"])
    {'arith_add': 'add', 'arith_mul': 'mul'}
    """
    mapping: dict[str, str] = {}
    for spec in specs:
        if "=" in spec and not Path(spec).is_file():
            pairs = [(spec, spec)]
        else:
            pairs = _domain_map_file(Path(spec))
        for where, text in pairs:
            task, _, domain = (part.strip() for part in text.partition("="))
            if not task or not domain:
                raise InputError(
                    f"--domain-map {where!r}: expected TASK=DOMAIN (or a file of such lines, or "
                    "a JSON object), e.g. 'arith_add=add'."
                )
            if mapping.get(task, domain) != domain:
                raise InputError(
                    f"--domain-map {where!r}: task {task!r} is already mapped to "
                    f"{mapping[task]!r}. Map each task once."
                )
            mapping[task] = domain
    return mapping


def _domain_map_file(path: Path) -> list[tuple[str, str]]:
    """(where, ``TASK=DOMAIN``) of every entry of a domain-map file."""
    require_path(path, "Domain map file", "pass TASK=DOMAIN or a file of such lines")
    if path.suffix.lower() == ".json":
        data = read_json(path, "domain map file")
        if not isinstance(data, dict):
            raise _fail(str(path), "expected a JSON object of task to domain.")
        return [(f"{path}: {k}", f"{k}={v if isinstance(v, str) else ''}") for k, v in data.items()]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise unreadable(path, "domain map file", exc) from exc
    return [
        (f"{path}:{n}", line.strip())
        for n, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


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
