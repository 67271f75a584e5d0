"""Monitor a live training run: pathway metrics of a fixed probe set at every checkpoint save.

``PathwayMonitor`` works in any training loop; ``PathwayCallback`` plugs it into a
``transformers.Trainer`` and ``pathwatch.monitor.lightning.PathwayLightningCallback`` into Lightning
(imported from its own module, as it needs the ``lightning`` extra). Names are imported lazily, so
that the sinks load without torch.
"""

from __future__ import annotations

from pathwatch._lazy import lazy_exports

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "PathwayMonitor": "pathwatch.monitor.probe",
    "MonitorWarning": "pathwatch.monitor.probe",
    "consecutive_rises": "pathwatch.monitor.probe",
    "consecutive_stalls": "pathwatch.monitor.probe",
    "PathwayCallback": "pathwatch.monitor.hf_trainer",
    "Sink": "pathwatch.monitor.sinks",
    "JSONLSink": "pathwatch.monitor.sinks",
    "TensorBoardSink": "pathwatch.monitor.sinks",
    "WandbSink": "pathwatch.monitor.sinks",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
