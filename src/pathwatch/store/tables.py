"""Parquet tables of a run, written atomically (temporary name, fsync, rename)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathwatch.errors import IntegrityError, StoreError
from pathwatch.store._io import store_error, write_atomic

if TYPE_CHECKING:
    import polars as pl


def write_table(frame: pl.DataFrame, path: Path) -> Path:
    """Write a polars DataFrame to ``path`` as Parquet so readers never see half a file.

    Examples
    --------
    >>> import polars as pl, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.parquet"
    >>> _ = write_table(pl.DataFrame({"step": [1, 2]}), p)
    >>> read_table(p)["step"].to_list()
    [1, 2]
    """
    write_atomic(Path(path), table_bytes(frame))
    return Path(path)


def table_bytes(frame: pl.DataFrame) -> bytes:
    """A polars DataFrame as the bytes of a Parquet file."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def read_table(path: Path, *, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Read a Parquet table (only ``columns``, if given); StoreError if it is missing,
    IntegrityError if it is not Parquet or lacks one of ``columns``."""
    import polars as pl

    path = Path(path)
    if columns is not None:
        missing = [c for c in columns if c not in read_schema(path)]
        if missing:
            raise IntegrityError(
                f"{path}: missing column(s) {', '.join(missing)}; the table is from another "
                "version. Re-run the step that writes it."
            )
    wanted = None if columns is None else list(columns)
    return _read(path, lambda p: pl.read_parquet(p, columns=wanted))


def read_schema(path: Path) -> dict[str, pl.DataType]:
    """Column name -> dtype of a Parquet table, from its footer alone."""
    import polars as pl

    return dict(_read(Path(path), pl.read_parquet_schema))


def _read(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)`` with its failures as one-line store errors."""
    import polars as pl

    try:
        return read(path)
    except FileNotFoundError as exc:
        raise StoreError(f"{path}: missing. Run the step that writes it first.") from exc
    except OSError as exc:
        raise store_error(path, "reading", exc) from exc
    except pl.exceptions.PolarsError as exc:
        raise IntegrityError(
            f"{path}: not a readable Parquet table ({type(exc).__name__}). Delete it and re-run "
            "the step that writes it."
        ) from exc
