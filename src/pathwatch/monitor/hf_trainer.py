"""A ``transformers.Trainer`` callback that runs a :class:`PathwayMonitor` at every checkpoint save."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from pathwatch.monitor.probe import PathwayMonitor


class PathwayCallback(TrainerCallback):
    """Run ``monitor`` on the trainer's model each time the trainer saves a checkpoint.

    The step is ``state.global_step``, so records line up with ``checkpoint-<step>`` directories and
    the trainer's own logs. Only the main process (``state.is_world_process_zero``) runs the monitor,
    on its replica of the model: models sharded across processes (FSDP, DeepSpeed ZeRO-3) are not
    supported. The monitor's sinks are closed when training ends.

    Parameters
    ----------
    monitor : PathwayMonitor
        The monitor, with its probe set and sinks.
    on_evaluate : bool, default False
        Also run at every evaluation (a step already monitored at a save is not run twice).

    Examples
    --------
    >>> monitor = PathwayMonitor(probe, sinks=[TensorBoardSink(args.logging_dir)])  # doctest: +SKIP
    >>> trainer = Trainer(model, args, train_dataset=data, callbacks=[PathwayCallback(monitor)])  # doctest: +SKIP
    """

    def __init__(self, monitor: PathwayMonitor, *, on_evaluate: bool = False) -> None:
        self.monitor = monitor
        self.run_on_evaluate = on_evaluate

    def _run(self, state: TrainerState, model: Any) -> None:
        """Monitor the model at the current step unless this step is done or this is not rank 0."""
        steps = self.monitor.steps
        if state.is_world_process_zero and (not steps or state.global_step > steps[-1]):
            self.monitor.on_checkpoint(model, state.global_step)

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        """Monitor the model that was just saved."""
        self._run(state, model)

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
