"""The analysis stage: a captured run directory → the Parquet tables of ``docs/architecture.md``.

It joins the stages on a run store: memorization onsets from the losses (``dynamics``), pathways,
distances and consistency per sample and per group (``metrics``), and — given ground truth —
generalization onsets, group pairing and the Table-1 correlations (``evaluation``). Two streaming
passes over the checkpoints (losses first, then routing) keep one checkpoint's routing in memory at a
time, whatever the number of checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from pathwatch._validate import check_bool, check_instance, check_path, check_paths
from pathwatch.config import AnalyzeConfig
from pathwatch.dynamics import NEVER, embed_texts, match_groups
from pathwatch.dynamics.onsets import memorization_table
from pathwatch.errors import InputError, StoreError
from pathwatch.evaluation import correlation_table, generalization_table
from pathwatch.evaluation.accuracy import read_accuracy
from pathwatch.evaluation.early import EARLY, early_cutoffs, group_correlation_table
from pathwatch.evaluation.series import POOLED, WHOLE_PATHWAY, metric_series
from pathwatch.evaluation.truth import (
    accuracy_notes,
    check_ground_truth,
    few_checkpoint_notes,
    results_only_steps,
)
from pathwatch.metrics import (
    Pathways,
    churn_columns,
    consistency_metrics,
    layer_distances,
    pairwise_distance_stats,
    pathways,
    routing_churn,
)
from pathwatch.store import RunStore
from pathwatch.store.manifest import MANIFEST_NAME
from pathwatch.store.units import unit_path

if TYPE_CHECKING:
    from pathwatch.capture.samples import Sample


#: Metrics correlated with accuracy (the paper's Table 1 and its baselines), and what each needs.
TABLE1_METRICS: dict[str, str] = {
    "distance": "training data",
    "distance_memorized": "training data",
    "distance_tracked": "training data",
    "consistency": "training data",
    "smoothness": "training data",
    "adjacent_cosine": "training data",
    "train_loss": "training data",
    "train_loss_ma": "training data",
    "validation_loss": "held-out data",
    # beyond the paper's Table 1, last so that the rows before keep their bootstrap streams
    "distance_early": "training data",
    "churn": "training data",
    "churn_excess": "training data",
    "divergence_contrast": "training data",
}


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyze_run` wrote.

    Attributes
    ----------
    run : Path
        The run directory.
    tables : dict of str to polars.DataFrame
        Every table written under ``RUN/tables/``, by name.
    notes : list of str
        One line each on choices and gaps (ε per domain, undefined consistency, skipped steps).
    """

    run: Path
    tables: dict[str, pl.DataFrame]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Layout:
    """Which rows of the sample table are training probes, their domains and memorization onsets."""

    samples: (
        pl.DataFrame
    )  # sample_index, id, domain, mem_onset, epsilon (+ text) of the training probes
    rows: np.ndarray  # (n,) positions of the training probes in capture order
    validation: pl.DataFrame  # sample_index, id, domain of the validation samples
    early: dict[str, int] = field(default_factory=dict)  # domain -> latest t* of its early group

    @property
    def onsets(self) -> np.ndarray:
        """Memorization onset of each training probe, or NEVER, (n,)."""
        return self.samples["mem_onset"].to_numpy()

    @property
    def domains(self) -> list[str]:
        return sorted(self.samples["domain"].unique().to_list())

    def groups(self, step: int) -> Iterator[tuple[str, str, np.ndarray]]:
        """(domain, group, member positions among the training probes) of the groups at ``step``.

        ``memorized`` holds every sample with a memorization onset (known only in hindsight, from
        any t*); ``tracked`` only those memorized by ``step`` (onset ≤ step: from then on their
        loss stays ≤ ε and within δ of its final value); ``train@<t*>`` is followed from its own
        t* on, as in the paper, so it has no rows before t*; ``early`` is the union of a domain's
        ``train@<t*>`` groups with t* ≤ its early cutoff (memorized ``early_lead`` checkpoints
        before accuracy's rise), a fixed group followed once every member is memorized.
        """
        domain = self.samples["domain"].to_numpy()
        every = np.arange(domain.size)
        memorized = self.onsets != NEVER
        for name in [POOLED, *self.domains]:
            members = every if name == POOLED else every[domain == name]
            yield name, "all", members
            yield name, "memorized", members[memorized[members]]
            yield name, "tracked", members[memorized[members] & (self.onsets[members] <= step)]
            if name != POOLED:
                for onset in np.unique(self.onsets[members]):
                    if onset != NEVER and onset <= step:
                        yield name, f"train@{onset}", members[self.onsets[members] == onset]
                if name in self.early:
                    onsets = self.onsets[members]
                    early = members[(onsets != NEVER) & (onsets <= self.early[name])]
                    if early.size and self.onsets[early].max() <= step:
                        yield name, EARLY, early


