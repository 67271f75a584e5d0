"""The ``pathwatch`` command line: parse the options, make one pipeline call, print a summary.

torch and transformers are imported inside the commands, so ``pathwatch --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pathwatch.errors import InputError, PathwatchError

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
def capture(
    checkpoint: Annotated[
        list[Path],
        typer.Option(
            "--checkpoint",
            help="Checkpoint directory written by save_pretrained; repeat once per checkpoint. "
            "Its step is the trailing number of its name (step-1000, checkpoint-1000) unless "
            "--steps is given.",
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
    ] = 16,
    max_length: Annotated[
        int,
        typer.Option(
            "--max-length", help="Tokens kept per sample; longer samples are truncated.", min=1
        ),
    ] = 512,
    shard_size: Annotated[
        int,
        typer.Option(
            "--shard-size",
            help="Samples per stored unit; a killed capture loses at most one unit of work.",
            min=1,
        ),
    ] = 1024,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")
    ] = True,
) -> None:
    """Capture routing weights and losses of every checkpoint into a resumable run directory."""
    from pathwatch.pipeline import capture_run

    store = capture_run(
        checkpoint,
        samples,
        out,
        steps=_parse_steps(steps),
        batch_size=batch_size,
        max_length=max_length,
        shard_size=shard_size,
        progress=progress,
    )
    manifest = store.manifest
    truncated = int(store.load_checkpoint(manifest.steps[0]).truncated.sum())
    typer.echo(
        f"Captured {len(manifest.checkpoints)} checkpoint(s) (steps {manifest.steps[0]}.."
        f"{manifest.steps[-1]}) x {manifest.samples.count} samples of a {manifest.model.family} "
        f"model ({len(manifest.model.moe_layers)} MoE layers, {manifest.model.n_experts} experts) "
        f"into {store.path}; {truncated} sample(s) truncated to --max-length {max_length}."
    )


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
