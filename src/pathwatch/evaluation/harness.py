"""Run lm-evaluation-harness on every checkpoint, into the layout ``analyze --accuracy`` reads.

``evaluate_checkpoints(checkpoints, tasks, out)`` calls lm-eval as a library (extra ``lmeval``),
once per checkpoint, with ``log_samples``, and lets lm-eval's own writer put its files under
``OUT/step-<N>/<model name>/``: ``results_<date>.json`` and one ``samples_<task>_<date>.jsonl``
per task, exactly as ``lm_eval --output_path OUT/step-<N> --log_samples`` would. The directory
states the step, so :func:`pathwatch.evaluation.read_accuracy` reads each file at its checkpoint.

A checkpoint's directory appears whole or not at all (written under a hidden name, renamed when
lm-eval is done); one already there for the same checkpoint and tasks is kept (a re-run resumes),
one of other tasks is refused. Every input — the checkpoints (directories or hub revisions, through
the resolver ``pathwatch capture`` uses) and their steps, the device and dtype, the extra, the task
names — is checked before the first model is loaded.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import io
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathwatch._files import read_json
from pathwatch._hf import check_device, config_dtype, resolve_dtype
from pathwatch._validate import check_bool, check_int, check_path, check_text
from pathwatch.checkpoints import resolve_checkpoints
from pathwatch.config import check_load_options
from pathwatch.errors import InputError, MissingExtraError, StoreError, invalid_parameter
from pathwatch.store import write_atomic

__all__ = ["EvalCheckpoint", "evaluate_checkpoints", "resolve_checkpoint"]

_FUNC = "evaluate_checkpoints"
RECORD = "pathwatch-evaluate.json"
"""What a finished checkpoint directory was evaluated on (checkpoint, step, tasks)."""
_LOADERS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


@dataclass(frozen=True)
class EvalCheckpoint:
    """One checkpoint to evaluate: the directory lm-eval's ``hf`` model loads, its step, and for a
    hub checkpoint the repo, revision and commit (recorded in ``model_args``)."""

    path: str
    step: int
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None

    @property
    def model_args(self) -> str:
        """lm-eval's ``model_args`` string, as results_*.json records it (a hub checkpoint as
        ``pretrained=REPO,revision=REVISION``, the way lm-eval is pointed at one by hand)."""
        if self.repo is None:
            return f"pretrained={self.path}"
        return f"pretrained={self.repo},revision={self.revision}"


def resolve_checkpoint(arg: str | os.PathLike, step: int | None = None) -> EvalCheckpoint:
    """A checkpoint argument (a directory or ``REPO@REVISION``) → what to load and its step.

    A local directory written by ``save_pretrained``; its step is ``step`` if given, else the one
    its name states (``step-1000``, ``checkpoint-1000``), never a trailing date or hash.

    >>> import tempfile, pathlib
    >>> ckpt = pathlib.Path(tempfile.mkdtemp()) / "step-100"
    >>> ckpt.mkdir(); _ = (ckpt / "config.json").write_text("{}")
    >>> resolve_checkpoint(ckpt).step, resolve_checkpoint(ckpt).model_args.endswith("/step-100")
    (100, True)
    """
    return _checkpoints([arg], None if step is None else [step], None)[0]


def _require_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as exc:
        raise MissingExtraError(
            'pathwatch evaluate needs lm-evaluation-harness: pip install "pathwatch[lmeval]".'
        ) from exc
    return lm_eval


def _task_manager(tasks: list[str], include_path: list[Path]) -> Any:
    """lm-eval's TaskManager over its own tasks and ``include_path``; InputError for unknown tasks."""
    from lm_eval.tasks import TaskManager

    try:
        manager = TaskManager(include_path=[str(p) for p in include_path] or None)
    except (ValueError, OSError) as exc:  # e.g. a task defined twice in the YAMLs
        raise InputError(f"--include-path: lm-eval cannot index its tasks: {exc}") from exc
    known = set(manager.all_tasks)
    for task in tasks:
        if task not in known and not manager.match_tasks([task]):
            close = difflib.get_close_matches(task, sorted(known), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            where = (
                " (nor in --include-path)"
                if include_path
                else " (local task YAMLs: --include-path)"
            )
            raise InputError(f"lm-eval knows no task {task!r}{where}.{hint}")
    return manager


def _checkpoints(
    checkpoints: Sequence[str | os.PathLike], steps: Sequence[int] | None, revisions: str | None
) -> list[EvalCheckpoint]:
    """The checkpoints through the resolver capture uses; each needs a config.json."""
    resolved = resolve_checkpoints(
        checkpoints, steps=steps, revisions=revisions, strict_steps=True, func=_FUNC
    )
    for ckpt in resolved:
        if not (ckpt.path / "config.json").is_file():
            raise InputError(
                f"Checkpoint {ckpt.label} has no config.json; pass a directory written by "
                "save_pretrained."
            )
    return [EvalCheckpoint(str(c.path), c.step, c.repo, c.revision, c.commit) for c in resolved]


def _done(target: Path, record: dict[str, Any]) -> bool:
    """Whether ``target`` already holds this evaluation; InputError if it holds another."""
    if not target.exists():
        return False
    found = read_json(target / RECORD, "evaluation record") if (target / RECORD).is_file() else None
    if found == record:
        return True
    raise InputError(
        f"{target} already holds an evaluation of other checkpoints or tasks ({found or 'unknown'}); "
        "choose another --out or remove that directory."
    )


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """Without progress: no lm-eval logs below errors, no datasets or transformers progress bars."""
    if progress:
        yield
        return
    import datasets

    from pathwatch._hf import no_hf_progress_bars

    logger = logging.getLogger("lm_eval")
    level, bars = logger.level, datasets.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        with no_hf_progress_bars():
            yield
    finally:
        logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def _evaluate_one(
    ckpt: EvalCheckpoint,
    tasks: list[str],
    manager: Any,
    partial: Path,
    *,
    batch_size: int,
    device: str,
    dtype: str,
    trust_remote_code: bool,
    limit: int | None,
    progress: bool,
) -> None:
    """lm-eval on one checkpoint, its files written by lm-eval's own tracker under ``partial``."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(
        pretrained=ckpt.path,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        trust_remote_code=trust_remote_code,
    )
    if not progress:  # lm-eval's own bars: its model calls take disable_tqdm
        for name in _LOADERS:
            setattr(lm, name, functools.partial(getattr(lm, name), disable_tqdm=True))
    tracker = EvaluationTracker(output_path=str(partial))
    # without progress, lm-eval's request-building bars and task warnings (on stderr) are hidden;
    # its failures are exceptions, and a failed save is caught below
    hidden = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
    with hidden:
        results = simple_evaluate(
            model=lm,
            model_args=ckpt.model_args,
            tasks=tasks,
            limit=limit,
            log_samples=True,
            evaluation_tracker=tracker,
            task_manager=manager,
        )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    if not list(partial.rglob("results_*.json")):  # the tracker logs its failures, not raises
        raise StoreError(
            f"{partial}: lm-eval wrote no results_*.json; check that --out is writable."
        )


def evaluate_checkpoints(
    checkpoints: Sequence[str | os.PathLike],
    tasks: Sequence[str],
    out: str | os.PathLike,
    *,
    steps: Sequence[int] | None = None,
    revisions: str | None = None,
    include_path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Evaluate each checkpoint with lm-evaluation-harness into ``OUT/step-<N>/``.

    Parameters
    ----------
    checkpoints : sequence of paths or str
        Checkpoint directories (``save_pretrained``), hub checkpoints ``REPO@REVISION``, or with
        ``revisions`` bare hub repos (:mod:`pathwatch.checkpoints`, as ``pathwatch capture``);
        each one's step from its name or revision, or ``steps``.
    tasks : sequence of str
        lm-eval task (or group) names, its own or defined by YAMLs under ``include_path``.
    out : path
        Output directory; ``pathwatch analyze RUN --accuracy OUT`` reads it.
    steps : sequence of int, optional
        The step of each checkpoint, in order (for names that state none).
    revisions : str, optional
        Glob over the revisions of each bare hub repo, e.g. ``"step*"``.
    include_path : path or paths, optional
        Directories of local task YAMLs (lm-eval's ``--include_path``).
    batch_size : int, default 32
    device : str, default "cpu"
        Torch device lm-eval runs the model on (``cuda``, ``cuda:0``).
    dtype : {"auto", "bfloat16", "float16", "float32"}, default "auto"
        Dtype lm-eval loads the model in; "auto": the checkpoint's own on a GPU, float32 on CPU.
    trust_remote_code : bool, default False
        Let transformers run a checkpoint's own modelling code.
    limit : int, optional
        Items per task (lm-eval's ``--limit``; for trials only).
    progress : bool, default True
        Show lm-eval's logs and progress bars.

    Returns
    -------
    list of Path
        ``OUT/step-<N>`` of every checkpoint, in the order given.

    Examples
    --------
    >>> evaluate_checkpoints(["ckpts/step-100", "ckpts/step-200"], ["arc_easy"],
    ...                      "evals")  # doctest: +SKIP
    [PosixPath('evals/step-100'), PosixPath('evals/step-200')]
    """
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks:
        raise invalid_parameter(_FUNC, "tasks", "a non-empty list of lm-eval task names", tasks)
    tasks = [check_text(_FUNC, "tasks", t) for t in tasks]
    out = check_path(_FUNC, "out", out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a directory for the evaluations.")
    if include_path is None:
        includes = []
    elif isinstance(include_path, str | os.PathLike):
        includes = [include_path]
    elif isinstance(include_path, Sequence):
        includes = list(include_path)
    else:
        raise invalid_parameter(_FUNC, "include_path", "a directory or directories", include_path)
    includes = [check_path(_FUNC, "include_path", p) for p in includes]
    for path in includes:
        if not path.is_dir():
            raise InputError(
                f"--include-path {path} is not a directory of lm-eval task YAMLs (include_path)."
            )
    check_int(_FUNC, "batch_size", batch_size, low=1)
    check_load_options(_FUNC, dtype, device, None, trust_remote_code)
    check_int(_FUNC, "limit", limit, low=1, allow_none=True)
    check_bool(_FUNC, "progress", progress)
    resolved = _checkpoints(checkpoints, steps, revisions)
    device = check_device(_FUNC, device, None)
    dtype = resolve_dtype(_FUNC, dtype, config_dtype(Path(resolved[0].path)), device)
    _require_lm_eval()
    with _quiet(progress):
        manager = _task_manager(tasks, includes)
        plan = []
        for ckpt in resolved:
            record = {"checkpoint": ckpt.model_args, "step": ckpt.step, "tasks": tasks}
            if ckpt.commit is not None:  # a hub revision: the commit it resolved to
                record["commit"] = ckpt.commit
            target = out / f"step-{ckpt.step}"
            plan.append((ckpt, target, record, _done(target, record)))
        for ckpt, target, record, done in plan:
            if done:
                continue
            partial = out / f".step-{ckpt.step}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            _evaluate_one(
                ckpt,
                tasks,
                manager,
                partial,
                batch_size=batch_size,
                device=device,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                limit=limit,
                progress=progress,
            )
            write_atomic(partial / RECORD, json.dumps(record, indent=2).encode())
            os.replace(partial, target)
    targets = [target for _, target, _, _ in plan]
    return targets