def _open_run(run: str | Path) -> RunStore:
    path = Path(run)
    if not (path / MANIFEST_NAME).is_file():
        raise InputError(
            f"{path}: not a run directory (no {MANIFEST_NAME}). Create it with `pathwatch capture "
            f"--checkpoint DIR --samples FILE --out {path}`."
        )
    store = RunStore(path)
    # existence only: every unit is verified when the passes read it, so it is not read a third time
    missing = [
        (step, shard)
        for step in store.steps
        for shard in range(store.n_shards)
        if not unit_path(path, step, shard).is_file()
    ]
    if missing:
        step, shard = missing[0]
        total = len(store.steps) * store.n_shards
        raise StoreError(
            f"{path}: {len(missing)} of {total} capture units are missing (first: step "
            f"{step}, shard {shard}). Let `pathwatch capture` finish, or re-run it to resume."
        )
    return store


def _losses(store: RunStore, progress: bool) -> np.ndarray:
    """Loss of every sample at every checkpoint, (N, T): the first streaming pass."""
    steps = store.steps
    losses = np.empty((store.manifest.samples.count, len(steps)), np.float64)
    for t, step in enumerate(
        tqdm(steps, desc="analyze: losses", unit="ckpt", disable=not progress)
    ):
        losses[:, t] = store.load_checkpoint(step).loss
    return losses


def _probes(store: RunStore, samples: pl.DataFrame, config: AnalyzeConfig) -> np.ndarray:
    """Positions of the training probes (the samples of no validation domain); at least 2."""
    is_validation = samples["domain"].is_in(list(config.validation_domains)).to_numpy()
    rows = np.flatnonzero(~is_validation)
    if rows.size < 2:
        raise InputError(
            f"{store.path}: the run has {rows.size} training probe samples (domains "
            f"{sorted(set(samples['domain']))}, validation domains {list(config.validation_domains)}); "
            "pathway distance needs at least 2. Capture more samples."
        )
    return rows


def _layout(
    store: RunStore,
    samples: pl.DataFrame,
    rows: np.ndarray,
    losses: np.ndarray,
    config: AnalyzeConfig,
) -> tuple[_Layout, pl.DataFrame, list[str]]:
    """The probes with their memorization onsets (from the losses), and the ε table."""
    train = samples[rows]
    onsets, epsilon = memorization_table(
        losses[rows],
        store.steps,
        train["domain"].to_list(),
        epsilon="auto" if config.epsilon is None else config.epsilon,
        delta=config.delta,
        scale_delta=config.scale_delta,
    )
    notes = [f"{r['domain']}: {r['note']}" for r in epsilon.iter_rows(named=True)]
    delta = onsets["domain"].replace_strict(dict(epsilon.select("domain", "delta").rows()))
    layout = _Layout(
        pl.concat(
            [train, onsets.select("mem_onset", "epsilon"), delta.alias("delta").to_frame()],
            how="horizontal",
        ),
        rows,
        samples[np.setdiff1d(np.arange(samples.height), rows)],
    )
    return layout, epsilon, notes


