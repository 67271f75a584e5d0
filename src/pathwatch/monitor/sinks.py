"""Where the monitor's records go: JSONL, TensorBoard, Weights & Biases.

A sink is any object with ``log(record, step)`` and ``close()``; :class:`Sink` states that protocol.
A record maps metric names (``"distance/all"``, ``"monitor/seconds"``) to floats; NaN means "not
defined at this checkpoint" (for example the distance of an empty memorized group). The TensorBoard
and W&B sinks need optional extras, imported only when the sink is built.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pathwatch.errors import StoreError, invalid_parameter


@runtime_checkable
class Sink(Protocol):
    """What the monitor writes to: one ``log`` call per checkpoint, ``close`` at the end."""

    def log(self, record: Mapping[str, float], step: int) -> None:
        """Write the metrics of the checkpoint at ``step``."""

    def close(self) -> None:
        """Flush and release whatever the sink holds."""


def _missing_extra(extra: str, exc: ImportError) -> ImportError:
    """The ImportError for an optional extra that is not installed."""
    return ImportError(
        f'This sink needs the optional extra {extra!r}: pip install "pathwatch[{extra}]" ({exc}).'
    )


class JSONLSink:
    """Append one JSON object per checkpoint to a file: ``{"step": 10, "distance/all": 4.2, ...}``.

    NaN values are written as ``null`` so that the file is strict JSON, readable by any JSON Lines
    reader (``polars.read_ndjson``, ``pandas.read_json(lines=True)``).

    Parameters
    ----------
    path : str or os.PathLike
        The file to append to; its parent directories are created.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "monitor.jsonl"
    >>> sink = JSONLSink(path)
    >>> sink.log({"loss/all": 1.5, "distance/all": float("nan")}, step=10)
    >>> sink.close()
    >>> path.read_text()
    '{"step": 10, "loss/all": 1.5, "distance/all": null}\\n'
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise StoreError(
                f"Cannot open the monitor log {self.path} for appending: {exc}"
            ) from exc

    def log(self, record: Mapping[str, float], step: int) -> None:
        """Append the record of the checkpoint at ``step`` as one line and flush it."""
        row: dict[str, Any] = {"step": int(step)}
        row.update({key: None if math.isnan(value) else value for key, value in record.items()})
        try:
            self._file.write(json.dumps(row, allow_nan=False) + "\n")
            self._file.flush()
        except OSError as exc:
            raise StoreError(f"Cannot write the monitor log {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class TensorBoardSink:
    """Write every metric as a TensorBoard scalar (tag = metric name, global step = training step).

    Needs the ``tensorboard`` extra: ``pip install "pathwatch[tensorboard]"``.

    Parameters
    ----------
    log_dir : str or os.PathLike
        The event-file directory. Point TensorBoard at its parent to see the monitor beside the
        training curves (a ``transformers.Trainer`` writes those where ``TENSORBOARD_LOGGING_DIR``
        says, default ``runs/``).
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise _missing_extra("tensorboard", exc) from exc
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, record: Mapping[str, float], step: int) -> None:
        """Add one scalar per metric at ``step`` and flush the event file."""
        for key, value in record.items():
            self._writer.add_scalar(key, value, global_step=int(step))
        self._writer.flush()

    def close(self) -> None:
        """Close the event file."""
        self._writer.close()


class WandbSink:
    """Log every metric to a Weights & Biases run (offline by default; sync later with ``wandb sync``).

    Metrics appear as ``pathwatch/<metric>`` plotted against ``pathwatch/step`` (the training step).

    Needs the ``wandb`` extra: ``pip install "pathwatch[wandb]"``.

    Parameters
    ----------
    run : wandb.Run, optional
        An already started run to log into (for example the one a ``transformers.Trainer`` with
        ``report_to=["wandb"]`` opened). It is not finished by :meth:`close`.
    project : str
        Project of the run this sink starts when ``run`` is None.
    mode : {"offline", "online", "disabled"}
        Mode of the run this sink starts.
    dir : str or os.PathLike, optional
        Where the started run writes its files.
    """

    PREFIX = "pathwatch/"
    _MODES = ("offline", "online", "disabled")

    def __init__(
        self,
        run: Any = None,
        *,
        project: str = "pathwatch",
        mode: str = "offline",
        dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if mode not in self._MODES:
            raise invalid_parameter("WandbSink", "mode", f"one of {self._MODES}", mode)
        self._owns_run = run is None
        if run is None:
            try:
                import wandb
            except ImportError as exc:
                raise _missing_extra("wandb", exc) from exc
            run = wandb.init(
                project=project,
                mode=mode,
                dir=None if dir is None else str(dir),
                reinit="create_new",
            )
        self.run = run
        # our own x axis, so that logging into a run shared with a trainer never fights its step counter
        self.run.define_metric(f"{self.PREFIX}step")
        self.run.define_metric(f"{self.PREFIX}*", step_metric=f"{self.PREFIX}step")

    def log(self, record: Mapping[str, float], step: int) -> None:
        """Log the record under ``pathwatch/<metric>`` against the x axis ``pathwatch/step``."""
        row = {f"{self.PREFIX}{key}": value for key, value in record.items()}
        self.run.log({**row, f"{self.PREFIX}step": int(step)})

    def close(self) -> None:
        """Finish the run if this sink started it."""
        if self._owns_run:
            self.run.finish()
