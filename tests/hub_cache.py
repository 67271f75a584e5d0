"""A Hugging Face hub cache laid out on disk from saved checkpoints, for offline hub tests.

``hub_cache(cache, repo, {revision: directory})`` writes the layout ``huggingface_hub`` itself
writes and reads (``models--owner--name/`` with ``blobs/<hash>``, ``snapshots/<commit>/<file>`` as
relative symlinks to the blobs, ``refs/<revision>`` holding the commit), so ``snapshot_download``,
``scan_cache_dir`` and transformers resolve the revisions with ``HF_HUB_OFFLINE=1`` and no network.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def hub_cache(cache: Path, repo: str, revisions: dict[str, Path]) -> dict[str, str]:
    """Put each saved checkpoint directory into ``cache`` as ``repo@revision``; the commits."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    commits = {}
    for revision, directory in revisions.items():
        commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
        snapshot = storage / "snapshots" / commit
        for file in sorted(p for p in directory.rglob("*") if p.is_file()):
            data = file.read_bytes()
            blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
            if not blob.exists():
                blob.write_bytes(data)
            link = snapshot / file.relative_to(directory)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        ref = storage / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
        commits[revision] = commit
    return commits