def _group_rows(
    domain: str,
    group: str,
    members: np.ndarray,
    paths: Pathways,
    step_data: dict[str, np.ndarray],
    memorized: np.ndarray,
    step: int,
    layers: Sequence[int],
    config: AnalyzeConfig,
    distances: dict[bytes, tuple],
    others: np.ndarray | None = None,
) -> list[dict]:
    """The ``group_metrics`` rows of one group at one checkpoint: whole pathway, then each layer.

    The routing divergence within the group and across domains (against ``others``) is computed
    for the fixed memorized groups only (:data:`DIVERGENCE_GROUPS`): it costs a pass over pairs.
    ``distances`` holds this checkpoint's distances by member set: a group with the same members as
    an earlier one (``tracked`` and ``memorized`` once all are memorized) reuses them.
    """
    key = members.tobytes()
    if key not in distances:
        sub = paths[members]
        distances[key] = (
            pairwise_distance_stats(sub, config.unit, max_pairs=config.max_pairs, seed=config.seed),
            layer_distances(sub, max_pairs=config.max_pairs, seed=config.seed)
            if members.size >= 2
            else None,
        )
    whole, per_layer = distances[key]
    cons = step_data["consistency"][members]
    base = {"domain": domain, "group": group, "step": step, "n_samples": int(members.size)}
    rows = [
        base
        | {
            "layer": WHOLE_PATHWAY,
            "unit": config.unit,
            "distance": whole.mean,
            "distance_ci_low": whole.ci_low,
            "distance_ci_high": whole.ci_high,
            "n_pairs": whole.n_pairs,
            "consistency": _nanmean(cons),
            "smoothness": _nanmean(step_data["smoothness"][members]),
            "adjacent_cosine": _nanmean(step_data["adjacent_cosine"][members]),
            "consistency_nan": int(np.isnan(cons).sum()),
            "loss": _nanmean(step_data["loss"][members]),
            "memorized_fraction": float(memorized[members].mean()) if members.size else np.nan,
        }
        | churn_columns(
            members,
            step_data["churn"],
            step_data["loss_moved"],
            step_data["delta"],
            step_data["weights"] if group in DIVERGENCE_GROUPS else None,
            others,
            max_pairs=config.max_pairs,
            seed=config.seed,
        )
    ]
    if per_layer is not None:
        rows += [
            base | {"layer": int(layer), "unit": "expert", "distance": float(d)}
            for layer, d in zip(layers, per_layer, strict=True)
        ]
    return rows


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else np.nan


GROUP_SCHEMA = {
    "domain": pl.String,
    "group": pl.String,
    "step": pl.Int64,
    "layer": pl.Int64,
    "unit": pl.String,
    "distance": pl.Float64,
    "distance_ci_low": pl.Float64,
    "distance_ci_high": pl.Float64,
    "n_samples": pl.Int64,
    "n_pairs": pl.Int64,
    "consistency": pl.Float64,
    "smoothness": pl.Float64,
    "adjacent_cosine": pl.Float64,
    "consistency_nan": pl.Int64,
    "loss": pl.Float64,
    "memorized_fraction": pl.Float64,
}
#: columns beyond the paper (metrics/churn.py), last so that the columns before keep their places;
#: runs analysed before them lack them
CHURN_SCHEMA = {
    "churn": pl.Float64,
    "churn_members": pl.Int64,
    "divergence_within": pl.Float64,
    "divergence_cross": pl.Float64,
}
GROUP_SCHEMA |= CHURN_SCHEMA
#: groups whose routing divergence (within, across domains) is computed: the fixed memorized ones
DIVERGENCE_GROUPS = ("memorized", EARLY)


