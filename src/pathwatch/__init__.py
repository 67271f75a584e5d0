"""pathwatch: watch memorization turn into generalization in MoE pretraining, without a test set.

The public API of SPEC §4, re-exported lazily so that ``import pathwatch`` (and ``pathwatch --help``)
does not import torch. The pipeline reads top to bottom:
capture → store → metrics → dynamics → evaluation → report (and monitor, testbed on top).
"""

from __future__ import annotations

from pathwatch._lazy import lazy_exports
from pathwatch.errors import (
    InputError,
    IntegrityError,
    PathwatchError,
    StoreError,
    UnsupportedModelError,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "capture": "pathwatch.capture",
    "Capture": "pathwatch.capture",
    "read_samples": "pathwatch.capture.samples",
    "draw_probes": "pathwatch.capture.probes",
    "fit_virtual_experts": "pathwatch.capture.virtual",
    "VirtualExperts": "pathwatch.capture.virtual",
    "pathways": "pathwatch.metrics.pathways",
    "pathway_string": "pathwatch.metrics.pathways",
    "pathway_distance": "pathwatch.metrics.distance",
    "mean_pairwise_distance": "pathwatch.metrics.distance",
    "layer_distances": "pathwatch.metrics.distance",
    "consistency": "pathwatch.metrics.consistency",
    "smoothness": "pathwatch.metrics.consistency",
    "memorization_onset": "pathwatch.dynamics.onsets",
    "generalization_onset": "pathwatch.dynamics.onsets",
    "auto_epsilon": "pathwatch.dynamics.onsets",
    "match_groups": "pathwatch.dynamics.matching",
    "memorization_table": "pathwatch.dynamics.onsets",
    "embed_texts": "pathwatch.dynamics.embeddings",
    "read_accuracy": "pathwatch.evaluation.accuracy",
    "evaluate_checkpoints": "pathwatch.evaluation.harness",
    "correlation_table": "pathwatch.evaluation.correlate",
    "generalization_table": "pathwatch.evaluation.accuracy",
    "RunStore": "pathwatch.store",
    "AnalyzeConfig": "pathwatch.config",
    "CaptureConfig": "pathwatch.config",
    "PathwayMonitor": "pathwatch.monitor.probe",
    "PathwayCallback": "pathwatch.monitor.hf_trainer",
    "capture_run": "pathwatch.capture.run",
    "analyze_run": "pathwatch.analysis",
    "build_report": "pathwatch.report",
    "run_demo": "pathwatch.demo",
    "run_study": "pathwatch.study",
    "StudyConfig": "pathwatch.study",
    "lagged_correlation": "pathwatch.evaluation.leadlag",
    "detect_generalization": "pathwatch.evaluation.leadlag",
    "detection_lead": "pathwatch.evaluation.leadlag",
}

__all__ = [
    "InputError",
    "IntegrityError",
    "PathwatchError",
    "StoreError",
    "UnsupportedModelError",
    "__version__",
    *_LAZY,
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, also=__all__)
