"""Crash-safe file writes: temporary name in the same directory, fsync, atomic rename."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from pathwatch.errors import StoreError

TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"
CLAIM_DIR = ".claims"
CLAIM_SUFFIX = ".claim"

_FIXES = {
    errno.ENOSPC: "free disk space and re-run the same command to resume",
    errno.EDQUOT: "raise the disk quota or free space and re-run the same command to resume",
    errno.EACCES: "make the directory writable or choose another --out",
    errno.EROFS: "choose an --out on a writable filesystem",
}


def _write_bytes(handle: BinaryIO, data: bytes) -> None:
    """Write all of ``data`` to an open file (the one low-level write of the store)."""
    handle.write(data)


def store_error(path: Path, action: str, exc: OSError) -> StoreError:
    """A one-line StoreError for an OSError met while ``action`` (e.g. 'writing') ``path``."""
    fix = _FIXES.get(exc.errno or 0, "check the path and its permissions")
    reason = exc.strerror or str(exc)
    return StoreError(f"{path}: {action} failed: {reason}. Fix: {fix}.")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The bytes go to a hidden temporary file in the same directory, are fsync'd, and the file is
    renamed over ``path`` with :func:`os.replace`. On any failure the temporary file is removed and
    an ``OSError`` becomes a one-line :class:`~pathwatch.errors.StoreError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise store_error(path.parent, "creating a file in", exc) from exc
    try:
        os.close(fd)
        with open(tmp, "wb") as handle:  # by name, so handle.name says which file failed
            _write_bytes(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise store_error(path, "writing", exc) from exc
        raise
    _fsync_dir(path.parent)


def replace_directory(target: Path, files: Mapping[str, bytes]) -> Path:
    """Make ``target`` a directory holding exactly ``files`` (name -> bytes), swapped in whole.

    The files are written and fsync'd in a hidden sibling directory, the old ``target`` is renamed
    aside, the new one renamed into place, and the old one deleted. Readers see the old set or the
    new one, never a mixture; leftovers of a killed swap (the aside copy, a half-written new set)
    are removed first, and an aside copy with no ``target`` is the old set, put back.
    """
    target = Path(target)
    aside = target.with_name(f".{target.name}.old")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.new-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if aside.exists():
            if target.exists():
                shutil.rmtree(aside)
            else:
                os.replace(aside, target)
        fresh = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    except OSError as exc:
        raise store_error(target.parent, "preparing", exc) from exc
    try:
        for name, data in files.items():
            with open(fresh / name, "wb") as handle:
                _write_bytes(handle, data)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(fresh)
        if target.exists():
            os.replace(target, aside)
        os.replace(fresh, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        shutil.rmtree(fresh, ignore_errors=True)
        if aside.exists() and not target.exists():
            with contextlib.suppress(OSError):
                os.replace(aside, target)
        if isinstance(exc, OSError):
            raise store_error(target, "writing", exc) from exc
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return target


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (a no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_temporaries(directory: Path) -> int:
    """Delete temporary files a killed writer left under ``directory``; returns how many."""
    removed = 0
    for tmp in Path(directory).rglob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def exclusive_lock(directory: Path) -> Iterator[None]:
    """Hold an advisory lock on ``directory`` so that one writer at a time works in it.

    The operating system drops the lock when the holder dies, so a killed writer never blocks the
    next one. Where ``fcntl`` is missing (Windows) no lock is taken.
    """
    with _run_lock(
        directory,
        shared=False,
        refusal="another pathwatch process is writing this run. Wait for it to finish, or pass "
        "another --out.",
    ):
        yield


@contextlib.contextmanager
def shared_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock shared: the workers of distributed captures may write side by side.

    Each unit is then claimed on its own (:func:`claim`); a single-process capture, which holds
    the lock exclusively, is refused while any worker holds it and the other way round.
    """
    with _run_lock(
        directory,
        shared=True,
        refusal="a single-process pathwatch capture is writing this run. Wait for it to "
        "finish, or pass another --out.",
    ):
        yield


@contextlib.contextmanager
def _run_lock(directory: Path, *, shared: bool, refusal: str) -> Iterator[None]:
    """flock ``directory/.lock`` shared or exclusive without waiting; StoreError ``refusal`` if held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(directory) / LOCK_NAME
    try:
        handle = open(path, "a+b")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise store_error(path, "creating", exc) from exc
    with handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StoreError(f"{directory}: {refusal}") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def claim(run_dir: Path, target: Path, *, wait: bool) -> Iterator[bool]:
    """Claim the right to write ``target`` (a file of the run): yields whether this process holds it.

    The claim is an exclusive advisory lock on ``RUN/.claims/<target relative to RUN>.claim``, so two
    workers -- processes of one ``accelerate launch``, Ray tasks, or two overlapping launches on a
    shared filesystem -- never write one file at the same time, and a killed holder releases it.
    With ``wait`` the call blocks until the holder finishes; otherwise it yields False at once.
    The holder first deletes the temporary files a killed writer of ``target`` left behind. Claim
    files are never deleted (deleting a lock file races with the next claimant); they are empty.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locks, one writer assumed
        yield True
        return
    relative = Path(target).relative_to(run_dir)
    path = Path(run_dir) / CLAIM_DIR / relative.with_name(relative.name + CLAIM_SUFFIX)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise store_error(path, "creating", exc) from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            for tmp in Path(target).parent.glob(f".{Path(target).name}.*{TEMP_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