def _routing_pass(
    store: RunStore,
    layout: _Layout,
    losses: np.ndarray,
    config: AnalyzeConfig,
    progress: bool,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Second streaming pass: per-sample and per-group routing metrics at every checkpoint."""
    steps = store.steps
    layers = store.manifest.model.moe_layers
    sample_frames, group_rows = [], []
    previous = None  # the previous checkpoint's routing, for the churn between the two
    for t, step in enumerate(
        tqdm(steps, desc="analyze: routing", unit="ckpt", disable=not progress)
    ):
        data = store.load_checkpoint(step)
        every = layout.rows.size == data.mean_weights.shape[0]  # no validation samples: no copy
        weights = data.mean_weights if every else data.mean_weights[layout.rows]
        paths = pathways(weights, threshold=config.threshold)
        # the strings every group compares, built once per checkpoint (groups slice them)
        paths.sequences(config.unit), paths.sequences("expert", 0)
        cm = consistency_metrics(weights, store.router_weights(step))
        nan = np.full(layout.rows.size, np.nan)
        step_data = {
            "loss": losses[layout.rows, t],
            "consistency": cm.consistency,
            "smoothness": cm.smoothness,
            "adjacent_cosine": cm.adjacent_cosine,
            "churn": nan if previous is None else routing_churn(previous, weights),
            "loss_moved": nan
            if t == 0
            else np.abs(losses[layout.rows, t] - losses[layout.rows, t - 1]),
            "delta": layout.samples["delta"].to_numpy(),
            "weights": weights,
        }
        previous = weights
        sample_frames.append(
            layout.samples.select("sample_index", "id", "domain").with_columns(
                step=pl.lit(step, pl.Int64),
                loss=step_data["loss"],
                n_tokens=data.n_tokens[layout.rows],
                pathway=pl.Series(paths.strings(), dtype=pl.String),
                consistency=cm.consistency,
                smoothness=cm.smoothness,
                adjacent_cosine=cm.adjacent_cosine,
            )
        )
        memorized = (layout.onsets != NEVER) & (layout.onsets <= step)
        listed = list(layout.groups(step))
        distances: dict[bytes, tuple] = {}
        for domain, group, members in listed:
            others = None
            if group in DIVERGENCE_GROUPS and domain != POOLED:
                rest = [m for d, g, m in listed if g == group and d not in (domain, POOLED)]
                others = np.concatenate(rest) if rest else None
            group_rows += _group_rows(
                domain,
                group,
                members,
                paths,
                step_data,
                memorized,
                step,
                layers,
                config,
                distances,
                others,
            )
        for (domain,), members in layout.validation.group_by("domain", maintain_order=True):
            val = members["sample_index"].to_numpy()
            group_rows.append(
                {"domain": domain, "group": "all", "step": step, "layer": WHOLE_PATHWAY}
                | {"n_samples": int(val.size), "loss": float(losses[val, t].mean())}
            )
        # only `previous` outlives the checkpoint: the next one loads beside it alone
        del data, paths, cm, step_data, distances
    return pl.concat(sample_frames), pl.DataFrame(group_rows, schema=GROUP_SCHEMA)


def _pooled_accuracy(accuracy: pl.DataFrame, correctness: pl.DataFrame | None) -> pl.DataFrame:
    """Accuracy per step and domain plus the pooled ``all`` row (over items when known)."""
    if correctness is not None:
        pooled = correctness.group_by("step").agg(
            accuracy=pl.col("correct").cast(pl.Float64).mean(), n_items=pl.len().cast(pl.Int64)
        )
    else:
        pooled = accuracy.group_by("step").agg(
            accuracy=pl.col("accuracy").mean(), n_items=pl.col("n_items").sum()
        )
    pooled = pooled.sort("step").with_columns(domain=pl.lit(POOLED)).select(accuracy.columns)
    return pl.concat([accuracy.filter(pl.col("domain") != POOLED), pooled.cast(accuracy.schema)])


def _test_texts(
    items: list[Sample], test_items: Path, test_onsets: pl.DataFrame, probes: pl.DataFrame
) -> pl.DataFrame:
    """The test onsets with each item's text, keyed on (domain, id); InputError if one has none."""
    texts = pl.DataFrame(
        {
            "item_id": [s.id for s in items],
            "domain": [s.domain for s in items],
            "text": [s.text for s in items],
        },
        schema={"item_id": pl.String, "domain": pl.String, "text": pl.String},
    )
    test = test_onsets.join(texts, on=["item_id", "domain"], how="left")
    unknown = test.filter(pl.col("text").is_null())
    if unknown.height:
        first = unknown.row(0, named=True)
        theirs = texts.filter(pl.col("domain") == first["domain"])["item_id"].head(2).to_list()
        raise InputError(
            f"{test_items}: no text for test item {first['item_id']!r} of domain "
            f"{first['domain']!r} ({unknown.height} of {test.height} items missing; this file's "
            f"ids in that domain look like {theirs}). Items are keyed on (domain, id): lm-eval "
            "ids come from the doc field --item-id-field (default 'id'), else '<task>/<doc_id>'; "
            "give each doc the test item's id, or give test items with the accuracy's ids."
        )
    if "text" not in probes.columns or probes["text"].null_count():
        raise InputError(
            "group pairing needs the text of every training probe; this run's samples were given as "
            "token ids. Re-capture from a samples file with 'text', or leave out --test-items."
        )
    return test


def _delay_notes(matches: pl.DataFrame) -> list[str]:
    """A note when matched test groups generalized before their train groups were memorized.

    The ε rule dates a sample's memorization from when its loss has settled near its final value;
    where training loss keeps falling while the model generalizes, that comes late, and the local
    grokking delay t# − t* of the paper turns negative.
    """
    early = int((matches["delay"] < 0).sum())
    if not early:
        return []
    return [
        f"{early} of {matches.height} matched groups have a negative delay (t# < t*): their test "
        "items generalized before the ε rule counted the training samples as memorized, which it "
        "does only once their loss has settled"
    ]


def _matches(layout: _Layout, test: pl.DataFrame, config: AnalyzeConfig) -> pl.DataFrame:
    """Pair train groups with test groups per domain, on embeddings of their texts."""
    train_texts = layout.samples["text"].to_list()
    embedded = embed_texts(train_texts + test["text"].to_list(), method=config.embedder)
    train_vec, test_vec = embedded.vectors[: len(train_texts)], embedded.vectors[len(train_texts) :]
    train_domain = layout.samples["domain"].to_numpy()
    test_domain = test["domain"].to_numpy()
    frames = []
    for name in layout.domains:
        tr, te = train_domain == name, test_domain == name
        frames.append(
            match_groups(
                train_vec[tr], layout.onsets[tr], test_vec[te], test["gen_onset"].to_numpy()[te]
            ).with_columns(domain=pl.lit(name), embedder=pl.lit(embedded.method))
        )
    table = pl.concat(frames)
    return table.select("domain", *[c for c in table.columns if c != "domain"])


def analyze_run(
    run: str | Path,
    *,
    config: AnalyzeConfig | None = None,
    accuracy: str | Path | Sequence[str | Path] | None = None,
    test_items: str | Path | None = None,
    progress: bool = True,
    write: bool = True,
) -> Analysis:
    """Analyse a captured run and write its tables under ``RUN/tables/``.

    Parameters
    ----------
    run : str or Path
        A run directory written by ``pathwatch capture`` (every unit present and verified).
    config : AnalyzeConfig, optional
        Threshold, unit, ε/δ, pair sampling, validation domains, correlation window, embedder.
    accuracy : path or paths, optional
        Ground truth (see :func:`pathwatch.evaluation.read_accuracy`): enables the accuracy,
        test-onset and correlation tables.
    test_items : path, optional
        JSONL/Parquet samples file with the ``id``, ``domain`` and ``text`` of each test item:
        enables pairing train and test groups (``matches``).
    progress : bool, default True
        Show progress bars.
    write : bool, default True
        Write the tables under ``RUN/tables/``; False only returns them (analysis variants of
        one run, e.g. other thresholds, without overwriting its tables).

    Returns
    -------
    Analysis
        The run directory, the tables written (sample_metrics, onsets, epsilon, group_metrics and,
        with ground truth, accuracy, metric_series, group_correlations, test_onsets, correlations,
        matches) and notes.

    Examples
    --------
    >>> result = analyze_run("runs/demo", accuracy="runs/demo/accuracy.jsonl")  # doctest: +SKIP
    >>> result.tables["correlations"].select("domain", "metric", "pearson_r")  # doctest: +SKIP
    """
    func = "analyze_run"
    config = check_instance(func, "config", config, AnalyzeConfig, allow_none=True)
    config = config or AnalyzeConfig()
    run = check_path(func, "run", run)
    accuracy = None if accuracy is None else check_paths(func, "accuracy", accuracy)
    test_items = check_path(func, "test_items", test_items, allow_none=True)
    check_bool(func, "progress", progress)
    check_bool(func, "write", write)
    if test_items is not None and accuracy is None:
        raise InputError(
            "--test-items needs --accuracy: test groups come from per-item correctness."
        )
    # every input is read and checked against the run before the first unit is
    truth = None
    if accuracy is not None:
        truth = read_accuracy(
            accuracy,
            metric=config.metric,
            metric_filter=config.metric_filter,
            domains=dict(config.domain_map) or None,
            item_id_field=config.item_id_field,
        )
    items = None
    if test_items is not None:
        from pathwatch.capture.samples import read_samples  # capture's package imports torch

        items = read_samples(test_items)
    store = _open_run(run)
    table = store.samples()
    rows = _probes(store, table, config)
    test = test_onsets = None
    truth_notes: list[str] = []
    if truth is not None:
        check_ground_truth(truth, sorted(table[rows]["domain"].unique().to_list()), store.steps)
        truth_notes = accuracy_notes(truth, store.steps)
        if without_items := results_only_steps(truth):
            truth_notes.append(
                f"test onsets and pairing skipped: accuracy at step(s) {without_items} comes from "
                "results_*.json without per-item samples, and onsets need every item at every step"
            )
        elif truth.correctness is not None:
            test_onsets = generalization_table(truth.correctness)
            if items is not None:
                test = _test_texts(items, test_items, test_onsets, table[rows])
    losses = _losses(store, progress)
    layout, epsilon, notes = _layout(store, table, rows, losses, config)
    cutoffs = {}
    if truth is not None:
        cutoffs = early_cutoffs(
            truth.accuracy, store.steps, lead=config.early_lead, start=config.start
        )
        layout = dataclasses.replace(layout, early={d: c for d, (_, c) in cutoffs.items()})
    notes = truth_notes + notes
    samples, groups = _routing_pass(store, layout, losses, config, progress)
    n_nan = groups.filter((pl.col("domain") == POOLED) & (pl.col("group") == "all"))[
        "consistency_nan"
    ]
    if n_nan.sum():
        notes.append(
            f"consistency undefined (NaN) for {int(n_nan.max())} of {layout.rows.size} samples at some "
            f"checkpoint ({len(store.manifest.model.moe_layers)} MoE layers; NaN when < 3 layers or "
            "when every adjacent-layer cosine is ≤ 0)"
        )
    onsets = layout.samples.select("sample_index", "id", "domain", "mem_onset", "epsilon")
    tables = {
        "sample_metrics": samples,
        "onsets": onsets,
        "epsilon": epsilon,
        "group_metrics": groups,
    }
    if truth is not None:
        acc = _pooled_accuracy(truth.accuracy, truth.correctness)
        series = metric_series(
            groups,
            layout.domains,
            validation_domains=config.validation_domains,
            control_domains=config.control_domains,
        )
        metrics = {m: needs for m, needs in TABLE1_METRICS.items() if m in series.columns}
        tables["accuracy"] = acc
        tables["metric_series"] = series
        tables["group_correlations"] = group_correlation_table(
            groups, acc, cutoffs, n_boot=config.n_boot, seed=config.seed
        )
        tables["correlations"] = correlation_table(
            series,
            acc,
            metrics=metrics,
            start=config.start,
            n_boot=config.n_boot,
            seed=config.seed,
        )
        notes += few_checkpoint_notes(tables["correlations"])
        if test_onsets is not None:
            tables["test_onsets"] = test_onsets
            if test is not None:
                tables["matches"] = _matches(layout, test, config)
                notes += _delay_notes(tables["matches"])
            else:
                notes.append("group pairing skipped: give --test-items with the test items' texts")
    else:
        notes.append("no accuracy given: correlations, test onsets and pairing skipped")
    if write:  # the whole set at once: no table of an earlier analysis survives beside these
        store.replace_tables(tables)
    return Analysis(store.path, tables, notes)
