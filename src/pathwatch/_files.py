"""The one door through which pathwatch reads the files users give it: samples, accuracy, test items.

A missing path, an unreadable file and malformed JSON or JSONL get the same one-line wording
whichever stage reads them, naming the file (and line) and the fix::

    Samples file runs/nope.jsonl does not exist; pass a JSONL or Parquet file with 'text'.
    Cannot read accuracy file acc.json: Permission denied.
    items.jsonl:3: malformed JSON (Expecting ',' delimiter at column 17); each line must be one JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pathwatch.errors import InputError


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split())


def require_path(path: Path, what: str, fix: str, *, directory: bool = False) -> Path:
    """``path`` if it is a file (or, with ``directory``, a directory), else the one-line error.

    >>> require_path(Path("nope.jsonl"), "Samples file", "pass a JSONL file")
    Traceback (most recent call last):
    ...
    pathwatch.errors.InputError: Samples file nope.jsonl does not exist; pass a JSONL file.
    """
    if path.is_file() or (directory and path.is_dir()):
        return path
    state = "does not exist" if not path.exists() else "is not a file"
    raise InputError(f"{what} {path} {state}; {fix}.")


def unreadable(path: Path, what: str, exc: BaseException) -> InputError:
    """The error for a file that exists but cannot be read or decoded."""
    return InputError(f"Cannot read {what} {path}: {one_line(exc)}.")


def read_json(path: Path, what: str) -> Any:
    """The JSON value in ``path``; malformed JSON names the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise unreadable(path, what, exc) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}); fix or "
            "re-export the file."
        ) from exc


def read_jsonl(path: Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file, each line one JSON object."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno}); "
                        "each line must be one JSON object."
                    ) from exc
                if not isinstance(record, dict):
                    raise InputError(
                        f"{path}:{number}: each line must be a JSON object; got "
                        f"{type(record).__name__}."
                    )
                yield number, record
    except (OSError, UnicodeDecodeError) as exc:
        raise unreadable(path, what, exc) from exc
