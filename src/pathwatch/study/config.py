"""What the validation study runs: its arms (testbed configurations and seeds) and settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pathwatch.errors import invalid_parameter

#: Every metric of the study: (what it needs, what kind of signal it is).
METRICS: dict[str, tuple[str, str]] = {
    "distance": ("training data", "routing"),
    "distance_memorized": ("training data", "routing"),
    "distance_tracked": ("training data", "routing"),
    "consistency": ("training data", "routing"),
    "smoothness": ("training data", "routing"),
    "adjacent_cosine": ("training data", "routing"),
    "train_loss": ("training data", "baseline"),
    "train_loss_ma": ("training data", "baseline"),
    "validation_loss": ("held-out data, other distribution", "baseline"),
    "heldout_loss": ("held-out data, same distribution", "baseline"),
}
#: Training-only signals the detector is run on (the routing one first).
DETECTOR_SIGNALS = ("distance_tracked", "distance_memorized", "distance", "train_loss_ma")
_NEEDS_FOR_TABLE = {
    m: "training data" if n == "training data" else "held-out data" for m, (n, _) in METRICS.items()
}
DEFAULT_ANALYSIS = "t0.7-char"


@dataclass(frozen=True)
class Arm:
    """One training configuration of the study and the seeds it runs.

    Attributes
    ----------
    name : str
        Short name, used in directory names and tables.
    config : TestbedConfig
    seeds : tuple of int
    """

    name: str
    config: Any
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if (
            not self.name
            or not self.name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise invalid_parameter("Arm", "name", "letters, digits, '-', '_' or '.'", self.name)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise invalid_parameter("Arm", "seeds", "distinct seeds, at least one", self.seeds)


def study_testbed() -> Any:
    """The testbed of the study: the demo configuration of 2026-11-26, pinned here so that later
    changes of the demo defaults do not change the study. p = 47, domains add, sub, mul, train
    fraction 0.7, hidden 64, 3 MoE layers, E = 8, top-2, AdamW lr 6e-3 with weight decay 0.75,
    stop once two domains reach 0.9 held-out accuracy (at most 5,000 steps, a checkpoint every 200).
    """
    from pathwatch.testbed import TestbedConfig

    return TestbedConfig(
        prime=47,
        domains=("add", "sub", "mul"),
        train_fraction=0.7,
        hidden_size=64,
        intermediate_size=64,
        num_layers=3,
        num_heads=4,
        num_experts=8,
        top_k=2,
        lr=6e-3,
        weight_decay=0.75,
        batch_size=512,
        max_steps=5000,
        checkpoint_every=200,
        stop_accuracy=0.9,
        stop_domains=2,
    )


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs and how it evaluates.

    Attributes
    ----------
    arms : tuple of Arm
        Training configurations; the first is the reference arm.
    thresholds : tuple of float, default (0.5, 0.6, 0.7, 0.8)
        Pathway thresholds analysed on the reference arm (char unit), reusing its captured runs.
    units : tuple of str, default ("char", "expert")
        Distance units analysed on the reference arm (threshold 0.7).
    variant_seeds : int, default 1
        Seeds of the reference arm (its first ones) that get the other analysis settings.
    weights : tuple of str, default ("softmax", "topk")
        Router weightings captured on those seeds (``capture_run(weights=...)``; "softmax" is
        the SPEC's and every other analysis's).
    max_lag : int, default 4
        K of the lead/lag cross-correlation, in checkpoints.
    detector_run, detector_min_drop, detector_window
        Parameters of :func:`pathwatch.evaluation.leadlag.detect_generalization`, fixed before any
        study run (not tuned on its seeds).
    level : float, default 0.5
        Accuracy level whose crossing the detector should anticipate.
    n_boot : int, default 1000
        Bootstrap replicates of the per-seed correlation CIs.
    jobs : int, default 2
        (arm, seed) units run in parallel, one torch thread each.
    """

    arms: tuple[Arm, ...]
    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)
    units: tuple[str, ...] = ("char", "expert")
    variant_seeds: int = 1
    weights: tuple[str, ...] = ("softmax", "topk")
    max_lag: int = 4
    detector_run: int = 3
    detector_min_drop: float = 0.05
    detector_window: int = 3
    level: float = 0.5
    n_boot: int = 1000
    jobs: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", tuple(self.arms))
        if not self.arms:
            raise invalid_parameter("StudyConfig", "arms", "at least one Arm", self.arms)
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise invalid_parameter("StudyConfig", "arms", "distinct names", names)
        if not (isinstance(self.jobs, int) and self.jobs >= 1):
            raise invalid_parameter("StudyConfig", "jobs", "an int ≥ 1", self.jobs)
        if not 0 < self.level < 1:
            raise invalid_parameter("StudyConfig", "level", "a float in (0, 1)", self.level)

    def analyses(self) -> dict[str, dict[str, Any]]:
        """Analysis variants of the reference arm, by name: AnalyzeConfig keyword arguments."""
        out = {f"t{t:g}-char": {"threshold": float(t), "unit": "char"} for t in self.thresholds}
        out |= {f"t0.7-{u}": {"threshold": 0.7, "unit": u} for u in self.units}
        out |= {
            f"t0.7-char-{w}": {"threshold": 0.7, "unit": "char", "weights": w}
            for w in self.weights
            if w != "softmax"
        }
        return {
            DEFAULT_ANALYSIS: out.pop(DEFAULT_ANALYSIS, {"threshold": 0.7, "unit": "char"})
        } | out

    @classmethod
    def default(cls, *, seeds: int = 5, base: Any = None, jobs: int = 2) -> StudyConfig:
        """The study of docs/validation.md: ``seeds`` seeds of ``base`` and a few of five variants.

        Variants, 2 seeds each: the random-``facts`` control domain added (a domain that can never
        generalize, for the detector's false alarms), the OLMoE load-balancing loss on (coefficient
        0.01), twice the experts; 1 seed each: one more MoE layer, top-1 routing.
        ``base`` defaults to :func:`study_testbed`.
        """
        base = base or study_testbed()
        few, one = tuple(range(min(2, seeds))), (0,)
        return cls(
            arms=(
                Arm("default", base, tuple(range(seeds))),
                Arm("facts", dataclasses.replace(base, domains=(*base.domains, "facts")), few),
                Arm("aux0.01", dataclasses.replace(base, router_aux_loss_coef=0.01), few),
                Arm(
                    f"experts{2 * base.num_experts}",
                    dataclasses.replace(base, num_experts=2 * base.num_experts),
                    few,
                ),
                Arm(
                    f"layers{base.num_layers + 1}",
                    dataclasses.replace(base, num_layers=base.num_layers + 1),
                    one,
                ),
                Arm("top1", dataclasses.replace(base, top_k=1), one),
            ),
            jobs=jobs,
        )

    @classmethod
    def reduced(cls, *, seeds: int = 2, jobs: int = 1) -> StudyConfig:
        """A study of ``TestbedConfig.tiny()`` for tests: 2 thresholds, both units, seconds per seed."""
        from pathwatch.testbed import TestbedConfig

        return cls(
            arms=(Arm("tiny", TestbedConfig.tiny(), tuple(range(seeds))),),
            thresholds=(0.5, 0.7),
            max_lag=2,
            n_boot=200,
            jobs=jobs,
        )
