"""The validation study's report: ``report.md`` and its two figures, from the study's tables.

:func:`write_study_report` writes both; what it states about how the study ran (its arms, the
accuracy level, the detector's parameters) comes in a :class:`StudyDesign`, which
:meth:`pathwatch.study.StudyConfig.design` builds, so this module needs nothing of the study but
its tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pathwatch.evaluation.correlate import SIGNALS as METRICS
from pathwatch.evaluation.regime import CORE
from pathwatch.report.markdown import fmt as _fmt
from pathwatch.report.markdown import markdown_table as _markdown
from pathwatch.report.study_figures import study_figures
from pathwatch.report.study_trends import trends_section
from pathwatch.store import write_atomic

#: the report's file, and its figures under ``figures/``
REPORT = "report.md"
FIGURES = "figures"


@dataclass(frozen=True)
class ArmDesign:
    """One arm as the report shows it: its name, its seeds, its changes to the reference arm."""

    name: str
    seeds: tuple[int, ...]
    changes: str


@dataclass(frozen=True)
class StudyDesign:
    """How the study ran, as its report states it.

    Attributes
    ----------
    arms : tuple of ArmDesign
        The first is the reference arm.
    analysis : str
        The reference analysis (rows of ``analysis == analysis`` back every statistic but the
        variants' comparison).
    level : float
        Accuracy level of the crossings and of the detector's lead.
    max_lag : int
    detector_run, detector_min_drop, detector_window
        The detector's parameters.
    trend_criteria : str, default ""
        The thresholds of the trend tests T1–T6, in one line.
    compared : tuple of str, default ()
        The arms the report shows side by side in full (per-seed correlations, per-run
        detections); empty: the reference arm alone.
    """

    arms: tuple[ArmDesign, ...]
    analysis: str
    level: float
    max_lag: int
    detector_run: int
    detector_min_drop: float
    detector_window: int
    trend_criteria: str = ""
    compared: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        """The reference arm's name."""
        return self.arms[0].name

    @property
    def compared_arms(self) -> tuple[str, ...]:
        """The arms shown in full: ``compared``, or the reference arm alone."""
        return self.compared or (self.reference,)

    def headline(self, tables: Mapping[str, pl.DataFrame]) -> str:
        """:func:`headline` of each compared arm (one arm: its table alone)."""
        if len(self.compared_arms) == 1:
            return headline(tables, self.reference, analysis=self.analysis)
        return "\n\n".join(
            f"Arm `{arm}`:\n\n{headline(tables, arm, analysis=self.analysis)}"
            for arm in self.compared_arms
        )


def write_study_report(
    out: Path, tables: Mapping[str, pl.DataFrame], design: StudyDesign
) -> tuple[Path, list[Path]]:
    """Draw ``out/figures/validation-*.png`` and write ``out/report.md`` (atomically).

    Parameters
    ----------
    out : Path
        The study directory.
    tables : mapping of str to polars.DataFrame
        The study's tables, ``units`` included.
    design : StudyDesign

    Returns
    -------
    tuple of Path and list of Path
        The report and the figures.
    """
    figures = study_figures(tables, out / FIGURES, arm=design.reference, analysis=design.analysis)
    report = out / REPORT
    write_atomic(report, study_markdown(tables, design, tables["units"], figures).encode())
    return report, figures


def headline(tables: Mapping[str, pl.DataFrame], arm: str, *, analysis: str) -> str:
    """The pooled correlation of every metric on ``arm`` over the runs whose accuracy crossed.

    Parameters
    ----------
    tables : mapping of str to polars.DataFrame
        :attr:`StudyResult.tables`.
    arm : str
    analysis : str
        The analysis whose rows are pooled.

    Returns
    -------
    str
        A Markdown table (metric, kind, needs, pooled r [95% CI], runs).
    """
    rows = tables["pooled"].filter(
        (pl.col("arm") == arm) & (pl.col("analysis") == analysis) & (pl.col("domain") == "grokked")
    )
    if rows.is_empty():
        return f"No run of {arm!r} reached the accuracy level: no pooled correlations."
    return _markdown(
        ["metric", "kind", "needs", "pooled r [95% CI]", "runs", "neg"],
        [
            [
                r["metric"],
                METRICS[r["metric"]][1],
                METRICS[r["metric"]][0],
                _ci(r["r_mean"], r["r_ci_low"], r["r_ci_high"]),
                r["n_seeds"],
                r["n_negative"],
            ]
            for r in rows.iter_rows(named=True)
        ],
    )


def _split_cells(pooled: pl.DataFrame, metric: str, group: str) -> tuple[str, int]:
    """Pooled r with its interval and the number of runs of one metric in one pooled group."""
    row = pooled.filter((pl.col("metric") == metric) & (pl.col("domain") == group))
    if row.is_empty():
        return "–", 0
    return _ci(*row.select("r_mean", "r_ci_low", "r_ci_high").row(0)), int(row["n_seeds"][0])


def _ci(mean: float, low: float, high: float) -> str:
    return f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}]"


