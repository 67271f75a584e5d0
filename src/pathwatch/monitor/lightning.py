"""A Lightning callback that runs a :class:`PathwayMonitor` at every checkpoint save.

Needs the ``lightning`` extra (``pip install "pathwatch[lightning]"``); importing this module without
it raises an ImportError that says so.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:
    raise ImportError(
        f"pathwatch.monitor.lightning needs the optional extra 'lightning': pip install \"pathwatch[lightning]\" ({exc})."
    ) from exc

from pathwatch.errors import InputError
from pathwatch.monitor.probe import PathwayMonitor


class PathwayLightningCallback(Callback):
    """Run ``monitor`` each time the Lightning trainer saves a checkpoint.

    The step is ``trainer.global_step``. The monitor's state (loss history, records) is stored in
    every checkpoint and restored when a run resumes from one (``fit(..., ckpt_path=...)``). Only
    global rank zero runs the monitor, on its replica of the model: models sharded across processes
    (FSDP, DeepSpeed ZeRO-3) are not supported. The monitor's sinks are closed when training ends.

    Parameters
    ----------
    monitor : PathwayMonitor
        The monitor, with its probe set and sinks.
    model_attribute : str, default "model"
        Attribute of the LightningModule that holds the ``transformers`` MoE model.

    Examples
    --------
    >>> callback = PathwayLightningCallback(monitor)  # doctest: +SKIP
    >>> Trainer(callbacks=[ModelCheckpoint(every_n_train_steps=500), callback]).fit(module)  # doctest: +SKIP
    """

    def __init__(self, monitor: PathwayMonitor, *, model_attribute: str = "model") -> None:
        self.monitor = monitor
        self.model_attribute = model_attribute

    def _model(self, pl_module: LightningModule) -> Any:
        """The transformers model inside ``pl_module``."""
        model = getattr(pl_module, self.model_attribute, None)
        if model is not None:
            return model
        raise InputError(
            f"PathwayLightningCallback found no attribute {self.model_attribute!r} on "
            f"{type(pl_module).__name__}; pass model_attribute='<name of the transformers model>'."
        )

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Monitor the model being saved (once per step) and store the updated state with it."""
        steps = self.monitor.steps
        if trainer.is_global_zero and (not steps or trainer.global_step > steps[-1]):
            self.monitor.on_checkpoint(self._model(pl_module), trainer.global_step)
        # Lightning collected state_dict() before this hook: store the state that includes this step
        if "callbacks" in checkpoint:
            checkpoint["callbacks"][self.state_key] = self.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state, stored by Lightning in every checkpoint."""
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the monitor's state when Lightning resumes from a checkpoint (``ckpt_path``)."""
        self.monitor.load_state_dict(state_dict)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the monitor's sinks."""
        if trainer.is_global_zero:
            self.monitor.close()
