"""The report's figures: one function per figure, each returning a backend-neutral :class:`Chart`.

A chart is data (traces, panels, marked steps), built once from the run's tables:
:func:`pathwatch.report.png.render_png` draws it with matplotlib (Agg) for papers and slides,
:func:`pathwatch.report.html.to_plotly` interactively, so the PNG and the HTML never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import matplotlib as mpl
import numpy as np
import polars as pl

from pathwatch.report.summary import POOLED, RunTables, fmt, fmt_step

STEP = "checkpoint step"
METRICS: dict[str, str] = {
    "distance": "pathway distance",
    "consistency": "consistency",
    "smoothness": "smoothness (1 − consistency)",
    "adjacent_cosine": "mean adjacent-layer cosine",
    "loss": "training loss (nats)",
}


@dataclass(frozen=True)
class Trace:
    """One series: a line, markers, or a shaded band between ``y`` and ``y_high``."""

    x: np.ndarray
    y: np.ndarray
    name: str
    kind: Literal["line", "markers", "band"] = "line"
    color: str | None = None
    right: bool = False  # drawn against the panel's right y axis
    dash: bool = False
    hollow: bool = False
    y_high: np.ndarray | None = None
    legend: bool = True  # listed in the legend


@dataclass(frozen=True)
class Panel:
    """One set of axes."""

    title: str
    xlabel: str
    ylabel: str
    traces: tuple[Trace, ...]
    ylabel_right: str | None = None
    note: str = ""  # a line printed inside the axes, e.g. the fit's MSE and R²


@dataclass(frozen=True)
class Chart:
    """A figure: panels on a grid of ``ncols`` columns."""

    key: str
    title: str
    panels: tuple[Panel, ...]
    caption: str
    ncols: int = 1
    legend: bool = True


def _colors(n: int, cmap: str = "viridis") -> list[str]:
    """``n`` hex colors spread over a colormap."""
    rgba = mpl.colormaps[cmap](np.linspace(0.0, 0.9, max(n, 1)))
    return [mpl.colors.to_hex(c) for c in rgba[:n]]


def _distance_label(tables: RunTables, *, layers: bool = False) -> str:
    return f"pathway distance ({tables.unit(layers=layers)} edits)"


def _distances(tables: RunTables, domain: str) -> pl.DataFrame:
    """Rows of a domain whose distance is defined (a group of one sample has none)."""
    return tables.group_metrics.filter(
        (pl.col("domain") == domain) & pl.col("distance").is_not_nan()
    )


def _whole(tables: RunTables, domain: str, group: str = POOLED) -> pl.DataFrame:
    """Whole-pathway rows (layer −1) of one domain and group, sorted by step."""
    return tables.group_metrics.filter(domain=domain, group=group, layer=-1).sort("step")


def _onset_of(group: str) -> int:
    """The step of a ``train@<t*>`` / ``test@<t#>`` group name."""
    return int(group.split("@", 1)[1])


def memorization_chart(tables: RunTables, domain: str) -> Chart:
    """Memorized-sample count over checkpoints with accuracy and cumulative generalized test items.

    Parameters
    ----------
    tables : RunTables
        The run's tables.
    domain : str
        A training domain, or ``"all"`` for the pooled one.

    Returns
    -------
    Chart
    """
    steps = tables.steps
    onsets = tables.onsets if domain == POOLED else tables.onsets.filter(domain=domain)
    mem = onsets["mem_onset"].to_numpy()
    count = ((mem[None, :] >= 0) & (mem[None, :] <= steps[:, None])).sum(axis=1)
    traces = [Trace(steps, count, "memorized samples", color="#1f77b4")]
    acc = tables.domain_accuracy(domain)
    if acc is not None:
        traces.append(
            Trace(
                acc["step"].to_numpy(),
                acc["accuracy"].to_numpy(),
                "test accuracy",
                color="#d62728",
                right=True,
            )
        )
    if tables.test_onsets is not None:
        items = tables.test_onsets if domain == POOLED else tables.test_onsets.filter(domain=domain)
        if items.height:
            gen = items["gen_onset"].to_numpy()
            frac = ((gen[None, :] >= 0) & (gen[None, :] <= steps[:, None])).mean(axis=1)
            traces.append(
                Trace(
                    steps,
                    frac,
                    "test items generalized (cumulative)",
                    color="#ff7f0e",
                    right=True,
                    dash=True,
                )
            )
    eps = tables.epsilon.filter(domain=domain)
    title = f"{domain}: memorization and accuracy"
    if eps.height:
        title += f" (ε = {fmt(eps['epsilon'][0], 3)})"
    return Chart(
        "memorization",
        title,
        (
            Panel(
                title,
                STEP,
                f"memorized samples (of {onsets.height})",
                tuple(traces),
                ylabel_right="fraction" if len(traces) > 1 else None,
            ),
        ),
        caption="Samples memorized by each checkpoint (loss ≤ ε and within δ of its final value "
        "from then on); on the right axis, per-checkpoint test accuracy and the fraction of test "
        "items that have reached their generalization onset.",
    )


