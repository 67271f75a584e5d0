"""Read a run's analysis tables and say, in sentences computed from them, what the run shows.

:func:`load_tables` validates the run directory against the table schemas of docs/architecture.md;
:func:`summarize` turns the tables into findings. Every number in a finding is read or computed from
the tables; nothing is asserted that the data do not show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from pathwatch.analysis import CHURN_SCHEMA, GROUP_SCHEMA
from pathwatch.errors import InputError, StoreError
from pathwatch.store import RunStore
from pathwatch.store.manifest import MANIFEST_NAME, Manifest

POOLED = "all"
"""The ``domain`` (and ``group``) value of the pooled rows."""

# table name -> columns the report reads (the contract's key and value columns)
REQUIRED: dict[str, tuple[str, ...]] = {
    "sample_metrics": ("sample_index", "domain", "step", "consistency"),
    "onsets": ("sample_index", "domain", "mem_onset", "epsilon"),
    "epsilon": ("domain", "epsilon", "memorized_fraction"),
    "group_metrics": tuple(c for c in GROUP_SCHEMA if c not in CHURN_SCHEMA),
}
#: columns read where the table has them (runs analysed before they existed lack them)
LATER: dict[str, tuple[str, ...]] = {"group_metrics": tuple(CHURN_SCHEMA)}
OPTIONAL: dict[str, tuple[str, ...]] = {
    "accuracy": ("step", "domain", "accuracy", "n_items"),
    "test_onsets": ("item_id", "domain", "gen_onset"),
    "matches": (
        "domain",
        "train_group",
        "test_group",
        "mem_onset",
        "gen_onset",
        "delay",
        "similarity",
    ),
    "correlations": (
        "domain",
        "metric",
        "needs",
        "n",
        "first_step",
        "last_step",
        "pearson_r",
        "pearson_p",
        "pearson_ci_low",
        "pearson_ci_high",
        "spearman_rho",
        "spearman_p",
        "spearman_ci_low",
        "spearman_ci_high",
    ),
}


@dataclass(frozen=True)
class RunTables:
    """The analysis tables of one run; optional tables are ``None`` when the run has none."""

    run_dir: Path
    manifest: Manifest
    sample_metrics: pl.DataFrame
    onsets: pl.DataFrame
    epsilon: pl.DataFrame
    group_metrics: pl.DataFrame
    accuracy: pl.DataFrame | None = None
    test_onsets: pl.DataFrame | None = None
    matches: pl.DataFrame | None = None
    correlations: pl.DataFrame | None = None

    @property
    def domains(self) -> list[str]:
        """The pooled domain first, then the training domains sorted (validation sets excluded)."""
        return [POOLED, *sorted(set(self.onsets["domain"].unique().to_list()) - {POOLED})]

    @property
    def steps(self) -> np.ndarray:
        """Checkpoint steps, ascending, of shape (T,)."""
        return np.sort(self.group_metrics["step"].unique().to_numpy())

    def unit(self, *, layers: bool = False) -> str:
        """Pathway-distance unit (``"char"`` or ``"expert"``) of whole pathways or of single layers."""
        rows = self.group_metrics.filter(
            (pl.col("layer") >= 0) if layers else (pl.col("layer") == -1)
        ).drop_nulls("distance")
        return "/".join(sorted(map(str, rows["unit"].unique().to_list()))) or "char"

    def domain_accuracy(self, domain: str) -> pl.DataFrame | None:
        """Per-checkpoint accuracy (``step``, ``accuracy``) of a domain, or ``None``.

        The pooled domain uses its own rows when the table has them, else the ``n_items``-weighted
        mean over domains.
        """
        if self.accuracy is None:
            return None
        rows = self.accuracy.filter(pl.col("domain") == domain)
        if rows.is_empty() and domain == POOLED:
            rows = self.accuracy.group_by("step").agg(
                ((pl.col("accuracy") * pl.col("n_items")).sum() / pl.col("n_items").sum()).alias(
                    "accuracy"
                )
            )
        if rows.is_empty():
            return None
        return rows.select("step", "accuracy").sort("step")


def _fix(run_dir: Path) -> str:
    return f"run `pathwatch analyze {run_dir}` first"


def _read_table(store: RunStore, name: str, columns: tuple[str, ...]) -> pl.DataFrame:
    """The columns the report reads of one analysis table; InputError naming the table and the fix."""
    path = store.table_path(name)
    try:
        present = store.table_columns(name)
        missing = [c for c in columns if c not in present]
        if not missing:
            later = [c for c in LATER.get(name, ()) if c in present]
            return store.read_table(name, columns=[*columns, *later])
    except StoreError as exc:
        raise InputError(
            f"{path}: cannot read the analysis table ({type(exc).__name__}); {_fix(store.path)}."
        ) from exc
    raise InputError(
        f"{path}: missing column(s) {', '.join(missing)}; the table is from another version, "
        f"{_fix(store.path)} again."
    )


def load_tables(run_dir: str | Path) -> RunTables:
    """Read and validate the manifest and analysis tables of a run directory (through its
    :class:`~pathwatch.store.RunStore`).

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by ``pathwatch capture`` and ``pathwatch analyze``.

    Returns
    -------
    RunTables
        The tables; ``accuracy``, ``test_onsets``, ``matches`` and ``correlations`` are ``None`` when
        the run was analysed without an accuracy file.

    Raises
    ------
    InputError
        The directory, its manifest or a required table is missing or unreadable.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(
            f"{run_dir}: not a run directory; pass the directory written by `pathwatch capture`."
        )
    manifest_path = run_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InputError(
            f"{manifest_path}: no manifest; pass a run directory written by `pathwatch capture`."
        )
    try:
        store = RunStore(run_dir)
    except StoreError as exc:
        raise InputError(
            f"{manifest_path}: unreadable manifest ({exc}); re-run `pathwatch capture`."
        ) from exc
    required = {name: _read_table(store, name, cols) for name, cols in REQUIRED.items()}
    optional = {
        # None: a table the analysis did not write
        name: _read_table(store, name, cols) if store.has_table(name) else None
        for name, cols in OPTIONAL.items()
    }
    if required["group_metrics"].is_empty():
        raise InputError(
            f"{store.table_path('group_metrics')}: the table is empty; {_fix(run_dir)}."
        )
    return RunTables(run_dir=run_dir, manifest=store.manifest, **required, **optional)


