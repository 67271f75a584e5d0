"""Charts → PNG files with matplotlib (Agg), for papers and slides; :mod:`.html` draws the same
charts with plotly, so the PNG and the HTML can never disagree."""

from __future__ import annotations

from pathlib import Path

from pathwatch.report.figures import Chart, Panel


def render_png(chart: Chart, path: Path, *, dpi: int = 110) -> Path:
    """Draw a chart with matplotlib (Agg) into a PNG file.

    Parameters
    ----------
    chart : Chart
        From one of the chart functions.
    path : Path
        The PNG to write.
    dpi : int, optional
        Resolution.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.figure import Figure  # Figure() needs no pyplot state and uses Agg to save

    ncols = chart.ncols
    nrows = -(-len(chart.panels) // ncols)
    twin = any(t.right for p in chart.panels for t in p.traces)
    # a fixed layout in inches: constrained layout would draw every figure twice
    w, h, left, bottom = 3.8, 2.6, 0.75, 0.6
    gap_x, gap_y = 0.85 + (0.6 if twin else 0.0), 0.9
    top = 0.45 + (0.35 if len(chart.panels) > 1 else 0.0)
    right = (0.6 if twin else 0.2) + (3.0 if chart.legend else 0.0)
    width = left + ncols * w + (ncols - 1) * gap_x + right
    height = bottom + nrows * h + (nrows - 1) * gap_y + top
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=gap_x / w,
        hspace=gap_y / h,
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, chart.panels, strict=False):
        _draw_panel(ax, panel, legend=chart.legend)
    for ax in axes[len(chart.panels) :]:
        ax.set_visible(False)
    if len(chart.panels) > 1:
        fig.suptitle(chart.title, fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _draw_panel(ax, panel: Panel, *, legend: bool) -> None:
    right = ax.twinx() if any(t.right for t in panel.traces) else None
    for t in panel.traces:
        target = right if t.right else ax
        label = t.name if t.legend else "_nolegend_"
        if t.kind == "band":
            target.fill_between(t.x, t.y, t.y_high, color=t.color, alpha=0.2, lw=0, label=label)
        elif t.kind == "markers":
            target.scatter(
                t.x,
                t.y,
                s=28,
                label=label,
                zorder=3,
                facecolors="none" if t.hollow else t.color,
                edgecolors=t.color,
            )
        else:
            target.plot(
                t.x,
                t.y,
                color=t.color,
                ls="--" if t.dash else "-",
                lw=1.6,
                label=label,
                marker="." if 2 < len(t.x) <= 40 else None,
                ms=4,
            )
    ax.set_title(panel.title, fontsize=10, y=1.0, pad=6)  # a fixed y skips auto-placement
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    if right is not None:
        right.set_ylabel(panel.ylabel_right or "")
    if panel.note:
        ax.text(
            0.02,
            0.02,
            panel.note,
            transform=ax.transAxes,
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
        )
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if right is not None:
            h2, l2 = right.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if handles:
            (right or ax).legend(
                handles,
                labels,
                fontsize=7,
                loc="upper left",
                bbox_to_anchor=(1.2 if right else 1.02, 1),
                frameon=False,
                ncols=1 if len(handles) <= 16 else 2,
            )
