"""The self-contained HTML report: summary, per-domain interactive figures, correlation table.

plotly.js is inlined once in the page head; every figure is a ``<div>`` drawn by it. The page loads
nothing from the network (no CDN, no web fonts, no images), so it opens offline from a file.
"""

from __future__ import annotations

import re
from functools import cache
from html import escape

import numpy as np
import plotly.io as pio
import polars as pl
from plotly.offline import get_plotlyjs

from pathwatch import __version__
from pathwatch.report.figures import Chart, Trace
from pathwatch.report.summary import POOLED, Finding, RunTables, fmt, fmt_p, fmt_step

_HEADINGS = (  # summary headings and the finding topics under each
    ("Run", ("run",)),
    ("Memorization", ("memorization",)),
    ("Pathways", ("distance", "consistency", "churn")),
    ("Ground truth", ("generalization",)),
    ("Local grokking delays", ("delay",)),
    ("Which metric tracks accuracy", ("correlation",)),
    ("Not in this run", ("missing",)),
)
_CONFIG = {"displaylogo": False, "responsive": True}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1280px; padding: 0 24px 48px; color: #222; }
h1 { margin-top: 24px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 40px; }
nav a { margin-right: 12px; }
.summary li { margin: 4px 0; } .summary h3 { margin: 14px 0 4px; font-size: 1.02em; }
.figure { margin: 18px 0 28px; }
.caption { color: #555; font-size: 0.9em; margin: 2px 0 0; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.text { text-align: left; }
.needs { border-radius: 4px; padding: 1px 6px; font-size: 0.85em; white-space: nowrap; }
.needs-training { background: #d9f2d9; } .needs-held-out { background: #fde2c8; }
.meta { color: #666; font-size: 0.85em; }
"""


def slugs(names: list[str]) -> dict[str, str]:
    """Each name as a distinct HTML id / file-name fragment (letters, digits, ``_.-``)."""
    out: dict[str, str] = {}
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "_"
        stem, n = base, 1
        while stem in out.values():
            n += 1
            stem = f"{base}-{n}"
        out[name] = stem
    return out


def _plotly_trace(t: Trace, xref: str, yref: str) -> dict:
    x, y = np.asarray(t.x).tolist(), np.asarray(t.y).tolist()
    common = {
        "type": "scatter",
        "name": escape(t.name),
        "xaxis": xref,
        "yaxis": yref,
        "showlegend": t.legend,
    }
    if t.kind == "band":
        return common | {
            "x": x + x[::-1],
            "y": np.asarray(t.y_high).tolist() + y[::-1],
            "fill": "toself",
            "fillcolor": t.color,
            "opacity": 0.2,
            "line": {"width": 0},
            "hoverinfo": "skip",
        }
    if t.kind == "markers":
        marker = {
            "color": "rgba(0,0,0,0)" if t.hollow else t.color,
            "size": 8,
            "line": {"color": t.color, "width": 1.5},
        }
        return common | {"x": x, "y": y, "mode": "markers", "marker": marker}
    return common | {
        "x": x,
        "y": y,
        "mode": "lines+markers" if 2 < len(x) <= 40 else "lines",
        "line": {"color": t.color, "dash": "dash" if t.dash else "solid", "width": 2},
        "marker": {"size": 4},
    }


@cache
def _template() -> dict:
    return pio.templates["plotly_white"].to_plotly_json()


def to_plotly(chart: Chart) -> dict:
    """Draw a chart with plotly.

    Parameters
    ----------
    chart : Chart
        From one of the chart functions of :mod:`pathwatch.report.figures`.

    Returns
    -------
    dict
        A plotly figure (``data`` and ``layout``), as accepted by ``plotly.graph_objects.Figure``.
    """
    n, ncols = len(chart.panels), chart.ncols
    nrows = -(-n // ncols)
    twin = any(t.right for p in chart.panels for t in p.traces)
    # the grid, in pixels: panels of 300 px separated by 100 px, in a paper of 0..1
    row_px, gap_px, margin = 300, 100, {"t": 80, "b": 70, "l": 70, "r": 70 if twin else 30}
    height = nrows * row_px + (nrows - 1) * gap_px + margin["t"] + margin["b"]
    plot_px = height - margin["t"] - margin["b"]
    gap_x = 0.14 if twin else 0.09
    width = (1.0 - gap_x * (ncols - 1)) / ncols
    data, layout = (
        [],
        {
            "title": {"text": escape(chart.title)},
            "template": _template(),
            "height": height,
            "showlegend": chart.legend,
            "margin": margin,
            "hovermode": "closest",
            "legend": {"font": {"size": 11}, "x": 1.1 if twin else 1.02},
            "annotations": [],
        },
    )
    for i, panel in enumerate(chart.panels):
        row, col = divmod(i, ncols)
        top = 1.0 - row * (row_px + gap_px) / plot_px
        x0 = col * (width + gap_x)
        k = "" if i == 0 else str(i + 1)
        note = f"<br><sub>{escape(panel.note)}</sub>" if panel.note else ""
        layout[f"xaxis{k}"] = {
            "domain": [x0, x0 + width],
            "anchor": f"y{k}",
            "title": {"text": escape(panel.xlabel) + note},
        }
        layout[f"yaxis{k}"] = {
            "domain": [max(0.0, top - row_px / plot_px), top],
            "anchor": f"x{k}",
            "title": {"text": escape(panel.ylabel)},
        }
        k2 = str(n + i + 1)
        if any(t.right for t in panel.traces):
            layout[f"yaxis{k2}"] = {
                "overlaying": f"y{k}",
                "side": "right",
                "anchor": f"x{k}",
                "showgrid": False,
                "tickmode": "auto",
                "title": {"text": escape(panel.ylabel_right or "")},
            }
        data += [_plotly_trace(t, f"x{k}", f"y{k2}" if t.right else f"y{k}") for t in panel.traces]
        if n > 1:
            layout["annotations"].append(
                {
                    "text": escape(panel.title),
                    "x": x0 + width / 2,
                    "y": top,
                    "xref": "paper",
                    "yref": "paper",
                    "xanchor": "center",
                    "yanchor": "bottom",
                    "showarrow": False,
                    "font": {"size": 13},
                }
            )
    return {"data": data, "layout": layout}


def _figure_html(chart: Chart, domain: str, stem: str) -> str:
    div_id = f"fig-{stem}-{chart.key}"
    body = pio.to_html(
        to_plotly(chart),
        include_plotlyjs=False,
        full_html=False,
        div_id=div_id,
        config=_CONFIG,
        validate=False,
    )
    return (
        f'<div class="figure" data-figure="{chart.key}" data-domain="{escape(domain)}">{body}'
        f'<p class="caption">{escape(chart.caption)}</p></div>'
    )


def _correlation_table(correlations: pl.DataFrame, domains: list[str]) -> str:
    order = {d: i for i, d in enumerate(domains)}
    rows = sorted(
        correlations.iter_rows(named=True),
        key=lambda r: (order.get(r["domain"], len(order)), r["domain"], r["metric"]),
    )
    head = (
        "<tr><th>domain</th><th>metric</th><th>needs</th><th>n</th><th>steps</th>"
        "<th>Pearson r</th><th>95% CI</th><th>p</th>"
        "<th>Spearman ρ</th><th>95% CI</th><th>p</th></tr>"
    )
    body = []
    for r in rows:
        needs = escape(str(r["needs"]))
        kind = "needs-held-out" if "held-out" in needs else "needs-training"
        body.append(
            f'<tr><td class="text">{escape(str(r["domain"]))}</td>'
            f'<td class="text">{escape(str(r["metric"]))}</td>'
            f'<td class="text"><span class="needs {kind}">needs {needs}</span></td>'
            f"<td>{r['n']}</td><td>{fmt_step(r['first_step'])}–{fmt_step(r['last_step'])}</td>"
            f"<td>{fmt(r['pearson_r'], sign=True)}</td>"
            f"<td>[{fmt(r['pearson_ci_low'], sign=True)}, {fmt(r['pearson_ci_high'], sign=True)}]</td>"
            f"<td>{fmt_p(r['pearson_p'])}</td><td>{fmt(r['spearman_rho'], sign=True)}</td>"
            f"<td>[{fmt(r['spearman_ci_low'], sign=True)}, {fmt(r['spearman_ci_high'], sign=True)}]</td>"
            f"<td>{fmt_p(r['spearman_p'])}</td></tr>"
        )
    return (
        f'<table id="correlation-table"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
    )


def render_html(tables: RunTables, findings: list[Finding], charts: dict[str, list[Chart]]) -> str:
    """The report page.

    Parameters
    ----------
    tables : RunTables
        The run's tables.
    findings : list of Finding
        From :func:`pathwatch.report.summary.summarize`; shown on top.
    charts : dict of str to list of Chart
        Per domain (pooled first), the charts of its section.

    Returns
    -------
    str
        One self-contained HTML document.
    """
    title = f"pathwatch report — {tables.run_dir.name}"
    ids = slugs(list(charts))
    nav = " ".join(
        f'<a href="#domain-{ids[d]}">{"all domains" if d == POOLED else escape(d)}</a>'
        for d in charts
    )
    if tables.correlations is not None:
        nav += ' <a href="#correlations">correlations</a>'
    summary = "".join(
        f"<h3>{label}</h3><ul>"
        + "".join(f'<li data-topic="{f.topic}">{escape(f.text)}</li>' for f in found)
        + "</ul>"
        for label, topics in _HEADINGS
        if (found := [f for f in findings if f.topic in topics])
    )
    sections = []
    for domain, domain_charts in charts.items():
        name = "All domains pooled" if domain == POOLED else f"Domain: {escape(domain)}"
        figures = "".join(_figure_html(c, domain, ids[domain]) for c in domain_charts)
        sections.append(
            f'<section id="domain-{ids[domain]}" data-domain="{escape(domain)}">'
            f"<h2>{name}</h2>{figures}</section>"
        )
    if tables.correlations is not None:
        sections.append(
            '<section id="correlations"><h2>Metrics against accuracy (monitor validation)</h2>'
            '<p class="caption">Pearson and Spearman correlation of each metric with test accuracy '
            "over the checkpoints after accuracy starts its sustained rise, with n, p-values and "
            'bootstrap 95% confidence intervals. <span class="needs needs-training">needs training '
            'data</span> metrics are available without any test set; <span class="needs '
            'needs-held-out">needs held-out data</span> baselines are not.</p>'
            f"{_correlation_table(tables.correlations, list(charts))}</section>"
        )
    steps = tables.steps
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>{escape(title)}</h1>"
        f'<p class="meta">pathwatch {__version__} · {len(steps)} checkpoints, steps '
        f"{fmt_step(steps[0])}–{fmt_step(steps[-1])} · run directory {escape(str(tables.run_dir))}</p>"
        f"<nav>{nav}</nav>"
        f'<section id="summary" class="summary"><h2>Summary</h2>{summary}</section>'
        f"{''.join(sections)}</body></html>\n"
    )