def study_markdown(
    tables: Mapping[str, pl.DataFrame],
    design: StudyDesign,
    units: pl.DataFrame,
    figures: Sequence[Path],
) -> str:
    """The study's ``report.md``: every number read from ``tables`` (and ``units``, the per-run
    timings); ``figures`` are linked at the end."""
    sections = (
        _runs_section(tables, design, units),
        _regime_section(tables),
        *[_correlation_section(tables, design, arm) for arm in design.compared_arms],
        trends_section(tables, design.reference, design.trend_criteria),
        _variants_section(tables, design),
        _leadlag_section(tables, design),
        _detector_section(tables, design),
        _grokking_section(tables),
        _overlap_section(tables, figures),
    )
    return "\n".join(line for section in sections for line in section)


def _runs_section(
    tables: Mapping[str, pl.DataFrame], design: StudyDesign, units: pl.DataFrame
) -> list[str]:
    """The arms, their training time, and where each run's accuracy crossed the level."""
    lines = [
        "# pathwatch validation study",
        "",
        "Every number below is computed by `pathwatch study` from the tables in `tables/`.",
        "",
        "## Runs",
        "",
        _markdown(
            ["arm", "seeds", "config changes", "train CPU s (mean)"],
            [
                [
                    a.name,
                    ", ".join(map(str, a.seeds)),
                    a.changes,
                    float(
                        units.filter(pl.col("key").str.starts_with(f"{a.name}-s"))[
                            "train_cpu_seconds"
                        ].mean()
                        or np.nan
                    ),
                ]
                for a in design.arms
            ],
        ),
        "",
        f"Accuracy crossings (step where held-out accuracy first reaches {design.level}; – never):",
        "",
    ]
    crossed = tables["crossings"].filter(pl.col("domain") != "all")
    domains = sorted(crossed["domain"].unique().to_list())
    lines += [
        _markdown(
            ["arm", "seed", *domains],
            [
                [
                    arm,
                    seed,
                    *[dict(part.select("domain", "crossed").rows()).get(d) for d in domains],
                ]
                for (arm, seed), part in crossed.group_by(["arm", "seed"], maintain_order=True)
            ],
        ),
    ]
    return lines


def _correlation_section(
    tables: Mapping[str, pl.DataFrame], design: StudyDesign, ref: str
) -> list[str]:
    """Pooled correlations of arm ``ref``: over all runs that crossed, split by the grokking
    verdict, per domain and per seed."""
    pooled = tables["pooled"]
    corr = tables["correlations"]
    lines = [
        "",
        f"## Correlation with held-out accuracy, arm `{ref}`",
        "",
        "Window: from the start of accuracy's sustained rise (per seed and domain) on. Pooled over "
        "every (seed, domain) whose accuracy crossed the level: Fisher-z mean of Pearson r, 95% t "
        "interval over those runs; `neg` counts runs with r < 0.",
        "",
    ]
    lines.append(headline(tables, ref, analysis=design.analysis))
    per_domain = pooled.filter(
        (pl.col("arm") == ref)
        & (pl.col("analysis") == design.analysis)
        & ~pl.col("domain").is_in(["grokked", "clean", "overlap"])
    )
    split = pooled.filter((pl.col("arm") == ref) & (pl.col("analysis") == design.analysis))
    lines += [
        "",
        "Split by the testbed's own grokking verdict (section *Did each run grok?*): `clean` = "
        "runs that crossed after memorizing at chance, `overlap` = runs that crossed while still "
        "being memorized:",
        "",
        _markdown(
            ["metric", "clean: pooled r [95% CI]", "runs", "overlap: pooled r [95% CI]", "runs"],
            [
                [m, *_split_cells(split, m, "clean"), *_split_cells(split, m, "overlap")]
                for m in METRICS
                if m in split["metric"].to_list()
            ],
        ),
    ]
    lines += ["", "Per domain (all seeds, whether or not the domain crossed):", ""]
    pd_domains = sorted(per_domain["domain"].unique().to_list())
    lines.append(
        _markdown(
            ["metric", *pd_domains],
            [
                [
                    m,
                    *[
                        _ci(
                            *per_domain.filter((pl.col("metric") == m) & (pl.col("domain") == d))
                            .select("r_mean", "r_ci_low", "r_ci_high")
                            .row(0)
                        )
                        for d in pd_domains
                    ],
                ]
                for m in METRICS
                if m in per_domain["metric"].to_list()
            ],
        )
    )
    lines += ["", "Per seed (Pearson r [bootstrap 95% CI over checkpoints], n checkpoints):", ""]
    seed_rows = corr.filter(
        (pl.col("arm") == ref)
        & (pl.col("analysis") == design.analysis)
        & (pl.col("domain") != "all")
    ).sort("seed", "domain")
    shown = [
        m
        for m in (
            "distance",
            "distance_memorized",
            "distance_tracked",
            "train_loss_ma",
            "validation_loss",
            "heldout_loss",
        )
        if m in seed_rows["metric"].to_list()
    ]
    lines.append(
        _markdown(
            ["seed", "domain", "n", *shown],
            [
                [
                    seed,
                    domain,
                    part["n"].max(),
                    *[
                        _ci(
                            *part.filter(pl.col("metric") == m)
                            .select("pearson_r", "pearson_ci_low", "pearson_ci_high")
                            .row(0)
                        )
                        for m in shown
                    ],
                ]
                for (seed, domain), part in seed_rows.group_by(
                    ["seed", "domain"], maintain_order=True
                )
            ],
        )
    )
    return lines


