"""What the validation study runs: its arms (testbed configurations and seeds), its analysis
variants and the settings of its statistics."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pathwatch._validate import check_choice, check_float, check_int, check_text, is_int
from pathwatch.config import UNITS, WEIGHTS, AnalyzeConfig, CaptureConfig
from pathwatch.errors import invalid_parameter

if TYPE_CHECKING:
    from pathwatch.evaluation.trends import TrendCriteria
    from pathwatch.report.study import StudyDesign

#: Training-only signals the detector is run on (the routing one first).
DETECTOR_SIGNALS = ("distance_tracked", "distance_memorized", "distance", "train_loss_ma")
#: The reference analysis: every statistic but the variants' comparison uses its rows.
DEFAULT_ANALYSIS = "t0.7-char"
#: Seeds of the reference arm in the default study (``pathwatch study --seeds``).
DEFAULT_SEEDS = 5
#: Seeds any configuration search of a study testbed used; a study reports other seeds as unseen.
SEARCH_SEEDS = (0, 1)
#: What ``pathwatch study --design`` runs: the grokking testbed's variants, or the two regimes.
DESIGNS = ("variants", "regimes")
#: Bootstrap replicates of the per-run analysis (its CIs are not used: the study bootstraps its own).
_RUN_N_BOOT = 10


@dataclass(frozen=True)
class Variant:
    """One analysis setting of the reference arm: how its run is captured, how it is analysed.

    Capture settings (the router weighting) and analysis settings (threshold, distance unit) are
    kept apart: variants with the same ``capture`` share one captured run.

    Attributes
    ----------
    name : str
        Its name in the tables, e.g. ``"t0.5-char"``, ``"t0.7-char-topk"``.
    analysis : AnalyzeConfig
    capture : CaptureConfig, default CaptureConfig()
    """

    name: str
    analysis: AnalyzeConfig
    capture: CaptureConfig = field(default_factory=CaptureConfig)

    def __post_init__(self) -> None:
        check_text("Variant", "name", self.name)
        if not isinstance(self.analysis, AnalyzeConfig):
            raise invalid_parameter("Variant", "analysis", "an AnalyzeConfig", self.analysis)
        if not isinstance(self.capture, CaptureConfig):
            raise invalid_parameter("Variant", "capture", "a CaptureConfig", self.capture)

    def run_suffix(self) -> str:
        """What the run directory of this variant's capture adds to the (arm, seed) key: the
        capture settings that differ from the defaults (``"-topk"``), nothing for the default."""
        default = CaptureConfig()
        changed = [
            str(getattr(self.capture, f.name))
            for f in dataclasses.fields(CaptureConfig)
            if getattr(self.capture, f.name) != getattr(default, f.name)
        ]
        return "".join(f"-{value}" for value in changed)


@dataclass(frozen=True)
class Arm:
    """One training configuration of the study and the seeds it runs.

    Attributes
    ----------
    name : str
        Short name, used in directory names and tables.
    config : testbed configuration
        Of a registered testbed (:data:`pathwatch.testbed.presets.PRESETS`).
    seeds : tuple of int
    """

    name: str
    config: Any
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        from pathwatch.testbed.presets import check_testbed_config

        if not (
            isinstance(self.name, str)
            and self.name
            and self.name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise invalid_parameter("Arm", "name", "letters, digits, '-', '_' or '.'", self.name)
        check_testbed_config("Arm", self.config)
        seeds = self.seeds
        if (
            isinstance(seeds, str)
            or not hasattr(seeds, "__iter__")
            or not seeds
            or not all(is_int(s) and s >= 0 for s in seeds)
            or len(set(seeds)) != len(seeds)
        ):
            raise invalid_parameter("Arm", "seeds", "distinct ints >= 0, at least one", seeds)
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))


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


def stream_testbed() -> Any:
    """The stream testbed of the study: the best configuration of the search on seed 0 (run r4 of
    docs/testbed.md, *Stream testbed*), pinned here so that later changes of the ``stream``
    preset do not change the study. p = 17, 5 equations in each 32-word document, mix 0.35 / 0.3 /
    0.2 / 0.15 (add, sub, mul, facts), hidden 64, 4 MoE layers, E = 8, top-2, AdamW lr 6e-3 with
    weight decay 0.1, batch 128, 2,500 steps (a checkpoint every 100)."""
    from pathwatch.testbed.stream import StreamConfig

    return StreamConfig(
        prime=17,
        domains=("add", "sub", "mul", "facts"),
        mix=(0.35, 0.3, 0.2, 0.15),
        n_equations=5,
        hidden_size=64,
        intermediate_size=64,
        num_layers=4,
        num_experts=8,
        top_k=2,
        lr=6e-3,
        weight_decay=0.1,
        batch_size=128,
        max_steps=2500,
        checkpoint_every=100,
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
        Router weightings captured on those seeds (``CaptureConfig(weights=...)``; "softmax" is
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
    trends : TrendCriteria or None, default None
        Thresholds of the trend tests T1–T6 (:mod:`pathwatch.evaluation.trends`), fixed before
        any run; None takes the defaults with this study's ``level`` and detector parameters.
    compare_arms : int, default 1
        How many leading arms the report compares side by side (correlations per seed and
        domain, trend tests): 1 for a reference arm and its variants, 2 for two regimes.
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
    trends: TrendCriteria | None = None
    compare_arms: int = 1

    def __post_init__(self) -> None:
        func = "StudyConfig"
        arms = self.arms
        if isinstance(arms, Arm) or not hasattr(arms, "__iter__") or not arms:
            raise invalid_parameter(func, "arms", "at least one Arm", arms)
        object.__setattr__(self, "arms", tuple(arms))
        if not all(isinstance(a, Arm) for a in self.arms):
            raise invalid_parameter(func, "arms", "a tuple of Arm", self.arms)
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise invalid_parameter(func, "arms", "distinct names", names)
        _tuple_of(
            self,
            "thresholds",
            lambda t: check_float(func, "thresholds", t, low=0, high=1, low_open=True),
        )
        _tuple_of(self, "units", lambda u: check_choice(func, "units", u, UNITS))
        _tuple_of(self, "weights", lambda w: check_choice(func, "weights", w, WEIGHTS))
        check_int(func, "variant_seeds", self.variant_seeds, low=0)
        check_int(func, "max_lag", self.max_lag, low=0)
        check_int(func, "detector_run", self.detector_run, low=1)
        check_float(
            func, "detector_min_drop", self.detector_min_drop, low=0, high=1, high_open=True
        )
        check_int(func, "detector_window", self.detector_window, low=1)
        check_float(func, "level", self.level, low=0, high=1, low_open=True, high_open=True)
        check_int(func, "n_boot", self.n_boot, low=1)
        check_int(func, "jobs", self.jobs, low=1)
        check_int(func, "compare_arms", self.compare_arms, low=1, high=len(self.arms))
        if self.trends is not None:
            from pathwatch.evaluation.trends import TrendCriteria  # polars: only when given

            if not isinstance(self.trends, TrendCriteria):
                raise invalid_parameter(func, "trends", "None or a TrendCriteria", self.trends)

    def trend_criteria(self) -> TrendCriteria:
        """The thresholds of T1–T6: ``trends``, or the defaults with this study's accuracy level
        and detector parameters."""
        from pathwatch.evaluation.trends import TrendCriteria

        return self.trends or TrendCriteria(
            level=self.level,
            detector_run=self.detector_run,
            detector_min_drop=self.detector_min_drop,
            detector_window=self.detector_window,
        )

    def variants(self) -> tuple[Variant, ...]:
        """The analysis variants of the reference arm, :data:`DEFAULT_ANALYSIS` first: each
        threshold (char unit), each unit (threshold 0.7), each router weighting (t0.7-char)."""
        out = {
            f"t{t:g}-char": AnalyzeConfig(threshold=float(t), unit="char", n_boot=_RUN_N_BOOT)
            for t in self.thresholds
        }
        out |= {
            f"t0.7-{u}": AnalyzeConfig(threshold=0.7, unit=u, n_boot=_RUN_N_BOOT)
            for u in self.units
        }
        reference = out.pop(
            DEFAULT_ANALYSIS, AnalyzeConfig(threshold=0.7, unit="char", n_boot=_RUN_N_BOOT)
        )
        variants = [Variant(DEFAULT_ANALYSIS, reference)]
        variants += [Variant(name, analysis) for name, analysis in out.items()]
        variants += [
            Variant(f"{DEFAULT_ANALYSIS}-{w}", reference, CaptureConfig(weights=w))
            for w in self.weights
            if w != "softmax"
        ]
        return tuple(variants)

    def design(self) -> StudyDesign:
        """How this study runs, as its report states it: arms (each with its configuration's
        changes to the reference arm's, or to its own testbed's defaults where it trains another
        testbed), the compared arms, accuracy level, lead/lag and detector settings."""
        from pathwatch.report.study import ArmDesign, StudyDesign

        reference = self.arms[0].config

        def changes(arm: Arm) -> str:
            testbed = type(arm.config)
            base = reference if testbed is type(reference) else testbed()
            ours, theirs = dataclasses.asdict(arm.config), dataclasses.asdict(base)
            changed = ", ".join(f"{k}={v}" for k, v in ours.items() if v != theirs.get(k))
            if base is reference:
                return changed or "(reference)"
            return f"{testbed.__name__}: {changed or 'its defaults'}"

        return StudyDesign(
            arms=tuple(ArmDesign(a.name, a.seeds, changes(a)) for a in self.arms),
            analysis=DEFAULT_ANALYSIS,
            level=self.level,
            max_lag=self.max_lag,
            detector_run=self.detector_run,
            detector_min_drop=self.detector_min_drop,
            detector_window=self.detector_window,
            trend_criteria=self.trend_criteria().describe(),
            compared=tuple(a.name for a in self.arms[: self.compare_arms]),
        )

    @classmethod
    def default(
        cls, *, seeds: int = DEFAULT_SEEDS, first_seed: int = 0, base: Any = None, jobs: int = 2
    ) -> StudyConfig:
        """The variants study: ``seeds`` seeds of ``base`` from ``first_seed`` on, and a few
        seeds of five variants.

        Variants, 2 seeds each: the random-``facts`` control domain added (a domain that can never
        generalize, for the detector's false alarms), the OLMoE load-balancing loss on (coefficient
        0.01), twice the experts; 1 seed each: one more MoE layer, top-1 routing.
        ``base`` defaults to :func:`study_testbed`.
        """
        base = base or study_testbed()
        every = _seed_range("default", seeds, first_seed)
        few, one = every[:2], every[:1]
        return cls(
            arms=(
                Arm("default", base, every),
                Arm("facts", _with_facts(base), few),
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
    def regimes(
        cls, *, seeds: int = DEFAULT_SEEDS, first_seed: int = 2, jobs: int = 2
    ) -> StudyConfig:
        """The two-regimes study of docs/validation.md: the grokking testbed (with the ``facts``
        control) and the stream testbed, ``seeds`` seeds each from ``first_seed`` on — by default
        seeds 2–6, none of :data:`SEARCH_SEEDS` — compared side by side, every metric and
        baseline through the same statistics."""
        every = _seed_range("regimes", seeds, first_seed)
        return cls(
            arms=(
                Arm("grokking", _with_facts(study_testbed()), every),
                Arm("stream", stream_testbed(), every),
            ),
            variant_seeds=0,
            jobs=jobs,
            compare_arms=2,
        )

    @classmethod
    def reduced(cls, *, seeds: int = 2, jobs: int = 1, regimes: bool = False) -> StudyConfig:
        """A study of ``TestbedConfig.tiny()`` for tests: 2 thresholds, both units, seconds per
        seed; ``regimes`` adds the tiny stream testbed as a second compared arm."""
        from pathwatch.testbed import TestbedConfig

        every = _seed_range("reduced", seeds, 0)
        arms = [Arm("tiny", TestbedConfig.tiny(), every)]
        if regimes:
            from pathwatch.testbed.stream import StreamConfig

            arms.append(Arm("stream-tiny", StreamConfig.tiny(), every))
        return cls(
            arms=tuple(arms),
            thresholds=(0.5, 0.7),
            max_lag=2,
            n_boot=200,
            jobs=jobs,
            compare_arms=len(arms),
        )


def _seed_range(func: str, seeds: int, first_seed: int) -> tuple[int, ...]:
    """Seeds ``first_seed … first_seed + seeds - 1``, both checked."""
    check_int(func, "seeds", seeds, low=1)
    check_int(func, "first_seed", first_seed, low=0)
    return tuple(range(first_seed, first_seed + seeds))


def _with_facts(config: Any) -> Any:
    """``config`` with the memorize-only ``facts`` control domain added."""
    return dataclasses.replace(config, domains=(*config.domains, "facts"))


def _tuple_of(config: object, name: str, check: Any) -> None:
    """Check every item of a tuple field of a frozen config and store the checked tuple."""
    values = getattr(config, name)
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise invalid_parameter(type(config).__name__, name, "a tuple", values)
    object.__setattr__(config, name, tuple(check(v) for v in values))
