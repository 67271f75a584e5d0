"""The ``pathwatch`` command line: parse the options, make one library call, print a summary.

torch and transformers are imported inside the commands, so ``pathwatch --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pathwatch.config import AnalyzeConfig, CaptureConfig
from pathwatch.demo import DEFAULT_OUT
from pathwatch.errors import InputError, PathwatchError
from pathwatch.study.config import DEFAULT_SEEDS, DESIGNS, SEARCH_SEEDS, StudyConfig
from pathwatch.testbed.presets import DEFAULT_PRESET, PRESETS

app = typer.Typer(
    name="pathwatch",
    help="Watch memorization turn into generalization in MoE pretraining from expert routing "
    "pathways, without a test set.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEBUG_VARIABLE = "PATHWATCH_DEBUG"


@app.callback()
def _root() -> None:
    """Watch memorization turn into generalization in MoE pretraining, without a test set."""


def _parse_steps(text: str | None) -> list[int] | None:
    """``"1000,2000"`` -> ``[1000, 2000]``; InputError naming --steps otherwise."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise InputError(
            f"--steps must be comma-separated non-negative integers, one per --checkpoint, e.g. "
            f"'1000,2000'; got {text!r}."
        )
    return [int(part) for part in parts]


@app.command()
def probes(
    corpus: Annotated[
        Path,
        typer.Argument(
            help="Training corpus: JSONL or Parquet with a text and a domain field, or a "
            "directory written by datasets' save_to_disk.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Probe file to write (JSONL: id, domain, text).", show_default=False
        ),
    ],
    per_domain: Annotated[
        int, typer.Option("--per-domain", help="Probes drawn per domain.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the draw.")] = 0,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            help="Skip samples longer than this many tokens of --tokenizer (probes stay whole; "
            "match capture's --max-length).",
            show_default=False,
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help="Checkpoint directory or hub REPO@REVISION whose tokenizer counts --max-tokens.",
            show_default=False,
        ),
    ] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="Corpus field of the text.")] = (
        "text"
    ),
    domain_field: Annotated[
        str,
        typer.Option("--domain-field", help="Corpus field of the domain (absent: one domain)."),
    ] = "domain",
    split: Annotated[str, typer.Option(help="Split of a saved datasets DatasetDict.")] = "train",
) -> None:
    """Draw a probe set per domain from a training corpus: deduplicated, seeded, length-capped."""
    from pathwatch.capture.probes import draw_probes

    draw = draw_probes(
        corpus,
        out,
        per_domain=per_domain,
        seed=seed,
        max_tokens=max_tokens,
        tokenizer=tokenizer,
        text_field=text_field,
        domain_field=domain_field,
        split=split,
    )
    for note in draw.notes:
        typer.echo(f"note: {note}")
    counts = ", ".join(f"{domain} {n}" for domain, n in draw.drawn.items())
    typer.echo(
        f"Drew {sum(draw.drawn.values())} probes ({counts}) into {draw.out}; skipped "
        f"{draw.duplicates} duplicate and {draw.empty} empty text(s). Next: pathwatch capture "
        f"--samples {draw.out} …"
    )


