"""A ``transformers.Trainer`` callback that runs a :class:`PathwayMonitor` at every checkpoint save."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from pathwatch._files import read_json
from pathwatch._validate import check_bool, check_instance
from pathwatch.monitor.probe import PathwayMonitor
from pathwatch.store import write_atomic

STATE_FILE = "pathwatch_monitor.json"
"""The monitor's state, saved in every ``checkpoint-<step>`` directory it monitored."""


class PathwayCallback(TrainerCallback):
    """Run ``monitor`` on the trainer's model each time the trainer saves a checkpoint.

    The step is ``state.global_step``, so records line up with ``checkpoint-<step>`` directories and
    the trainer's own logs. The monitor's state (loss history, records) is saved as
    ``checkpoint-<step>/pathwatch_monitor.json``; a run resumed from that checkpoint restores it, so
    memorization is still judged on every checkpoint of the run. Only the main process
    (``state.is_world_process_zero``) runs the monitor, on its replica of the model: models sharded
    across processes (FSDP, DeepSpeed ZeRO-3) are not supported. The monitor's sinks are closed when
    training ends.

    Parameters
    ----------
    monitor : PathwayMonitor
        The monitor, with its probe set and sinks.
    on_evaluate : bool, default False
        Also run at every evaluation (a step already monitored at a save is not run twice).

    Examples
    --------
    >>> monitor = PathwayMonitor(probe, sinks=[TensorBoardSink("runs/pathwatch")])  # doctest: +SKIP
    >>> callbacks = [PathwayCallback(monitor)]  # doctest: +SKIP
    >>> Trainer(model, args, train_dataset=data, callbacks=callbacks).train()  # doctest: +SKIP
    """

    def __init__(self, monitor: PathwayMonitor, *, on_evaluate: bool = False) -> None:
        self.monitor = check_instance(
            "PathwayCallback", "monitor", monitor, PathwayMonitor, allow_none=False
        )
        self.run_on_evaluate = check_bool("PathwayCallback", "on_evaluate", on_evaluate)

    @staticmethod
    def _checkpoint_dir(args: TrainingArguments, state: TrainerState) -> Path:
        return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"

    def _run(self, state: TrainerState, model: Any) -> None:
        """Monitor the model at the current step unless this step is done or this is not rank 0."""
        steps = self.monitor.steps
        if state.is_world_process_zero and (not steps or state.global_step > steps[-1]):
            self.monitor.on_checkpoint(model, state.global_step)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """On a resumed run, restore the monitor's state from the checkpoint resumed from."""
        if not state.is_world_process_zero or state.global_step == 0 or self.monitor.steps:
            return
        path = self._checkpoint_dir(args, state) / STATE_FILE
        if path.is_file():
            self.monitor.load_state_dict(read_json(path, "monitor state file"))
        else:
            warnings.warn(
                f"pathwatch: resuming at step {state.global_step} without {path}; the monitor's "
                "loss history restarts here.",
                stacklevel=2,
            )

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        """Monitor the model that was just saved and save the monitor's state beside it."""
        self._run(state, model)
        directory = self._checkpoint_dir(args, state)
        if state.is_world_process_zero and directory.is_dir():
            write_atomic(directory / STATE_FILE, json.dumps(self.monitor.state_dict()).encode())

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        """Monitor the model at an evaluation, when ``on_evaluate=True``."""
        if self.run_on_evaluate:
            self._run(state, model)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Close the monitor's sinks."""
        if state.is_world_process_zero:
            self.monitor.close()
