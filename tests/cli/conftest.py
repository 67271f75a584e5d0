"""The session's tiny saved checkpoints for the capture CLI tests, built once."""

from __future__ import annotations

import pytest
import torch
from capture_fixtures import (
    Checkpoints,
    diverged,
    sample_rows,
    save_checkpoint,
    save_model,
    write_jsonl,
)

from tiny_models import WORDS, build_tiny_dense_model, build_tiny_model, build_tiny_tokenizer

HUB_REPO = "tiny-org/tiny-olmoe"


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("checkpoints")
    tokenizer = build_tiny_tokenizer()
    series = [
        save_checkpoint(root / f"step-{step}", build_tiny_model("olmoe", seed=seed), tokenizer)
        for seed, step in enumerate((100, 200, 300))
    ]
    return Checkpoints(
        series=series,
        samples=write_jsonl(root / "samples.jsonl", sample_rows(24)),
        dense=save_checkpoint(root / "llama-step-100", build_tiny_dense_model(), tokenizer),
        other_architecture=save_checkpoint(
            root / "four-experts-step-400", build_tiny_model("olmoe", num_experts=4), tokenizer
        ),
        other_tokenizer=save_checkpoint(
            root / "retokenized-step-400",
            build_tiny_model("olmoe"),
            build_tiny_tokenizer(WORDS[::-1]),
        ),
        unnumbered=save_checkpoint(root / "final", build_tiny_model("olmoe"), tokenizer),
        untokenized=save_model(root / "step-500", build_tiny_model("olmoe")),
        diverged=save_checkpoint(
            root / "diverged-step-600", diverged(build_tiny_model("olmoe")), tokenizer
        ),
    )


@pytest.fixture(scope="session")
def hub_repo(checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory):
    """The series as revisions of one hub repo in an on-disk cache: (cache, repo, commits)."""
    from hub_cache import hub_cache

    cache = tmp_path_factory.mktemp("hub") / "hub"
    revisions = {f"step{p.name[5:]}-tokens{i + 1}B": p for i, p in enumerate(checkpoints.series)}
    commits = hub_cache(cache, HUB_REPO, revisions | {"main": checkpoints.series[-1]})
    return cache, HUB_REPO, commits


@pytest.fixture
def offline_hub(hub_repo, monkeypatch: pytest.MonkeyPatch):
    """The hub cache of ``hub_repo`` as this process's cache, offline (no request is made)."""
    from huggingface_hub import constants

    cache = hub_repo[0]
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub_repo