def _variants_section(tables: Mapping[str, pl.DataFrame], design: StudyDesign) -> list[str]:
    """Pooled r per arm and per analysis setting of the reference arm."""
    pooled = tables["pooled"]
    variants = pooled.filter(
        (pl.col("domain") == "grokked")
        & pl.col("metric").is_in(
            ["distance", "distance_tracked", "train_loss_ma", "validation_loss", "heldout_loss"]
        )
    )
    return [
        "",
        "## Configurations and analysis settings",
        "",
        "Pooled r over the runs that crossed (as above), per arm (default analysis) and per analysis "
        f"setting of `{design.reference}` (threshold, distance unit).",
        "",
        _markdown(
            ["arm", "analysis", "metric", "pooled r [95% CI]", "runs"],
            [
                [
                    r["arm"],
                    r["analysis"],
                    r["metric"],
                    _ci(r["r_mean"], r["r_ci_low"], r["r_ci_high"]),
                    r["n_seeds"],
                ]
                for r in variants.sort("arm", "analysis", "metric").iter_rows(named=True)
            ],
        ),
    ]


def _leadlag_section(tables: Mapping[str, pl.DataFrame], design: StudyDesign) -> list[str]:
    """Lag-0 and best-lag correlation of each metric with accuracy k checkpoints later."""
    lines = [
        "",
        f"## Lead / lag (max lag {design.max_lag} checkpoints)",
        "",
        "Metric at checkpoint t against accuracy at t + k, from the domain's first memorization on, "
        "runs that crossed. Best lag: the k of largest |r| per run; median over runs.",
        "",
    ]
    lag = tables["leadlag"].filter(pl.col("r").is_not_nan())
    best = (
        lag.with_columns(absr=pl.col("r").abs())
        .sort("absr", descending=True)
        .group_by(["arm", "seed", "domain", "metric"], maintain_order=True)
        .first()
    )
    lines.append(
        _markdown(
            ["arm", "metric", "r at lag 0 (mean)", "best lag (median)", "best lags", "runs"],
            [
                [
                    arm,
                    metric,
                    float(
                        lag.filter(
                            (pl.col("arm") == arm)
                            & (pl.col("metric") == metric)
                            & (pl.col("lag") == 0)
                        )["r"].mean()
                        or np.nan
                    ),
                    float(part["lag"].median()),
                    " ".join(map(str, part.sort("seed")["lag"].to_list())),
                    part.height,
                ]
                for (arm, metric), part in best.sort("arm").group_by(
                    ["arm", "metric"], maintain_order=True
                )
            ],
        )
    )
    return lines


def _detector_section(tables: Mapping[str, pl.DataFrame], design: StudyDesign) -> list[str]:
    """Detector hits, leads and false alarms per arm and signal, and per run of the compared arms."""
    det = tables["detections"]
    lines = [
        "",
        "## Detector: generalization under way, from training data only",
        "",
        f"Fires at the first checkpoint after the domain's first memorization onset where the signal's "
        f"{design.detector_window}-checkpoint moving average fell {design.detector_run} checkpoints in "
        f"a row and lies ≥ {design.detector_min_drop:.0%} below its maximum since the onset. "
        "Parameters fixed before any study run, not tuned. Lead: checkpoints from firing to accuracy "
        f"crossing {design.level} (> 0: before). A false alarm: fired in a run whose accuracy never "
        "crossed (the never-generalizing control domain, or a seed that did not grok).",
        "",
    ]
    summary_rows = []
    for (arm, signal), part in det.group_by(["arm", "signal"], maintain_order=True):
        hit = part.filter(pl.col("crossed").is_not_null())
        miss = part.filter(pl.col("crossed").is_null())
        leads = hit["lead"].drop_nulls()
        summary_rows.append(
            [
                arm,
                signal,
                hit.height,
                int((leads > 0).sum()),
                int((leads <= 0).sum()),
                hit["fired"].null_count(),
                float(leads.median()) if leads.len() else np.nan,
                f"{int(miss['fired'].is_not_null().sum())} / {miss.height}",
            ]
        )
    lines.append(
        _markdown(
            [
                "arm",
                "signal",
                "runs crossed",
                "fired before",
                "fired at/after",
                "never fired",
                "median lead",
                "false alarms",
            ],
            summary_rows,
        )
    )
    for arm in design.compared_arms:
        lines += ["", f"Per run (arm `{arm}`, signal distance_tracked):", ""]
        lines.append(
            _markdown(
                ["seed", "domain", "memorization onset", "fired", "crossed", "lead"],
                det.filter((pl.col("arm") == arm) & (pl.col("signal") == "distance_tracked"))
                .sort("seed", "domain")
                .select("seed", "domain", "memorization_onset", "fired", "crossed", "lead")
                .rows(),
            )
        )
    return lines