@app.command()
def capture(
    checkpoint: Annotated[
        list[str],
        typer.Option(
            "--checkpoint",
            help="Checkpoint directory written by save_pretrained, or a hub checkpoint "
            "REPO@REVISION (e.g. allenai/OLMoE-1B-7B-0924@step5000-tokens20B), or with "
            "--revisions a hub REPO; repeat once per checkpoint. Its step is the one its name or "
            "revision states (step-1000, step5000-tokens20B, checkpoint-1000) unless --steps is "
            "given; other numbers in a name (dates, hashes) are never read as steps.",
            show_default=False,
        ),
    ],
    samples: Annotated[
        Path,
        typer.Option(
            "--samples",
            help="JSONL or Parquet file with 'text' (or 'input_ids') and optional 'id', 'domain'.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Run directory to create, or to resume when it holds an unfinished capture of "
            "the same inputs.",
            show_default=False,
        ),
    ],
    steps: Annotated[
        str | None,
        typer.Option(
            "--steps",
            help="Comma-separated training step of each --checkpoint, in the same order, e.g. "
            "1000,2000.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Samples per forward pass.", min=1)
    ] = CaptureConfig.batch_size,
    max_length: Annotated[
        int,
        typer.Option(
            "--max-length", help="Tokens kept per sample; longer samples are truncated.", min=1
        ),
    ] = CaptureConfig.max_length,
    shard_size: Annotated[
        int,
        typer.Option(
            "--shard-size",
            help="Samples per stored unit; a killed capture loses at most one unit of work.",
            min=1,
        ),
    ] = CaptureConfig.shard_size,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")
    ] = True,
    virtual_experts: Annotated[
        int | None,
        typer.Option(
            "--virtual-experts",
            help="Capture a dense model (no router) through K virtual experts per MLP layer: "
            "neuron clusters fitted on the first checkpoint, weight = a cluster's share of "
            "activation mass. An extension beyond the paper (docs/virtual-pathways.md).",
            min=2,
            show_default=False,
        ),
    ] = CaptureConfig.virtual_experts,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="'local': this process, or every process of `accelerate launch -m pathwatch "
            "capture …`, each on its share of the units; 'ray': one Ray task per batch of units "
            '(pip install "pathwatch[ray]"). Workers share the run directory and never write the '
            "same unit.",
        ),
    ] = CaptureConfig.backend,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster to run on with --backend ray, e.g. 'auto' on a node of the cluster "
            "or ray://HEAD:10001; default: a local Ray instance.",
            show_default=False,
        ),
    ] = CaptureConfig.ray_address,
    revisions: Annotated[
        str | None,
        typer.Option(
            "--revisions",
            help="Glob over the revisions of each hub REPO given as a checkpoint, e.g. 'step*': "
            "every match is a checkpoint (offline with HF_HUB_OFFLINE=1: the revisions in the "
            "hub cache).",
            show_default=False,
        ),
    ] = None,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="auto|bfloat16|float16|float32: dtype the checkpoints are loaded in; auto: the "
            "checkpoint's own on a GPU, float32 on CPU. Routing and loss are reduced in float32.",
        ),
    ] = CaptureConfig.dtype,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="cpu, cuda or cuda:N; default: cuda when available, else cpu.",
            show_default=False,
        ),
    ] = CaptureConfig.device,
    device_map: Annotated[
        str | None,
        typer.Option(
            "--device-map",
            help="'auto': spread each checkpoint over all GPUs, for a model larger than one "
            '(pip install "pathwatch[gpu]").',
            show_default=False,
        ),
    ] = CaptureConfig.device_map,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code",
            help="Let transformers run a checkpoint's own modelling code (off unless given).",
        ),
    ] = CaptureConfig.trust_remote_code,
) -> None:
    """Capture routing weights and losses of every checkpoint into a resumable run directory."""
    from pathwatch.capture.run import capture_run
    from pathwatch.distributed import is_main_process

    config = CaptureConfig(
        batch_size=batch_size,
        max_length=max_length,
        shard_size=shard_size,
        virtual_experts=virtual_experts,
        backend=backend,
        ray_address=ray_address,
        dtype=dtype,
        device=device,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
    )
    store = capture_run(
        checkpoint,
        samples,
        out,
        config=config,
        steps=_parse_steps(steps),
        revisions=revisions,
        progress=progress,
    )
    if not is_main_process():  # one summary per launch
        return
    manifest = store.manifest
    truncated = int(store.load_checkpoint(manifest.steps[0]).truncated.sum())
    typer.echo(
        f"Captured {len(manifest.checkpoints)} checkpoint(s) (steps {manifest.steps[0]}.."
        f"{manifest.steps[-1]}) x {manifest.samples.count} samples of a {manifest.model.family} "
        f"model ({len(manifest.model.moe_layers)} MoE layers, {manifest.model.n_experts} experts"
        f"{' (virtual)' if virtual_experts else ''}) in {manifest.settings.dtype} "
        f"into {store.path}; {truncated} sample(s) truncated to --max-length {max_length}."
    )


