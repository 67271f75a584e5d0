"""Analysis tables → ``report.html`` (self-contained, opens offline) and ``figures/*.png``.

``summary.py`` reads the tables and states what they show, ``figures.py`` builds one chart per
figure and draws PNGs with matplotlib, ``html.py`` draws the same charts with plotly into one page.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pathwatch._validate import check_path
from pathwatch.errors import StoreError
from pathwatch.report.figures import domain_charts
from pathwatch.report.html import render_html, slugs
from pathwatch.report.png import render_png
from pathwatch.report.summary import load_tables, summarize

__all__ = ["build_report"]


def build_report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """Write the HTML report and the PNG figures of an analysed run.

    Parameters
    ----------
    run_dir : str or Path
        A run directory on which ``pathwatch analyze`` has written ``tables/*.parquet``.
    out : str or Path, optional
        Directory that receives ``report.html`` and ``figures/``; default ``run_dir``.

    Returns
    -------
    Path
        The written ``report.html``.

    Raises
    ------
    InputError
        The run directory, its manifest or a required analysis table is missing or invalid.
    StoreError
        The output cannot be written.

    Examples
    --------
    >>> from pathwatch.report import build_report
    >>> build_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    run_dir = check_path("build_report", "run_dir", run_dir)
    out = check_path("build_report", "out", out, allow_none=True) or run_dir
    tables = load_tables(run_dir)
    findings = summarize(tables)
    charts = {domain: domain_charts(tables, domain) for domain in tables.domains}
    page = render_html(tables, findings, charts)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # build everything under temporary names, then swap in: never a half-written report
        staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
        try:
            stems = slugs(list(charts))  # the same names as the HTML section ids
            for domain, domain_list in charts.items():
                for chart in domain_list:
                    render_png(chart, staging / "figures" / f"{stems[domain]}-{chart.key}.png")
            (staging / "report.html").write_text(page, encoding="utf-8")
            figures = out / "figures"
            if figures.exists():
                shutil.rmtree(figures)
            os.replace(staging / "figures", figures)
            os.replace(staging / "report.html", out / "report.html")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise StoreError(
            f"{out}: cannot write the report ({exc}); check space and permissions."
        ) from exc
    return out / "report.html"