def _regime_section(tables: Mapping[str, pl.DataFrame]) -> list[str]:
    """Whether each run was in the paper's regime: conditions A1–A7 per arm and seed."""
    regime = tables.get("regime")
    if regime is None or regime.is_empty():
        return []
    conditions = sorted(regime["condition"].unique().to_list())
    lines = [
        "",
        "## Regime conditions (is the run in the paper's regime?)",
        "",
        "A1 no probe trained on more than twice; A2 every domain's ε on the 0.1 grid; A3 ≥ 2 skill "
        "domains with a fixed group of ≥ 40 probes memorized ≥ 3 checkpoints before held-out "
        "accuracy's rise; A4 that group's loss within δ of its final value from the rise on, and "
        "the domain's training-loss range ≤ 20% of its drop; A5 held-out accuracy rises by ≥ 0.3 "
        "on ≥ 2 domains, rise starts ≥ 3 checkpoints apart; A6 the facts control at chance "
        "(≤ chance + 0.03); A7 the run's wall time. ✓ holds, ✗ fails (the measured values are "
        "in `tables/regime.parquet`).",
    ]
    for (arm,), part in regime.group_by(["arm"], maintain_order=True):
        held = part.group_by(["seed", "condition"], maintain_order=True).agg(pl.col("holds").all())
        rows, in_regime = [], 0
        for (seed,), per_seed in held.group_by(["seed"], maintain_order=True):
            marks = dict(per_seed.select("condition", "holds").rows())
            core = [marks[c] for c in CORE if c in marks]
            in_regime += all(core)
            rows.append(
                [seed, *[{True: "✓", False: "✗"}.get(marks.get(c), "–") for c in conditions]]
            )
        lines += [
            "",
            f"Arm `{arm}`: A1–A6 hold on {in_regime} of {len(rows)} seeds.",
            "",
            _markdown(["seed", *conditions], sorted(rows)),
        ]
    return lines


def _grokking_section(tables: Mapping[str, pl.DataFrame]) -> list[str]:
    """The testbed's own grokking verdict per run."""
    from pathwatch.testbed.grokking import MEMORIZED

    grok = tables["grokking"]
    return [
        "",
        "## Did each run grok?",
        "",
        f"From each testbed's own curves: memorized = first checkpoint with training accuracy ≥ "
        f"{MEMORIZED:g} (held-out accuracy then); grokked = held-out ≤ 0.1 at that moment and ≥ 0.9 "
        "later. Grokked (seed, domain) pairs per arm: "
        + "; ".join(
            f"{arm} {int(part['grokked'].sum())} of {part.height}"
            for (arm,), part in grok.group_by(["arm"], maintain_order=True)
        )
        + ".",
        "",
        _markdown(
            [
                "arm",
                "seed",
                "domain",
                "memorized at",
                "held-out then",
                "held-out ≥ 0.5 at",
                "≥ 0.9 at",
                "delay",
                "final held-out",
                "grokked",
            ],
            grok.select(
                "arm",
                "seed",
                "domain",
                "memorized_step",
                "heldout_at_memorized",
                "step_half",
                "step_generalized",
                "delay",
                "final_heldout",
                pl.when("grokked").then(pl.lit("yes")).otherwise(pl.lit("no")),
            ).rows(),
        ),
    ]


def _overlap_section(tables: Mapping[str, pl.DataFrame], figures: Sequence[Path]) -> list[str]:
    """Training accuracy at the crossing, and the figures."""
    return [
        "",
        "## Overlap of memorization and generalization",
        "",
        "Training accuracy of the domain at the checkpoint where its held-out accuracy crossed.",
        "",
        _markdown(
            ["arm", "seed", "domain", "crossed", "train accuracy", "held-out accuracy"],
            tables["overlap"].rows(),
        ),
        "",
        "## Figures",
        "",
        *[f"![{p.stem}](figures/{p.name})" for p in figures],
        "",
    ]
