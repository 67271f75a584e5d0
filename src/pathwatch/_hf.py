"""Shared transformers plumbing: loading models in a dtype on a device, without transformers' own
progress bars. Routing reductions and losses are float32 whatever the model's dtype
(:mod:`pathwatch.capture` casts router outputs and logits before reducing them)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pathwatch.errors import InputError, MissingExtraError


@contextmanager
def no_hf_progress_bars() -> Iterator[None]:
    """Silence transformers' progress bars (weight loading, saving) inside the block, then restore
    them: pathwatch shows its own bars, and ``--no-progress`` must mean none at all."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def check_device(func: str, device: str | None, device_map: str | None) -> str:
    """The torch device a model runs on: ``device``, or CUDA when available, else CPU.

    One-line InputError for a device this machine lacks (``cuda`` without a GPU, ``cuda:3`` on two)
    and for ``device_map="auto"`` without a GPU to spread the model over.
    """
    import torch

    if device_map is not None:
        if not torch.cuda.is_available():
            raise InputError(
                f"{func}: device_map 'auto' spreads a model over GPUs, and torch sees none on this "
                "machine; drop --device-map to run on one device."
            )
        return "cuda"
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise InputError(
                f"{func}: device {device!r} is not on this machine (torch sees {count} CUDA "
                "device(s)); pass --device cpu or an existing cuda:N."
            )
    return device


def _runs(dtype: str, device: str) -> bool:
    """Whether ``device`` runs a matmul and a softmax in ``dtype`` (what a forward pass needs)."""
    import torch

    try:
        x = torch.ones(2, 2, dtype=getattr(torch, dtype), device=device)
        torch.softmax(x @ x, dim=-1)
    except (RuntimeError, TypeError):
        return False
    return True


def config_dtype(checkpoint: Path) -> object:
    """The dtype a checkpoint's config.json states (``dtype``, formerly ``torch_dtype``), or None."""
    from pathwatch._files import read_json

    config = read_json(checkpoint / "config.json", "checkpoint config")
    text = config.get("text_config", config) if isinstance(config, dict) else {}
    return text.get("dtype", text.get("torch_dtype")) if isinstance(text, dict) else None


def resolve_dtype(func: str, dtype: str, own: object, device: str) -> str:
    """The dtype a checkpoint is loaded in: ``dtype``, or for ``"auto"`` the checkpoint's own
    (``own``, its config's ``dtype``) on a GPU and float32 on CPU; InputError if the device
    cannot run it (bfloat16 on a GPU without bf16 support, say)."""
    if dtype == "auto":
        name = str(own).removeprefix("torch.") if own is not None else "float32"
        dtype = name if device != "cpu" and name in ("bfloat16", "float16") else "float32"
    if not _runs(dtype, device):
        raise InputError(
            f"{func}: device {device!r} cannot run dtype {dtype!r} (a matmul in it fails); pass "
            "--dtype float32, or a device that supports it."
        )
    return dtype


def load_causal_lm(
    path: str | os.PathLike,
    *,
    dtype: str,
    device: str,
    device_map: str | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """A causal LM from a checkpoint directory in ``dtype`` on ``device`` (or spread over the GPUs
    with ``device_map="auto"``, extra ``gpu``), in eval mode; one-line InputError if it fails."""
    import torch
    from transformers import AutoModelForCausalLM

    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise MissingExtraError('device_map "auto" needs accelerate: pip install "pathwatch[gpu]".')
    try:
        with no_hf_progress_bars():  # one bar: the caller's own
            model = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=getattr(torch, dtype),
                device_map=device_map,
                trust_remote_code=trust_remote_code,
            )
    except (OSError, ValueError) as exc:
        raise InputError(
            f"Checkpoint {path}: cannot load its weights ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})."
        ) from exc
    return (model if device_map is not None else model.to(device)).eval()