def _columns(header: list[str], rows: list[list[str]]) -> str:
    """Rows of strings as left-aligned columns under a header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _interval(value: float, low: float, high: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if low != low:  # too few checkpoints for a bootstrap CI
        return f"{value:+.2f} [no CI]"
    return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def format_correlations(table: Any) -> str:
    """The Table-1 correlations as terminal text: one line per domain and metric."""
    header = [
        "domain",
        "metric",
        "needs",
        "n",
        "Pearson r [95% CI]",
        "p",
        "Spearman ρ [95% CI]",
        "p",
    ]
    rows = [
        [
            r["domain"],
            r["metric"],
            r["needs"],
            str(r["n"]),
            _interval(r["pearson_r"], r["pearson_ci_low"], r["pearson_ci_high"]),
            f"{r['pearson_p']:.1g}",
            _interval(r["spearman_rho"], r["spearman_ci_low"], r["spearman_ci_high"]),
            f"{r['spearman_p']:.1g}",
        ]
        for r in table.iter_rows(named=True)
    ]
    return _columns(header, rows)


def format_matches(table: Any) -> str:
    """Matched train/test groups and their local grokking delays."""
    header = ["domain", "train group", "test group", "delay (steps)", "similarity", "sizes"]
    rows = [
        [
            r["domain"],
            r["train_group"],
            r["test_group"],
            str(r["delay"]),
            f"{r['similarity']:.3f}",
            f"{r['n_train']} / {r['n_test']}",
        ]
        for r in table.iter_rows(named=True)
    ]
    return _columns(header, rows)


def format_correlation_overview(table: Any) -> str:
    """Pearson r of every metric (rows) with accuracy in every domain (columns); n in the header."""
    domains = sorted(set(table["domain"]))
    n = {d: max(table.filter(table["domain"] == d)["n"]) for d in domains}
    header = ["metric", "needs", *[f"{d} (n={n[d]})" for d in domains]]
    r = {(row["metric"], row["domain"]): row["pearson_r"] for row in table.iter_rows(named=True)}
    metrics = list(dict.fromkeys(table["metric"]))
    needs = dict(zip(table["metric"], table["needs"], strict=True))
    rows = [
        [m, needs[m], *["n/a" if r[(m, d)] != r[(m, d)] else f"{r[(m, d)]:+.2f}" for d in domains]]
        for m in metrics
    ]
    return _columns(header, rows)


@app.command()
def analyze(
    run: Annotated[Path, typer.Argument(help="Run directory written by `pathwatch capture`.")],
    threshold: Annotated[
        float, typer.Option(help="Cumulative router weight a pathway keeps per layer, in (0, 1].")
    ] = AnalyzeConfig.threshold,
    unit: Annotated[
        str,
        typer.Option(help="Pathway distance symbols: 'char' (the paper's string) or 'expert'."),
    ] = AnalyzeConfig.unit,
    accuracy: Annotated[
        list[Path] | None,
        typer.Option(
            help="Ground truth: per-checkpoint CSV/JSON (step, domain, accuracy), per-item JSONL "
            "(step, domain, item_id, correct), or lm-evaluation-harness results/samples files. "
            "Repeatable.",
            show_default=False,
        ),
    ] = None,
    test_items: Annotated[
        Path | None,
        typer.Option(
            help="JSONL with id, domain and text of each test item: pairs train and test groups. "
            "Items are keyed on (domain, id), ids as the accuracy gives them (lm-eval: see "
            "--item-id-field).",
            show_default=False,
        ),
    ] = None,
    domain_map: Annotated[
        list[str] | None,
        typer.Option(
            "--domain-map",
            help="Accuracy task → probe domain, as TASK=DOMAIN (repeatable), or a file with one "
            "TASK=DOMAIN per line or a JSON object. lm-eval task names rarely equal the probe "
            "domains; tasks mapped to one domain are pooled.",
            show_default=False,
        ),
    ] = None,
    item_id_field: Annotated[
        str,
        typer.Option(
            help="lm-eval doc field holding each item's id; docs without it get TASK/DOC_ID.",
        ),
    ] = AnalyzeConfig.item_id_field,
    metric: Annotated[
        str | None,
        typer.Option(
            help="lm-eval metric to read (default: acc, exact_match, acc_norm, the first present).",
            show_default=False,
        ),
    ] = AnalyzeConfig.metric,
    metric_filter: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="lm-eval filter of the metric, e.g. strict-match (default: 'none' first).",
            show_default=False,
        ),
    ] = AnalyzeConfig.metric_filter,
    epsilon: Annotated[
        float | None,
        typer.Option(
            help="Memorization loss threshold ε for every domain (default: chosen per domain so "
            "that 20–25% is memorized before the last checkpoint).",
            show_default=False,
        ),
    ] = AnalyzeConfig.epsilon,
    delta: Annotated[
        float, typer.Option(help="Memorization stability band δ.")
    ] = AnalyzeConfig.delta,
    max_pairs: Annotated[
        int,
        typer.Option(
            help="Groups with more sample pairs get a sampled distance with a 95% CI; 0 = exact.",
            min=0,
        ),
    ] = AnalyzeConfig.max_pairs,
    validation_domain: Annotated[
        list[str],
        typer.Option(help="Sample domain that is a validation set (its loss is a baseline)."),
    ] = list(AnalyzeConfig.validation_domains),  # noqa: B006 - typer reads the default
    seed: Annotated[
        int, typer.Option(help="Seed of pair sampling and bootstrap.")
    ] = AnalyzeConfig.seed,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars on stderr.")
    ] = True,
) -> None:
    """Compute pathways, distances, consistency, onsets and (with --accuracy) the Table-1 correlations."""
    from pathwatch.analysis import analyze_run
    from pathwatch.evaluation.accuracy import read_domain_map

    config = AnalyzeConfig(
        domain_map=read_domain_map(domain_map or []),
        item_id_field=item_id_field,
        metric=metric,
        metric_filter=metric_filter,
        threshold=threshold,
        unit=unit,
        epsilon=epsilon,
        delta=delta,
        max_pairs=max_pairs or None,
        validation_domains=tuple(validation_domain),
        seed=seed,
    )
    result = analyze_run(
        run, config=config, accuracy=accuracy or None, test_items=test_items, progress=progress
    )
    for note in result.notes:
        typer.echo(f"note: {note}")
    if "matches" in result.tables:
        typer.echo("\nMatched groups (local grokking delay = t# − t*):")
        typer.echo(format_matches(result.tables["matches"]))
    if "correlations" in result.tables:
        typer.echo("\nCorrelation with accuracy, from the start of its sustained rise (Table 1):")
        typer.echo(format_correlations(result.tables["correlations"]))
    typer.echo(f"\nTables written to {result.run / 'tables'}; next: pathwatch report {result.run}")


@app.command()
def evaluate(
    checkpoints: Annotated[
        list[str],
        typer.Argument(
            help="Checkpoint directories written by save_pretrained, hub checkpoints "
            "REPO@REVISION, or with --revisions hub REPOs (as for `pathwatch capture`); each "
            "one's step is the one its name or revision states (step-1000, step5000-tokens20B) "
            "unless --steps is given.",
            show_default=False,
        ),
    ],
    tasks: Annotated[
        list[str],
        typer.Option(
            "--tasks",
            help="lm-eval task or group names, comma-separated or repeated; local task YAMLs "
            "with --include-path.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output directory: OUT/step-<N>/ per checkpoint, read by `pathwatch analyze RUN "
            "--accuracy OUT`. Finished checkpoints are kept when re-run.",
            show_default=False,
        ),
    ],
    steps: Annotated[
        str | None,
        typer.Option(
            "--steps",
            help="Comma-separated training step of each checkpoint, in the same order.",
            show_default=False,
        ),
    ] = None,
    include_path: Annotated[
        list[Path] | None,
        typer.Option(
            "--include-path",
            help="Directory of local lm-eval task YAMLs (repeatable).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="lm-eval batch size.")] = 32,
    device: Annotated[
        str, typer.Option(help="Torch device lm-eval runs on (cpu, cuda, cuda:0).")
    ] = "cpu",
    revisions: Annotated[
        str | None,
        typer.Option(
            "--revisions",
            help="Glob over the revisions of each hub REPO given, e.g. 'step*'.",
            show_default=False,
        ),
    ] = None,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="auto|bfloat16|float16|float32: dtype lm-eval loads each checkpoint in; auto: "
            "the checkpoint's own on a GPU, float32 on CPU.",
        ),
    ] = CaptureConfig.dtype,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code",
            help="Let transformers run a checkpoint's own modelling code (off unless given).",
        ),
    ] = CaptureConfig.trust_remote_code,
    limit: Annotated[
        int | None,
        typer.Option(help="Items per task (lm-eval --limit; for trials).", show_default=False),
    ] = None,
    progress: Annotated[
        bool,
        typer.Option("--progress/--no-progress", help="Show lm-eval's logs and progress bars."),
    ] = True,
) -> None:
    """Run lm-evaluation-harness on every checkpoint (with per-item samples), for --accuracy."""
    from pathwatch.evaluation.harness import evaluate_checkpoints

    names = [name.strip() for value in tasks for name in value.split(",") if name.strip()]
    targets = evaluate_checkpoints(
        checkpoints,
        names,
        out,
        steps=_parse_steps(steps),
        revisions=revisions,
        include_path=include_path,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        limit=limit,
        progress=progress,
    )
    typer.echo(
        f"Evaluated {len(targets)} checkpoint(s) on {', '.join(names)} into {out}; next: "
        f"pathwatch analyze RUN --accuracy {out} (map task names to probe domains with "
        "--domain-map TASK=DOMAIN)."
    )


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="Run directory analysed by `pathwatch analyze`.")],
) -> None:
    """Write RUN/report.html (self-contained, opens offline) and RUN/figures/*.png."""
    from pathwatch.report import build_report

    typer.echo(f"Report: {build_report(run)}")


def format_grokking(table: Any, memorized: float) -> str:
    """The testbed's own grokking figures per domain (``memorized``: the training-accuracy level
    that ``table`` was computed with)."""
    header = [
        "domain",
        f"train acc ≥ {memorized:g} at",
        "held-out acc then",
        "held-out ≥ 0.5 at",
        "held-out ≥ 0.9 at",
        "delay",
        "final held-out",
        "grokked",
    ]

    def cell(value: Any, fmt: str = "{}") -> str:
        return "never" if value is None else fmt.format(value)

    rows = [
        [
            r["domain"],
            cell(r["memorized_step"]),
            cell(r["heldout_at_memorized"], "{:.3f}"),
            cell(r["step_half"]),
            cell(r["step_generalized"]),
            cell(r["delay"]),
            f"{r['final_heldout']:.3f}",
            "yes" if r["grokked"] else "no",
        ]
        for r in table.iter_rows(named=True)
    ]
    return _columns(header, rows)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Directory for the testbed checkpoints, the run and the report.")
    ] = Path(DEFAULT_OUT),
    seed: Annotated[int, typer.Option(help="Seed of the corpus, the model and the training.")] = 0,
    preset: Annotated[
        str,
        typer.Option(
            help="; ".join(f"'{name}': {preset.help}" for name, preset in PRESETS.items()) + "."
        ),
    ] = DEFAULT_PRESET,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars on stderr.")
    ] = True,
) -> None:
    """Train a tiny MoE on CPU on a built-in corpus, then capture, analyze and report it."""
    from pathwatch.demo import run_demo
    from pathwatch.testbed.grokking import MEMORIZED, grokking_table
    from pathwatch.testbed.presets import preset_config

    result = run_demo(out, seed=seed, config=preset_config(preset), progress=progress)
    testbed, tables = result.testbed, result.analysis.tables
    trained = "reused" if testbed.reused else f"trained in {testbed.train_seconds:.0f} s"
    typer.echo(
        f"Testbed: seed {seed}, {len(testbed.steps)} checkpoints (steps {testbed.steps[0]}.."
        f"{testbed.steps[-1]}), {trained}."
    )
    typer.echo(
        "\nGrokking, from the testbed's own train and held-out accuracy (grokked: held-out ≤ 0.1 "
        f"when training accuracy reached {MEMORIZED:g}, then ≥ 0.9):"
    )
    typer.echo(format_grokking(grokking_table(testbed.curves), MEMORIZED))
    for note in result.analysis.notes:
        typer.echo(f"note: {note}")
    if "matches" in tables:
        typer.echo("\nMemorization groups matched to generalization groups (delay = t# − t*):")
        typer.echo(format_matches(tables["matches"]))
    typer.echo(
        "\nPearson r with held-out accuracy, from the start of its sustained rise (CIs and "
        "p-values: `pathwatch analyze` and the report):"
    )
    typer.echo(format_correlation_overview(tables["correlations"]))
    if result.regime is not None:
        typer.echo("\nRegime conditions (docs/testbed.md, 'Stream testbed'):")
        for line in result.regime.lines():
            typer.echo(f"  {line}")
    timings = ", ".join(f"{stage} {sec:.0f} s" for stage, sec in result.seconds.items())
    typer.echo(
        f"\nReport: {result.report}  ({timings}; total {sum(result.seconds.values()):.0f} s)"
    )
    cpu = ", ".join(f"{stage} {sec:.0f} s" for stage, sec in result.cpu_seconds.items())
    typer.echo(f"CPU time: {cpu}; total {sum(result.cpu_seconds.values()):.0f} s")


@app.command()
def study(
    out: Annotated[
        Path, typer.Option(help="Study directory (testbeds, runs, tables, figures, report.md).")
    ] = Path("pathwatch-study"),
    design: Annotated[
        str,
        typer.Option(
            help="variants: the grokking testbed and five variants of it; regimes: the grokking "
            "and the stream testbed side by side (docs/validation.md). One of: "
            + ", ".join(DESIGNS)
            + "."
        ),
    ] = DESIGNS[0],
    seeds: Annotated[
        int, typer.Option(help="Seeds per compared configuration (variants run 1 or 2).", min=1)
    ] = DEFAULT_SEEDS,
    first_seed: Annotated[
        int | None,
        typer.Option(
            help="First seed (default: 0 for variants; for regimes 2, after the search seeds "
            + ", ".join(map(str, SEARCH_SEEDS))
            + ").",
            min=0,
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(help="(configuration, seed) units run in parallel, 1 thread each.", min=1)
    ] = StudyConfig.jobs,
    reduced: Annotated[
        bool,
        typer.Option(
            "--reduced/--full",
            help="--reduced: the tiny testbeds (seconds per seed; they do not grok), for smoke "
            "tests; seeds from 0.",
        ),
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="One line per finished unit on stderr.")
    ] = True,
) -> None:
    """Validate the routing metrics against accuracy over several seeds and configurations.

    Resumable: finished (configuration, seed) units in OUT are reused.
    """
    from pathwatch._validate import check_choice
    from pathwatch.study.run import run_study

    check_choice("study", "design", design, DESIGNS)
    if reduced and first_seed is not None:
        raise InputError("--first-seed does not apply to --reduced (its seeds start at 0).")
    if reduced:
        config = StudyConfig.reduced(seeds=seeds, jobs=jobs, regimes=design == "regimes")
    else:
        build = StudyConfig.regimes if design == "regimes" else StudyConfig.default
        first = {} if first_seed is None else {"first_seed": first_seed}
        config = build(seeds=seeds, jobs=jobs, **first)
    result = run_study(out, config=config, progress=progress)
    typer.echo(result.headline)
    typer.echo(f"\nReport: {result.report}  ({result.seconds:.0f} s)")


def main() -> None:
    """Entry point of the ``pathwatch`` script: a PathwatchError becomes one line on stderr."""
    try:
        app()
    except PathwatchError as exc:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        print(f"pathwatch: error: {exc}", file=sys.stderr)
        print(f"pathwatch: set {DEBUG_VARIABLE}=1 to see the traceback.", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