def pairs_chart(tables: RunTables, domain: str) -> Chart | None:
    """Matched train/test groups: train-group loss and accuracy on one step axis, delays marked.

    Parameters
    ----------
    tables : RunTables
        The run's tables.
    domain : str
        A training domain, or ``"all"`` for the pooled one.

    Returns
    -------
    Chart or None
        None when the run has no matched groups for the domain.
    """
    if tables.matches is None:
        return None
    matches = tables.matches.filter(domain=domain).sort("mem_onset")
    if matches.is_empty():
        return None
    acc = tables.domain_accuracy(domain)
    top, bottom = [], []
    if acc is not None:
        top.append(
            Trace(
                acc["step"].to_numpy(),
                acc["accuracy"].to_numpy(),
                f"{domain} test accuracy",
                color="#000000",
                right=True,
                dash=True,
            )
        )
    for m, color in zip(matches.iter_rows(named=True), _colors(matches.height), strict=True):
        pair = f"{m['train_group']} → {m['test_group']}"
        rows = _whole(tables, domain, m["train_group"])
        s, loss = rows["step"].to_numpy(), rows["loss"].to_numpy()
        top.append(Trace(s, loss, f"loss of {m['train_group']}", color=color))
        at = s == m["mem_onset"]
        top.append(
            Trace(
                s[at],
                loss[at],
                f"{m['train_group']} memorized (t*)",
                kind="markers",
                color=color,
                legend=False,
            )
        )
        if acc is not None:
            hit = acc.filter(step=m["gen_onset"])
            top.append(
                Trace(
                    hit["step"].to_numpy(),
                    hit["accuracy"].to_numpy(),
                    f"{m['test_group']} generalized (t#)",
                    kind="markers",
                    color=color,
                    right=True,
                    hollow=True,
                    legend=False,
                )
            )
        ends, row = np.array([m["mem_onset"], m["gen_onset"]]), np.full(2, len(bottom) // 2 + 1)
        bottom += [
            Trace(
                ends,
                row,
                f"{pair}: delay {fmt_step(m['delay'])}, similarity {fmt(m['similarity'])}",
                color=color,
            ),
            Trace(ends, row, f"{pair} t*, t#", kind="markers", color=color, legend=False),
        ]
    title = f"{domain}: matched train/test groups"
    return Chart(
        "pairs",
        title,
        (
            Panel(
                f"{domain}: train-group loss and test accuracy",
                STEP,
                "training loss (nats)",
                tuple(top),
                ylabel_right="test accuracy" if acc is not None else None,
            ),
            Panel(
                f"{domain}: local grokking delays (t* → t#)",
                STEP,
                "matched pair (by t*)",
                tuple(bottom),
            ),
        ),
        caption="Top: mean training loss of each matched train group (filled dot: its memorization "
        "onset t*) and the domain's test accuracy (right axis; hollow dot: the matched test "
        "group's generalization onset t#). Bottom: one row per pair, a bar from its memorization "
        "onset t* to its generalization onset t#: the local grokking delay.",
    )


def group_distance_chart(tables: RunTables, domain: str) -> Chart:
    """Pathway distance over checkpoints per memorization group, the memorization step marked.

    Parameters
    ----------
    tables : RunTables
        The run's tables.
    domain : str
        A training domain, or ``"all"`` for the pooled one.

    Returns
    -------
    Chart
    """
    rows = _distances(tables, domain).filter(layer=-1)
    groups = sorted(
        (g for g in rows["group"].unique().to_list() if g.startswith("train@")), key=_onset_of
    )
    traces = []
    pooled = rows.filter(group=POOLED).sort("step")
    if pooled.height:
        s = pooled["step"].to_numpy()
        low, high = pooled["distance_ci_low"].to_numpy(), pooled["distance_ci_high"].to_numpy()
        if np.any(high > low):
            traces.append(Trace(s, low, "95% CI", kind="band", color="#7f7f7f", y_high=high))
        traces.append(Trace(s, pooled["distance"].to_numpy(), "all samples", color="#000000"))
    memorized = rows.filter(group="memorized").sort("step")
    if memorized.height:
        traces.append(
            Trace(
                memorized["step"].to_numpy(),
                memorized["distance"].to_numpy(),
                "memorized samples (any t*)",
                color="#7f7f7f",
                dash=True,
            )
        )
    for group, color in zip(groups, _colors(len(groups)), strict=True):
        g = rows.filter(group=group).sort("step")
        s, d = g["step"].to_numpy(), g["distance"].to_numpy()
        traces.append(Trace(s, d, group, color=color))
        at = s == _onset_of(group)
        if at.any():
            traces.append(
                Trace(s[at], d[at], f"{group} memorized", kind="markers", color=color, legend=False)
            )
    return Chart(
        "group_distance",
        f"{domain}: pathway distance per memorization group",
        (
            Panel(
                f"{domain}: pathway distance per memorization group (dot: t*)",
                STEP,
                _distance_label(tables),
                tuple(traces),
            ),
        ),
        caption="Mean pairwise pathway distance within each memorization group train@t* (samples "
        "memorized from step t*), the dot marking t*; black: all samples of the domain; grey "
        "dashed: every memorized sample, whatever its t*.",
    )


def layer_distance_chart(tables: RunTables, domain: str) -> Chart:
    """Pathway distance over checkpoints per MoE layer (all samples of the domain).

    Parameters
    ----------
    tables : RunTables
        The run's tables.
    domain : str
        A training domain, or ``"all"`` for the pooled one.

    Returns
    -------
    Chart
    """
    rows = _distances(tables, domain).filter((pl.col("group") == POOLED) & (pl.col("layer") >= 0))
    layers = sorted(rows["layer"].unique().to_list())
    traces = tuple(
        Trace(g["step"].to_numpy(), g["distance"].to_numpy(), f"layer {layer}", color=color)
        for layer, color in zip(layers, _colors(len(layers), "plasma"), strict=True)
        for g in [rows.filter(layer=layer).sort("step")]
    )
    title = f"{domain}: pathway distance per MoE layer"
    return Chart(
        "layer_distance",
        title,
        (Panel(title, STEP, _distance_label(tables, layers=True), traces),),
        caption="Mean pairwise distance of the per-layer expert lists, by MoE layer index.",
    )


def consistency_chart(tables: RunTables, domain: str) -> Chart:
    """Consistency, smoothness and raw mean adjacent-layer cosine over checkpoints.

    Parameters
    ----------
    tables : RunTables
        The run's tables.
    domain : str
        A training domain, or ``"all"`` for the pooled one.

    Returns
    -------
    Chart
    """
    rows = _whole(tables, domain)
    s = rows["step"].to_numpy()
    colors = {"consistency": "#2ca02c", "smoothness": "#9467bd", "adjacent_cosine": "#8c564b"}
    traces = tuple(
        Trace(s, rows[col].to_numpy(), METRICS[col], color=color) for col, color in colors.items()
    )
    n_nan = int(rows["consistency_nan"].sum())
    title = f"{domain}: pathway consistency"
    return Chart(
        "consistency",
        title,
        (
            Panel(
                title,
                STEP,
                "value (unitless)",
                traces,
                note=f"NaN consistency: {n_nan} sample-checkpoints",
            ),
        ),
        caption="Group means of consistency C, smoothness 1 − C and the raw mean cosine of "
        "adjacent-layer expert embeddings (C can rise because the cosines fall). NaN samples "
        "(fewer than 3 MoE layers, or no positive cosine) are left out of the means and counted.",
    )


def _window(
    tables: RunTables, domain: str, metric: str | None = None
) -> tuple[float, float] | None:
    """The correlation window (first, last step) of a metric, else of the domain, else ``None``."""
    if tables.correlations is None:
        return None
    rows = tables.correlations.filter(domain=domain)
    own = rows.filter(metric=metric) if metric else rows
    rows = own if own.height else rows
    first, last = rows["first_step"].min(), rows["last_step"].max()
    return None if first is None or last is None else (float(first), float(last))


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares line y ≈ a·x + b: returns (a, b, MSE, R²) over the finite points."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.ptp(x) == 0:
        return (np.nan, np.nan, np.nan, np.nan)
    a, b = np.polyfit(x, y, 1)
    resid = y - (a * x + b)
    mse = float(np.mean(resid**2))
    var = float(np.var(y))
    return float(a), float(b), mse, (1.0 - mse / var) if var > 0 else np.nan


def metric_accuracy_chart(tables: RunTables, domain: str) -> Chart | None:
    """Each metric against accuracy across checkpoints: scatter, linear fit, MSE and R².

    Parameters
    ----------
    tables : RunTables
        The run's tables.
    domain : str
        A training domain, or ``"all"`` for the pooled one.

    Returns
    -------
    Chart or None
        None when the run has no accuracy for the domain.
    """
    acc = tables.domain_accuracy(domain)
    if acc is None:
        return None
    joined = _whole(tables, domain).join(acc, on="step", how="inner")
    if joined.height < 2:
        return None
    labels = METRICS | {"distance": _distance_label(tables)}
    panels = []
    for metric, label in labels.items():
        x, y, s = (joined[c].to_numpy().astype(float) for c in (metric, "accuracy", "step"))
        window = _window(tables, domain, metric)
        inside = (s >= window[0]) & (s <= window[1]) if window else np.ones(len(s), bool)
        a, b, mse, r2 = linear_fit(x[inside], y[inside])
        traces = [
            Trace(
                x[inside],
                y[inside],
                "checkpoints in the correlation window",
                kind="markers",
                color="#1f77b4",
            )
        ]
        if (~inside).any():
            traces.append(
                Trace(
                    x[~inside],
                    y[~inside],
                    "other checkpoints",
                    kind="markers",
                    color="#7f7f7f",
                    hollow=True,
                )
            )
        if np.isfinite(a):
            xs = np.array([np.nanmin(x[inside]), np.nanmax(x[inside])])
            traces.append(Trace(xs, a * xs + b, "linear fit", color="#d62728"))
        panels.append(
            Panel(
                METRICS[metric],
                label,
                "test accuracy",
                tuple(traces),
                note=f"MSE {fmt(mse, 4)}, R² {fmt(r2)}",
            )
        )
    window = _window(tables, domain)
    span = (
        f"the correlation window, steps {fmt_step(window[0])}–{fmt_step(window[1])}"
        if window
        else "all checkpoints (no correlation window in the run)"
    )
    return Chart(
        "metric_accuracy",
        f"{domain}: metrics against test accuracy",
        tuple(panels),
        caption=f"One point per checkpoint; the line is a least-squares fit over {span} (hollow: "
        "checkpoints outside it), with its mean squared error and R².",
        ncols=3,
        legend=False,
    )


CHARTS: tuple[Callable[[RunTables, str], Chart | None], ...] = (
    memorization_chart,
    pairs_chart,
    group_distance_chart,
    layer_distance_chart,
    consistency_chart,
    metric_accuracy_chart,
)
"""Every figure of a domain's section, in the order the report shows them."""


def domain_charts(tables: RunTables, domain: str) -> list[Chart]:
    """The charts of one domain that its tables support."""
    return [c for make in CHARTS if (c := make(tables, domain)) is not None]