# ---------------------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One sentence of the summary and the numbers it states."""

    topic: str
    text: str
    values: dict = field(default_factory=dict)


def fmt(x: float, digits: int = 2, *, sign: bool = False) -> str:
    """A number as the report prints it (``"nan"`` for missing)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value as the report prints it: two significant digits."""
    return "nan" if p is None or math.isnan(p) else f"{p:.2g}"


def fmt_step(x: float | None) -> str:
    """A checkpoint step as the report prints it ("n/a" where a window had no finite value)."""
    return "n/a" if x is None else f"{int(x):,}"


def _run_finding(t: RunTables) -> Finding:
    steps = t.steps
    domains = t.domains[1:]
    n_samples = t.onsets.height
    family = t.manifest.model.family or t.manifest.model.model_type
    of_model = f" (model family {family})" if family else ""
    text = (
        f"{n_samples:,} training samples in {len(domains)} domain(s) ({', '.join(domains)}), "
        f"{len(steps)} checkpoints{of_model} from step {fmt_step(steps[0])} to "
        f"{fmt_step(steps[-1])}; pathway distance in {t.unit()} edits."
    )
    return Finding(
        "run", text, {"n_samples": n_samples, "n_checkpoints": len(steps), "domains": domains}
    )


def _memorization_findings(t: RunTables) -> list[Finding]:
    out = []
    last = t.steps[-1]
    for row in t.epsilon.sort("domain").iter_rows(named=True):
        sel = t.onsets if row["domain"] == POOLED else t.onsets.filter(domain=row["domain"])
        onset = sel["mem_onset"].to_numpy()
        n_mem, n_before = int((onset >= 0).sum()), int(((onset >= 0) & (onset < last)).sum())
        out.append(
            Finding(
                "memorization",
                f"{row['domain']}: ε = {fmt(row['epsilon'], 3)} memorizes "
                f"{fmt(100 * row['memorized_fraction'], 1)}% of samples before the last "
                f"checkpoint ({n_before} of {sel.height}; {n_mem} counting the last checkpoint).",
                {
                    "domain": row["domain"],
                    "epsilon": row["epsilon"],
                    "memorized_fraction": row["memorized_fraction"],
                    "n_memorized": n_mem,
                    "n_before_last": n_before,
                },
            )
        )
    return out


