"""A multi-seed validation study: does routing tell about generalization better than the baselines?

``run_study`` trains the CPU testbed over several seeds and configurations ("arms"), captures and
analyses each run (with several analysis settings on the first arm), and writes one report:

- per metric, the correlation with held-out accuracy per seed and domain (bootstrap CIs), pooled over
  seeds (Fisher-z mean with a t interval over seeds), next to the baselines, each labelled with what
  it needs (training data only, or held-out data of the same or of a different distribution);
- sample selection: all samples of a domain vs memorized (any t*) vs tracked (memorized by the step);
- lead/lag: correlation of each metric with accuracy k checkpoints later, k in −K … K;
- a test-free detector (:func:`pathwatch.evaluation.leadlag.detect_generalization`) per seed and
  domain: checkpoints before accuracy crosses 0.5, and its alarms on domains that never cross.

Every (arm, seed) is its own testbed and run directory, and its series table is written when it is
done, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

from pathwatch._lazy import lazy_exports

# public name -> module that defines it (imported on first use: the CLI reads StudyConfig's
# defaults without polars)
_LAZY: dict[str, str] = {
    "Arm": "pathwatch.study.config",
    "DEFAULT_ANALYSIS": "pathwatch.study.config",
    "DETECTOR_SIGNALS": "pathwatch.study.config",
    "StudyConfig": "pathwatch.study.config",
    "Variant": "pathwatch.study.config",
    "study_testbed": "pathwatch.study.config",
    "StudyResult": "pathwatch.study.run",
    "run_study": "pathwatch.study.run",
    "study_tables": "pathwatch.study.tables",
    "pooled_correlations": "pathwatch.evaluation.correlate",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
