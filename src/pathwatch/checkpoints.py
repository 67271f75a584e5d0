"""Checkpoint arguments → local directories and training steps: local dirs and hub revisions.

One resolver for ``pathwatch capture`` and ``pathwatch evaluate``. A checkpoint is

- a local directory written by ``save_pretrained`` (its step from its name, :mod:`pathwatch.steps`);
- ``REPO@REVISION`` on the Hugging Face hub, e.g. ``allenai/OLMoE-1B-7B-0924@step5000-tokens20B``
  (its step from the revision's name), fetched through ``huggingface_hub`` into its cache;
- with ``revisions=GLOB`` (``--revisions 'step*'``), a bare ``REPO``: every revision of the repo
  whose name matches, e.g. all of OLMoE's ``step<N>-tokens<M>B`` branches.

Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) revisions are listed from the cache's
``refs/`` and resolved to its ``snapshots/<commit>/`` without a request; online they are listed
with ``HfApi.list_repo_refs`` and downloaded by ``snapshot_download``. Every failure is one line
before any model is loaded. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pathwatch._validate import check_bool, check_path, check_text, is_int
from pathwatch.errors import InputError, MissingExtraError, invalid_parameter
from pathwatch.steps import STEP_NAME_EXAMPLES, checkpoint_step, step_from_name

__all__ = ["Checkpoint", "checkpoint_directory", "resolve_checkpoints"]

_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: the directory to load, its step, and for hub checkpoints where from.

    ``commit`` is the hub commit the revision resolved to (recorded in a run's manifest).
    """

    path: Path
    step: int
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None

    @property
    def label(self) -> str:
        """``REPO@REVISION`` for hub checkpoints, else the directory."""
        return f"{self.repo}@{self.revision}" if self.repo else str(self.path)


def _hub():
    try:
        import huggingface_hub
        import huggingface_hub.constants  # its HF_HUB_CACHE is read at each call: the cache as set now
    except ImportError as exc:  # a dependency of transformers: only a broken install lacks it
        raise MissingExtraError(
            "Hub checkpoints need huggingface_hub: pip install huggingface_hub."
        ) from exc
    return huggingface_hub