def _distance_finding(t: RunTables) -> Finding | None:
    rows = (
        t.group_metrics.filter(domain=POOLED, group=POOLED, layer=-1)
        .filter(pl.col("distance").is_not_nan())
        .sort("step")
    )
    if rows.is_empty():
        return None
    d, s = rows["distance"].to_numpy(), rows["step"].to_numpy()
    peak = int(np.argmax(d))
    start, end = (
        f"{fmt(d[0], 1)} at step {fmt_step(s[0])}",
        f"{fmt(d[-1], 1)} at step {fmt_step(s[-1])}",
    )
    if 0 < peak < len(d) - 1:
        shape = " — it rises and then falls" if d[-1] < d[peak] else ""
        text = (
            f"Pooled pathway distance goes from {start} up to {fmt(d[peak], 1)} at step "
            f"{fmt_step(s[peak])} and ends at {end}{shape}."
        )
    else:
        where = "first" if peak == 0 else "last"
        text = f"Pooled pathway distance goes from {start} to {end}, highest at the {where} checkpoint."
    return Finding(
        "distance", text, {"first": d[0], "peak": d[peak], "peak_step": s[peak], "last": d[-1]}
    )


def _consistency_finding(t: RunTables) -> Finding:
    c = t.sample_metrics["consistency"]
    n_nan = int(c.is_null().sum() + c.is_nan().sum())
    text = (
        f"Consistency is undefined (NaN: fewer than 3 MoE layers or no positive adjacent-layer "
        f"cosine) for {n_nan:,} of {c.len():,} sample-checkpoints ({fmt(100 * n_nan / c.len(), 1)}%)."
        if n_nan
        else f"Consistency is defined for all {c.len():,} sample-checkpoints (no NaN)."
    )
    return Finding("consistency", text, {"n_nan": n_nan, "n": c.len()})


def _churn_findings(t: RunTables) -> list[Finding]:
    """Routing churn of each domain's memorized probes at the first and last checkpoint it has."""
    if "churn" not in t.group_metrics.columns:
        return []
    rows = t.group_metrics.filter(
        (pl.col("group") == "memorized") & (pl.col("layer") == -1) & pl.col("churn").is_not_nan()
    ).sort("step")
    out = []
    for domain in [d for d in t.domains if d in set(rows["domain"].to_list())]:
        part = rows.filter(domain=domain)
        first, last = part.row(0, named=True), part.row(-1, named=True)
        text = (
            f"{domain}: routing churn of memorized probes whose loss stayed within δ (mean "
            f"Jensen–Shannon divergence between consecutive checkpoints) is "
            f"{fmt(first['churn'], 4)} bits at step {fmt_step(first['step'])} "
            f"({first['churn_members']} probes) and {fmt(last['churn'], 4)} at step "
            f"{fmt_step(last['step'])} ({last['churn_members']})."
        )
        out.append(
            Finding(
                "churn", text, {"domain": domain, "first": first["churn"], "last": last["churn"]}
            )
        )
    return out


def _generalization_findings(t: RunTables) -> list[Finding]:
    out = []
    for domain in t.domains:
        acc = t.domain_accuracy(domain)
        if acc is None:
            continue
        a, s = acc["accuracy"].to_numpy(), acc["step"].to_numpy()
        text = (
            f"{domain}: accuracy {fmt(a[0])} at step {fmt_step(s[0])} → {fmt(a[-1])} at step "
            f"{fmt_step(s[-1])} (max {fmt(a.max())})"
        )
        values = {"domain": domain, "first": a[0], "last": a[-1], "max": a.max()}
        if t.test_onsets is not None:
            items = t.test_onsets if domain == POOLED else t.test_onsets.filter(domain=domain)
            n_gen = int((items["gen_onset"] >= 0).sum())
            if items.height:
                text += f"; {n_gen} of {items.height} test items reach a generalization onset"
                values |= {"n_generalized": n_gen, "n_items": items.height}
        out.append(Finding("generalization", text + ".", values))
    if t.test_onsets is not None:
        counts = (
            t.test_onsets.filter(pl.col("domain") != POOLED)
            .group_by("domain")
            .agg((pl.col("gen_onset") >= 0).sum().alias("n"))
            .sort("domain")
        )
        yes = counts.filter(pl.col("n") > 0)["domain"].to_list()
        no = counts.filter(pl.col("n") == 0)["domain"].to_list()
        text = f"Generalized (test items reach a generalization onset): {', '.join(yes) or 'none'}"
        text += f"; did not: {', '.join(no)}." if no else "."
        out.append(Finding("generalization", text, {"generalized": yes, "not_generalized": no}))
    return out


