"""build_report on fabricated analysis tables: sections, self-containment, PNGs, summary numbers, errors."""

from __future__ import annotations

import json
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from report_tables import make_run

from pathwatch.errors import InputError
from pathwatch.report import build_report
from pathwatch.report.figures import linear_fit
from pathwatch.report.html import slugs
from pathwatch.report.summary import fmt, fmt_p, load_tables, summarize

FIGURES = (
    "memorization",
    "pairs",
    "group_distance",
    "layer_distance",
    "consistency",
    "metric_accuracy",
)


class _Page(HTMLParser):
    """Collects every tag with its attributes, and the text of the summary."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.summary: list[str] = []
        self._in_li = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_li = tag == "li" and "data-topic" in dict(attrs)

    def handle_endtag(self, tag: str) -> None:
        self._in_li = self._in_li and tag != "li"

    def handle_data(self, data: str) -> None:
        if self._in_li:
            self.summary.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict]:
        return [
            a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def page(run_dir: Path) -> _Page:
    return parse(run_dir / "report.html")


def test_every_section_and_figure_is_present(run_dir: Path, page: _Page) -> None:
    tables = load_tables(run_dir)
    assert page.find("section", id="summary")
    assert page.find("section", id="correlations") and page.find("table", id="correlation-table")
    for domain in ("all", "math", "code", "chem"):
        assert page.find("section", id=f"domain-{domain}")
        shown = {
            a["data-figure"]
            for a in page.find("div", **{"data-domain": domain})
            if "data-figure" in a
        }
        has_pairs = domain in set(tables.matches["domain"].to_list())
        assert shown == set(FIGURES) - (set() if has_pairs else {"pairs"})
    assert not page.find("section", id="domain-validation")  # a validation set is not a domain


def test_html_is_self_contained(run_dir: Path, page: _Page) -> None:
    external = [
        (tag, attrs)
        for tag, attrs in page.tags
        for key in ("src", "href", "data")
        if (url := attrs.get(key)) and not url.startswith("#")
    ]
    assert external == []
    scripts = page.find("script")
    assert scripts and all("src" not in s for s in scripts)
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert text.count("Plotly.newPlot") >= 20  # figures drawn by the one inlined plotly.js
    assert "@import" not in text and "url(http" not in text


def test_correlation_table_lists_every_row_with_its_label(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    table = text[text.index('<table id="correlation-table">') :]
    table = table[: table.index("</table>")]
    correlations = load_tables(run_dir).correlations
    assert table.count("<tr>") == correlations.height + 1
    assert table.count("needs training data") == (correlations["needs"] == "training data").sum()
    assert table.count("needs held-out data") == (correlations["needs"] == "held-out data").sum()
    for row in correlations.iter_rows(named=True):
        assert f"{fmt(row['pearson_r'], sign=True)}" in table
        assert (
            f"[{fmt(row['spearman_ci_low'], sign=True)}, {fmt(row['spearman_ci_high'], sign=True)}]"
            in table
        )


def test_pngs_exist_and_are_not_blank(run_dir: Path) -> None:
    pngs = sorted((run_dir / "figures").glob("*.png"))
    html_figures = parse(run_dir / "report.html").find("div", **{"class": "figure"})
    assert len(pngs) == len(html_figures)
    for png in pngs:
        pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500, png.name
        assert pixels.var() > 100, png.name
    assert not list(run_dir.glob(".report-*")), "staging directory left behind"


def test_summary_numbers_come_from_the_tables(run_dir: Path, page: _Page) -> None:
    tables = load_tables(run_dir)
    findings = {
        (f.topic, f.values.get("domain"), f.values.get("needs")): f for f in summarize(tables)
    }
    summary = " ".join(page.summary)
    # memorization: ε, fraction and onset counts per domain
    for row in tables.epsilon.iter_rows(named=True):
        f = findings["memorization", row["domain"], None]
        n_mem = int((tables.onsets.filter(domain=row["domain"])["mem_onset"] >= 0).sum())
        assert f.values["n_memorized"] == n_mem
        assert (
            f"ε = {fmt(row['epsilon'], 3)}" in f.text
            and f"{fmt(100 * row['memorized_fraction'], 1)}%" in f.text
        )
        assert f.text in summary
    # consistency NaN count, recounted from the per-sample table
    c = pl.read_parquet(run_dir / "tables" / "sample_metrics.parquet")["consistency"].to_numpy()
    f = findings["consistency", None, None]
    assert f.values["n_nan"] == np.isnan(c).sum() == 7
    assert f"for {np.isnan(c).sum():,} of {len(c):,}" in f.text
    # the best metric per domain and kind of data is the largest |Pearson r| of the table
    for (domain, needs), rows in tables.correlations.group_by("domain", "needs"):
        best = rows.row(int(np.argmax(np.abs(rows["pearson_r"].to_numpy()))), named=True)
        f = findings["correlation", domain, needs]
        assert f.values["metric"] == best["metric"]
        assert f"{best['metric']} tracks accuracy best" in f.text
        assert f"Pearson r = {fmt(best['pearson_r'], sign=True)}" in f.text
        assert f"p = {fmt_p(best['pearson_p'])}, n = {best['n']}" in f.text
    # which domains generalized, and the delays of the matched pairs
    generalized = next(f for f in summarize(tables) if "generalized" in f.values)
    assert generalized.values == {"generalized": ["code", "math"], "not_generalized": ["chem"]}
    for (domain,), rows in tables.matches.group_by("domain"):
        f = findings["delay", domain, None]
        assert (f.values["min"], f.values["max"], f.values["n_pairs"]) == (
            rows["delay"].min(),
            rows["delay"].max(),
            rows.height,
        )
    assert "Not in this run" not in page.summary


def test_linear_fit_matches_numpy_oracle() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=12)
    y = 0.5 * x - 2 + rng.normal(0, 0.1, 12)
    a, b, mse, r2 = linear_fit(x, y)
    pred = np.polyval(np.polyfit(x, y, 1), x)
    assert np.isclose(mse, np.mean((y - pred) ** 2))
    assert np.isclose(r2, np.corrcoef(x, y)[0, 1] ** 2)
    assert np.allclose((a, b), np.polyfit(x, y, 1))
    assert all(np.isnan(linear_fit(np.ones(4), y[:4])))


def test_without_accuracy_the_report_degrades_and_says_so(tmp_path: Path) -> None:
    run = make_run(tmp_path, accuracy=False, n_steps=8, domains=("math", "code"))
    page = parse(build_report(run))
    assert not page.find("section", id="correlations")
    assert {a["data-figure"] for a in page.find("div", **{"class": "figure"})} == {
        "memorization",
        "group_distance",
        "layer_distance",
        "consistency",
    }
    missing = [f for f in summarize(load_tables(run)) if f.topic == "missing"]
    assert len(missing) == 1 and "No accuracy table" in missing[0].text
    assert "pathway distance" in (run / "report.html").read_text(encoding="utf-8")
    assert any("No accuracy table" in s for s in page.summary)


def test_out_directory_and_rebuild_replace_previous_output(tmp_path: Path) -> None:
    run = make_run(tmp_path, n_steps=6, domains=("math",))
    out = tmp_path / "elsewhere"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "stale.png").write_bytes(b"old")
    assert build_report(run, out=out) == out / "report.html"
    assert not (out / "figures" / "stale.png").exists()
    assert not (run / "report.html").exists()
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        f"{d}-{k}.png"
        for d in ("all", "math")
        for k in FIGURES
        if not (d == "all" and k == "pairs")
    )


def _drop(run: Path, name: str) -> None:
    (run / "tables" / f"{name}.parquet").unlink()


def _drop_column(run: Path, name: str) -> None:
    path = run / "tables" / "group_metrics.parquet"
    pl.read_parquet(path).drop(name).write_parquet(path)


@pytest.mark.parametrize(
    ("break_run", "message"),
    [
        (
            lambda run: shutil.rmtree(run),
            r"run: not a run directory; pass the directory written by",
        ),
        (lambda run: (run / "manifest.json").unlink(), r"manifest.json: no manifest"),
        (
            lambda run: (run / "manifest.json").write_text("{"),
            r"manifest.json: unreadable manifest",
        ),
        (
            lambda run: _drop(run, "onsets"),
            r"onsets.parquet: cannot read .*run `pathwatch analyze .*run` first",
        ),
        (
            lambda run: shutil.rmtree(run / "tables"),
            r"sample_metrics.parquet: cannot read .*pathwatch analyze",
        ),
        (
            lambda run: _drop_column(run, "distance"),
            r"group_metrics.parquet: missing column\(s\) distance",
        ),
        (
            lambda run: (run / "tables" / "matches.parquet").write_text("not parquet"),
            r"matches.parquet: cannot read",
        ),
    ],
    ids=["no-dir", "no-manifest", "bad-manifest", "no-onsets", "no-tables", "no-column", "corrupt"],
)
def test_bad_run_dir_is_a_one_line_input_error(tmp_path: Path, break_run, message: str) -> None:
    run = make_run(tmp_path, n_steps=5, domains=("math",))
    break_run(run)
    with pytest.raises(InputError, match=message) as info:
        build_report(run)
    assert "\n" not in str(info.value)
    assert not (run / "report.html").exists() and not (run / "figures").exists()


@pytest.mark.slow
def test_five_domains_and_30_checkpoints_take_under_20_cpu_seconds(tmp_path: Path) -> None:
    run = make_run(tmp_path, n_steps=30, domains=("math", "code", "chem", "law", "bio"))
    start = time.process_time()  # CPU time: wall time on a shared runner measures the neighbours
    build_report(run)
    elapsed = time.process_time() - start
    assert len(json.loads((run / "manifest.json").read_text())["checkpoints"]) == 30
    assert elapsed < 20, f"report took {elapsed:.1f} CPU seconds"


def test_odd_domain_names_are_escaped_and_get_distinct_files(tmp_path: Path) -> None:
    run = make_run(tmp_path, n_steps=5, domains=("a b", "a_b", "<b>x</b>"), accuracy=False)
    page = parse(build_report(run))
    assert not page.find("b")  # the name is shown as text, never as markup
    ids = [a["id"] for a in page.find("section") if a.get("id", "").startswith("domain-")]
    assert len(ids) == len(set(ids)) == 4
    assert len(list((run / "figures").glob("*.png"))) == 4 * 4


@given(st.lists(st.text(max_size=6), unique=True, max_size=8))
def test_slugs_are_distinct_and_safe(names: list[str]) -> None:
    stems = slugs(names)
    assert len(set(stems.values())) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", s) for s in stems.values())


def test_a_correlation_without_window_or_ci_prints_na(tmp_path: Path) -> None:
    run = make_run(tmp_path, n_steps=8, domains=("math",))
    path = run / "tables" / "correlations.parquet"
    blank = ("first_step", "last_step", "pearson_ci_low", "pearson_ci_high")
    pl.read_parquet(path).with_columns(
        pl.lit(None).cast(pl.Float64).alias(c) for c in blank[2:]
    ).with_columns(pl.lit(None).cast(pl.Int64).alias(c) for c in blank[:2]).write_parquet(path)
    text = build_report(run).read_text(encoding="utf-8")
    assert "n/a–n/a" in text and "[nan, nan]" in text
    assert "its CI includes 0" not in text


def test_churn_columns_are_read_where_the_run_has_them(tmp_path: Path) -> None:
    from pathwatch.report.summary import load_tables, summarize

    run = make_run(tmp_path, n_steps=5, domains=("math",))
    before = load_tables(run)  # a run analysed before the churn columns existed
    assert "churn" not in before.group_metrics.columns
    assert not [f for f in summarize(before) if f.topic == "churn"]
    path = run / "tables" / "group_metrics.parquet"
    table = pl.read_parquet(path)
    table.with_columns(
        churn=pl.col("step").cast(pl.Float64) / 1000,
        churn_members=pl.lit(3, pl.Int64),
        divergence_within=pl.lit(0.1),
        divergence_cross=pl.lit(0.2),
    ).write_parquet(path)
    found = [f for f in summarize(load_tables(run)) if f.topic == "churn"]
    steps = sorted(table["step"].unique())
    assert found and found[0].values["last"] == pytest.approx(steps[-1] / 1000)
    assert "routing churn of memorized probes" in found[0].text