def _offline(local_files_only: bool) -> bool:
    """Whether no request may be made: ``local_files_only`` or ``HF_HUB_OFFLINE``."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return local_files_only or flag or bool(constants.HF_HUB_OFFLINE)


def _cached_revisions(repo: str) -> list[str]:
    """The revision names of ``repo`` in the hub cache (its ``refs/``)."""
    hub = _hub()
    try:
        cache = hub.scan_cache_dir(hub.constants.HF_HUB_CACHE)
    except hub.CacheNotFound:
        return []
    return sorted(
        ref
        for info in cache.repos
        if info.repo_id == repo and info.repo_type == "model"
        for ref in info.refs
    )


def _revisions(repo: str, offline: bool) -> list[str]:
    """Every branch and tag name of ``repo``: from the cache offline, from the hub online."""
    if offline:
        return _cached_revisions(repo)
    hub = _hub()
    try:
        refs = hub.HfApi().list_repo_refs(repo)
    except (hub.errors.RepositoryNotFoundError, hub.errors.HfHubHTTPError, OSError) as exc:
        raise InputError(
            f"Hub repo {repo}: cannot list its revisions ({type(exc).__name__}); check the name, "
            "your token (gated repos), or set HF_HUB_OFFLINE=1 to use the cache."
        ) from exc
    return sorted(ref.name for ref in [*refs.branches, *refs.tags])


def _snapshot(repo: str, revision: str, offline: bool) -> tuple[Path, str]:
    """The local snapshot directory of ``repo@revision`` and its commit (downloaded if online)."""
    hub = _hub()
    try:
        folder = Path(
            hub.snapshot_download(
                repo,
                revision=revision,
                local_files_only=offline,
                cache_dir=hub.constants.HF_HUB_CACHE,
            )
        )
    except (hub.errors.RevisionNotFoundError, hub.errors.LocalEntryNotFoundError) as exc:
        known = _cached_revisions(repo) if offline else _revisions(repo, offline)
        where = "in the hub cache (offline)" if offline else "on the hub"
        listed = ", ".join(known[:8]) + (" …" if len(known) > 8 else "") if known else "none"
        raise InputError(
            f"Hub checkpoint {repo}@{revision}: no such revision {where}; known revisions: "
            f"{listed}."
        ) from exc
    except (hub.errors.RepositoryNotFoundError, hub.errors.HfHubHTTPError, OSError) as exc:
        raise InputError(
            f"Hub checkpoint {repo}@{revision}: cannot fetch it ({type(exc).__name__}); check "
            "the name and your token, or set HF_HUB_OFFLINE=1 to use the cache."
        ) from exc
    return folder, folder.name


def _hub_checkpoint(repo: str, revision: str, offline: bool, step: int | None) -> Checkpoint:
    """A hub revision as a checkpoint; its step from the revision name unless ``step`` is given."""
    folder, commit = _snapshot(repo, revision, offline)
    if step is None:
        step = step_from_name(revision)
        if step is None:
            raise InputError(
                f"Cannot read a training step from hub revision {revision!r} of {repo}; revisions "
                f"named like {STEP_NAME_EXAMPLES} state theirs, or pass --steps."
            )
    return Checkpoint(folder, int(step), repo, revision, commit)


def _local_checkpoint(func: str, raw: object, step: int | None, strict: bool) -> Checkpoint:
    """A local checkpoint directory; its step from its name unless ``step`` is given."""
    path = check_path(func, "checkpoints", raw)
    if not path.is_dir():
        hint = " or a hub checkpoint REPO@REVISION" if _REPO.fullmatch(str(raw)) else ""
        raise InputError(
            f"Checkpoint directory {path} does not exist or is not a directory; pass a directory "
            f"written by save_pretrained{hint}."
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise InputError(f"Checkpoint directory {path} is not readable; check its permissions.")
    stated = step_from_name(path.name)
    if strict and step is not None and stated is not None and stated != step:
        raise InputError(
            f"--steps gives step {step} to checkpoint {path}, whose name states step {stated}; "
            "analyze would refuse the mismatch. Give its own step."
        )
    return Checkpoint(path.resolve(), checkpoint_step(path) if step is None else int(step))


def checkpoint_directory(
    checkpoint: str | os.PathLike, *, local_files_only: bool = False, func: str = "capture"
) -> Path:
    """The local directory of one checkpoint (a directory, or ``REPO@REVISION`` from the hub
    cache or the hub), whatever its name states; one-line InputError if there is none.

    >>> import tempfile
    >>> checkpoint_directory(tempfile.mkdtemp()).is_dir()
    True
    """
    check_bool(func, "local_files_only", local_files_only)
    [(where, revision)] = _expand(func, [checkpoint], None, True)
    if revision is not None:
        return _snapshot(where, revision, _offline(local_files_only))[0]
    path = check_path(func, "model", where)
    if not path.is_dir():
        raise InputError(
            f"Checkpoint directory {path} does not exist or is not a directory; pass a directory "
            "written by save_pretrained or a hub checkpoint REPO@REVISION."
        )
    return path


def _expand(
    func: str, checkpoints: Sequence[object], revisions: str | None, offline: bool
) -> list[tuple[str, str | None]]:
    """Each argument as (local path or repo, revision or None); bare repos expanded by ``revisions``."""
    items: list[tuple[str, str | None]] = []
    for raw in checkpoints:
        text = os.fspath(raw) if isinstance(raw, str | os.PathLike) else raw
        if not isinstance(text, str) or not text:
            raise invalid_parameter(func, "checkpoints", "directories or REPO@REVISION", raw)
        repo, at, revision = text.partition("@")
        if at and _REPO.fullmatch(repo) and revision and not Path(text).exists():
            items.append((repo, revision))
        elif revisions is not None and _REPO.fullmatch(text) and not Path(text).exists():
            known = _revisions(text, offline)
            matched = [r for r in known if fnmatch.fnmatchcase(r, revisions)]
            if not matched:
                where = "in the hub cache (offline)" if offline else "on the hub"
                raise InputError(
                    f"--revisions {revisions!r} matches no revision of {text} {where} (it has "
                    f"{len(known)}: {', '.join(known[:6]) or 'none'}{' …' if len(known) > 6 else ''})."
                )
            items += [(text, r) for r in matched]
        else:
            items.append((text, None))
    return items


def resolve_checkpoints(
    checkpoints: Sequence[str | os.PathLike],
    *,
    steps: Sequence[int] | None = None,
    revisions: str | None = None,
    local_files_only: bool = False,
    strict_steps: bool = False,
    func: str = "resolve_checkpoints",
) -> list[Checkpoint]:
    """Resolve checkpoint arguments to local directories and training steps, before any work.

    Parameters
    ----------
    checkpoints : sequence of str or path
        Local directories (``save_pretrained``), hub checkpoints ``REPO@REVISION``, or (with
        ``revisions``) bare hub repos ``REPO``.
    steps : sequence of int, optional
        The step of each resolved checkpoint, in order (for names that state none).
    revisions : str, optional
        Glob over a bare repo's revision names, e.g. ``"step*"``; each match is one checkpoint.
    local_files_only : bool, default False
        Use only the hub cache (as ``HF_HUB_OFFLINE=1`` does).
    strict_steps : bool, default False
        Refuse a ``steps`` entry that contradicts the step a directory's name states (lm-eval's
        files are read at the step their path states); otherwise ``steps`` overrides names.
    func : str
        The public call the errors name.

    Returns
    -------
    list of Checkpoint
        In the order given (a repo's revisions sorted by name), each step its own.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> ckpt = pathlib.Path(tempfile.mkdtemp()) / "step-100"
    >>> ckpt.mkdir()
    >>> [c.step for c in resolve_checkpoints([ckpt])]
    [100]
    """
    if isinstance(checkpoints, str | os.PathLike) or not isinstance(checkpoints, Sequence):
        raise invalid_parameter(func, "checkpoints", "a non-empty list of checkpoints", checkpoints)
    if not checkpoints:
        raise invalid_parameter(func, "checkpoints", "a non-empty list of checkpoints", checkpoints)
    check_text(func, "revisions", revisions, allow_none=True)
    check_bool(func, "local_files_only", local_files_only)
    check_bool(func, "strict_steps", strict_steps)
    hub_wanted = revisions is not None or any(
        "@" in os.fspath(c) for c in checkpoints if isinstance(c, str | os.PathLike)
    )
    offline = _offline(local_files_only) if hub_wanted else True
    items = _expand(func, checkpoints, revisions, offline)
    if steps is not None and (
        isinstance(steps, str)
        or not isinstance(steps, Sequence)
        or len(steps) != len(items)
        or not all(is_int(s) and s >= 0 for s in steps)
    ):
        raise invalid_parameter(
            func, "steps", f"{len(items)} non-negative ints, one per checkpoint", steps
        )
    resolved = [
        _local_checkpoint(func, where, None if steps is None else steps[i], strict_steps)
        if revision is None
        else _hub_checkpoint(where, revision, offline, None if steps is None else steps[i])
        for i, (where, revision) in enumerate(items)
    ]
    seen: dict[Path, Checkpoint] = {}
    by_step: dict[int, Checkpoint] = {}
    for ckpt in resolved:
        if ckpt.path in seen:
            raise InputError(f"Checkpoint {ckpt.label} is given more than once.")
        if ckpt.step in by_step:
            raise InputError(
                f"Checkpoints {by_step[ckpt.step].label} and {ckpt.label} both have step "
                f"{ckpt.step}; each checkpoint needs its own step (pass --steps)."
            )
        seen[ckpt.path] = by_step[ckpt.step] = ckpt
    return resolved