def _delay_findings(t: RunTables) -> list[Finding]:
    if t.matches is None:
        return []
    out = []
    for (domain,), rows in t.matches.sort("domain", "mem_onset").group_by(
        "domain", maintain_order=True
    ):
        delay = rows["delay"].to_numpy()
        span = (
            f"{fmt_step(delay.min())} steps"
            if delay.min() == delay.max()
            else f"{fmt_step(delay.min())}–{fmt_step(delay.max())} steps "
            f"(median {fmt_step(np.median(delay))})"
        )
        text = f"{domain}: {rows.height} matched train/test group pair(s), grokking delay {span}"
        if rows.height >= 3 and np.ptp(delay) > 0 and np.ptp(rows["mem_onset"].to_numpy()) > 0:
            rho = float(
                pl.DataFrame(rows).select(pl.corr("mem_onset", "delay", method="spearman")).item()
            )
            text += f"; Spearman ρ(memorization step, delay) = {fmt(rho, sign=True)}"
        out.append(
            Finding(
                "delay",
                text + ".",
                {"domain": domain, "n_pairs": rows.height, "min": delay.min(), "max": delay.max()},
            )
        )
    return out


def correlation_text(row: dict) -> str:
    """``"Pearson r = -0.95 (95% CI [-0.99, -0.80], p = 0.0031, n = 6)"``."""
    return (
        f"Pearson r = {fmt(row['pearson_r'], sign=True)} (95% CI "
        f"[{fmt(row['pearson_ci_low'], sign=True)}, {fmt(row['pearson_ci_high'], sign=True)}], "
        f"p = {fmt_p(row['pearson_p'])}, n = {row['n']})"
    )


def _correlation_findings(t: RunTables) -> list[Finding]:
    if t.correlations is None:
        return []
    out = []
    rows = t.correlations.filter(
        pl.col("pearson_r").is_not_null() & pl.col("pearson_r").is_not_nan()
    )
    for domain in [d for d in t.domains if d in set(rows["domain"].to_list())]:
        sel = rows.filter(domain=domain).with_columns(pl.col("pearson_r").abs().alias("_abs"))
        for needs in sorted(set(sel["needs"].to_list())):
            best = sel.filter(needs=needs).sort("_abs", descending=True).row(0, named=True)
            text = (
                f"{domain}, from {needs} only: {best['metric']} tracks accuracy best, "
                f"{correlation_text(best)} over steps {fmt_step(best['first_step'])}–"
                f"{fmt_step(best['last_step'])}"
            )
            low, high = best["pearson_ci_low"], best["pearson_ci_high"]
            if low is not None and high is not None and low <= 0 <= high:
                text += "; its CI includes 0"
            out.append(
                Finding(
                    "correlation",
                    text + ".",
                    {"domain": domain, "needs": needs} | {k: best[k] for k in best if k != "_abs"},
                )
            )
    return out


def _missing_findings(t: RunTables) -> list[Finding]:
    fix = f"pass `--accuracy FILE` to `pathwatch analyze {t.run_dir}`"
    if t.accuracy is None:
        return [
            Finding(
                "missing",
                "No accuracy table: the run has no ground truth, so there are no accuracy curves, "
                f"generalization onsets, matched groups or correlations ({fix}).",
            )
        ]
    lacking = [
        Finding("missing", text)
        for text, table in (
            (
                "No per-item test onsets: the accuracy file has no per-item correctness, so there "
                "are no generalization onsets or matched groups.",
                t.test_onsets,
            ),
            (
                "No matched train/test groups: pairing needs the test items' texts at analysis.",
                t.matches if t.test_onsets is not None else True,
            ),
            ("No correlations table.", t.correlations),
        )
        if table is None
    ]
    return lacking


def summarize(tables: RunTables) -> list[Finding]:
    """The findings of a run, in reading order.

    Parameters
    ----------
    tables : RunTables
        From :func:`load_tables`.

    Returns
    -------
    list of Finding
        Topics ``run``, ``memorization``, ``distance``, ``consistency``, ``churn``, ``generalization``,
        ``delay``, ``correlation``, ``missing``; each with the numbers it states in ``values``.
    """
    findings = [_run_finding(tables), *_memorization_findings(tables)]
    distance = _distance_finding(tables)
    if distance is not None:
        findings.append(distance)
    findings.append(_consistency_finding(tables))
    findings += _churn_findings(tables)
    findings += _generalization_findings(tables)
    findings += _delay_findings(tables)
    findings += _correlation_findings(tables)
    findings += _missing_findings(tables)
    return findings
