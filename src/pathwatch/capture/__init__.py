"""Capture: run an MoE model over samples and keep per-sample routing and loss.

One forward pass per batch gives both the routing (from hooks on the routers, see
:mod:`pathwatch.capture.hooks`) and the loss (from the same pass's logits). Family differences live
in :mod:`pathwatch.capture.families` only.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pathwatch._validate import check_bool, check_choice, check_int
from pathwatch.capture.families import Routers, find_routers
from pathwatch.capture.hooks import RoutingRecorder
from pathwatch.capture.samples import Encoded, Sample, check_samples, encode_samples, read_samples
from pathwatch.capture.virtual import FAMILY as VIRTUAL_FAMILY
from pathwatch.capture.virtual import VirtualExperts, VirtualRecorder, fit_virtual_experts
from pathwatch.config import WEIGHTS, check_load_options
from pathwatch.errors import InputError, invalid_parameter

__all__ = [
    "Capture",
    "Sample",
    "VirtualExperts",
    "capture",
    "fit_virtual_experts",
    "load_model",
    "read_samples",
]

PADDING_SIDES = ("right", "left")
_LOSS_CHUNK = 2**21  # logits per cross-entropy call (8 MiB of float32)


@dataclass(frozen=True)
class Capture:
    """Per-sample routing and loss of one model over N samples.

    Attributes
    ----------
    mean_weights : float32 array of shape (N, L, E)
        Router probability of each expert, averaged over the sample's real tokens; rows sum to 1.
    loss : float32 array of shape (N,)
        Mean next-token NLL over the sample's scored tokens.
    n_tokens : int64 array of shape (N,)
        Real tokens of the sample after truncation.
    truncated : bool array of shape (N,)
        The sample was cut to ``max_length`` tokens.
    layers : list of int, length L
        True decoder-layer index of each MoE layer.
    router_weights : list of float32 arrays of shape (E, H), length L
        Router weight matrix of each MoE layer.
    family : str
        Model family key of :mod:`pathwatch.capture.families`.
    """

    mean_weights: np.ndarray
    loss: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray
    layers: list[int]
    router_weights: list[np.ndarray]
    family: str


def _check_options(
    tokenizer: object,
    batch_size: object,
    max_length: object,
    padding_side: object,
    progress: object,
    weights: object,
) -> None:
    if tokenizer is not None and not callable(tokenizer):
        raise invalid_parameter("capture", "tokenizer", "None or a tokenizer (callable)", tokenizer)
    check_int("capture", "batch_size", batch_size, low=1)
    check_int("capture", "max_length", max_length, low=2)
    check_choice("capture", "padding_side", padding_side, PADDING_SIDES)
    check_bool("capture", "progress", progress)
    check_choice("capture", "weights", weights, WEIGHTS)


def _pad(
    encoded: Encoded, rows: np.ndarray, padding_side: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded ids, real-token mask and scored-target mask of the samples ``rows``, each (B, S)."""
    lengths = np.array([encoded.ids[i].size for i in rows])
    width = int(lengths.max())
    ids = np.zeros((rows.size, width), np.int64)
    real = np.zeros((rows.size, width), bool)
    scored = np.zeros((rows.size, width), bool)
    for row, (i, n) in enumerate(zip(rows, lengths, strict=True)):
        cols = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[row, cols] = encoded.ids[i]
        real[row, cols] = True
        scored[row, cols] = encoded.scored[i]
    return tuple(torch.from_numpy(a).to(device) for a in (ids, real, scored))  # type: ignore[return-value]


def _token_loss(logits: torch.Tensor, ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL per sample over the scored targets, float32 of shape (B,).

    Cross-entropy runs over chunks of about ``_LOSS_CHUNK`` logits: a full (B * S, V) log-softmax
    buffer is a fresh allocation per batch whose page faults cost more than the arithmetic.
    """
    targets = torch.full_like(ids, -100)  # position t predicts token t + 1; -100 is not scored
    targets[:, :-1] = torch.where(scored[:, 1:], ids[:, 1:], -100)
    flat_logits, flat_targets = logits.flatten(0, 1), targets.flatten()
    step = max(1, _LOSS_CHUNK // flat_logits.shape[-1])
    nll = torch.cat(
        [
            F.cross_entropy(
                flat_logits[i : i + step].float(), flat_targets[i : i + step], reduction="none"
            )
            for i in range(0, flat_targets.numel(), step)
        ]
    )
    return nll.view_as(ids).sum(dim=1) / scored[:, 1:].sum(dim=1).clamp(min=1)


def _forward(
    model: Any,
    recorder: RoutingRecorder | VirtualRecorder,
    ids: torch.Tensor,
    real: torch.Tensor,
    scored: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: per-sample mean router probabilities (B, L, E) and loss (B,)."""
    recorder.expect(real)
    attention_mask = real.long()
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).logits
    loss = _token_loss(logits, ids.to(logits.device), scored.to(logits.device))
    return recorder.means(), loss.to(ids.device)


@dataclass(frozen=True)
class _Routing:
    """What capture records from: a recorder (not yet entered) and the facts a Capture stores."""

    recorder: RoutingRecorder | VirtualRecorder
    layers: list[int]
    n_experts: int
    router_weights: list[np.ndarray]
    family: str


def _routing(
    model: Any, virtual_experts: VirtualExperts | int | None, weights: str = "softmax"
) -> _Routing:
    """The model's MoE routers, or its virtual experts (fitted here when given as K)."""
    if virtual_experts is None:
        routers: Routers = find_routers(model)
        return _Routing(
            RoutingRecorder(routers, weights=weights),
            list(routers.layers),
            routers.n_experts,
            routers.weights(),
            routers.family.key,
        )
    experts = (
        virtual_experts
        if isinstance(virtual_experts, VirtualExperts)
        else fit_virtual_experts(model, virtual_experts)
    )
    return _Routing(
        VirtualRecorder(model, experts),  # checks that the clusters fit the model
        list(experts.layers),
        experts.n_experts,
        experts.router_weights(model),
        VIRTUAL_FAMILY,
    )


def load_model(
    model: Any,
    tokenizer: Any = None,
    *,
    dtype: str = "auto",
    device: str | None = None,
    device_map: str | None = None,
    trust_remote_code: bool = False,
    func: str = "capture",
) -> tuple[Any, Any]:
    """``model`` and ``tokenizer`` as given when the model is in memory; a checkpoint (a directory
    or ``REPO@REVISION``) loaded in ``dtype`` on ``device`` (see :mod:`pathwatch._hf`), with its
    saved tokenizer when ``tokenizer`` is None. Load options are for checkpoints only: a model in
    memory is used as it is (cast it yourself)."""
    check_load_options(func, dtype, device, device_map, trust_remote_code)
    if not isinstance(model, str | os.PathLike):
        if (dtype, device, device_map, trust_remote_code) != ("auto", None, None, False):
            raise invalid_parameter(
                func,
                "dtype",
                "'auto' with device, device_map None for a model in memory (they say how a "
                "checkpoint is loaded: pass its directory or REPO@REVISION, or cast the model "
                "with model.to(...))",
                dtype,
            )
        return model, tokenizer
    from pathwatch._hf import check_device, config_dtype, load_causal_lm, resolve_dtype
    from pathwatch.checkpoints import checkpoint_directory

    path = checkpoint_directory(model, func=func)
    where = check_device(func, device, device_map)
    loaded = load_causal_lm(
        path,
        dtype=resolve_dtype(func, dtype, config_dtype(path), where),
        device=where,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
    )
    if tokenizer is None and any(path.glob("tokenizer*")):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return loaded, tokenizer


def capture(
    model: Any,
    samples: Sequence[Any],
    tokenizer: Any = None,
    *,
    batch_size: int = 16,
    max_length: int = 512,
    padding_side: str = "right",
    progress: bool = False,
    virtual_experts: VirtualExperts | int | None = None,
    weights: str = "softmax",
    dtype: str = "auto",
    device: str | None = None,
    device_map: str | None = None,
    trust_remote_code: bool = False,
) -> Capture:
    """Run ``model`` over ``samples`` and keep each sample's mean routing and loss.

    Samples are sorted by length into batches to reduce padding; results come back in the original
    order. The forward pass runs in eval mode under ``torch.inference_mode`` (the model's mode is
    restored afterwards); left padding passes ``position_ids`` so that results match unbatched ones.

    Parameters
    ----------
    model : transformers.PreTrainedModel, or a checkpoint directory or ``REPO@REVISION``
        An MoE causal LM (see :data:`pathwatch.capture.families.SUPPORTED`); a checkpoint is
        loaded in ``dtype`` on ``device`` (with its saved tokenizer when ``tokenizer`` is None).
    samples : sequence
        Strings, sequences of token ids, mappings with ``text`` or ``input_ids`` (and optional
        ``id``, ``domain``, ``prompt`` / ``loss_mask``), or :class:`Sample` from :func:`read_samples`.
    tokenizer : transformers tokenizer, optional
        Needed when any sample is text.
    batch_size : int, default 16
        Samples per forward pass.
    max_length : int, default 512
        Longer samples are cut (counted in ``Capture.truncated``, with a warning).
    padding_side : {"right", "left"}, default "right"
    progress : bool, default False
        Show a tqdm bar (samples/s).
    virtual_experts : VirtualExperts or int, optional
        Capture a *dense* model through virtual experts (an extension beyond the paper, see
        :mod:`pathwatch.capture.virtual`): clusters from :func:`fit_virtual_experts`, or K to fit
        them on this model. Pass the same clusters for every checkpoint of a series.
    weights : {"softmax", "topk"}, default "softmax"
        Router weighting averaged over a sample's tokens: every expert's probability (SPEC), or
        per token only the top-k experts' probabilities renormalized to sum to 1 (MoE routers only).
    dtype : {"auto", "bfloat16", "float16", "float32"}, default "auto"
        Dtype a checkpoint is loaded in ("auto": its own on a GPU, float32 on CPU). Whatever the
        model's dtype, router outputs and logits are cast to float32 before they are reduced, so
        ``mean_weights`` and ``loss`` are float32 reductions (bfloat16 on CPU: within 0.02 of
        float32 routing and 1% of its loss on a tiny OLMoE, ``tests/cli/test_hub_capture.py``).
    device : {"cpu", "cuda", "cuda:N"}, optional
        Where a checkpoint is loaded; default CUDA when available, else CPU.
    device_map : {"auto"}, optional
        Spread a checkpoint over all GPUs (extra ``gpu``).
    trust_remote_code : bool, default False
        Let transformers run a checkpoint's own modelling code.

    Returns
    -------
    Capture
        ``mean_weights`` (N, L, E), ``loss`` (N,), ``n_tokens`` (N,), ``truncated`` (N,), ``layers``,
        ``router_weights``, ``family``.

    Raises
    ------
    UnsupportedModelError
        The model has no recordable MoE router (and no ``virtual_experts``), or the virtual experts
        do not fit its MLPs.
    InputError
        A bad sample or option, or a non-finite loss or routing.

    Examples
    --------
    >>> cap = capture(model, [[1, 5, 7, 2], "some text"], tokenizer)  # doctest: +SKIP
    >>> cap.mean_weights.shape  # doctest: +SKIP
    (2, 16, 64)
    """
    _check_options(tokenizer, batch_size, max_length, padding_side, progress, weights)
    if weights != "softmax" and virtual_experts is not None:
        raise invalid_parameter(
            "capture", "weights", "'softmax' with virtual_experts (they have no top-k)", weights
        )
    if isinstance(samples, (str, bytes, dict)) or not isinstance(samples, Sequence):
        raise invalid_parameter("capture", "samples", "a list of samples", type(samples).__name__)
    checked: list[Sample] = check_samples((s, f"samples[{i}]") for i, s in enumerate(samples))
    model, tokenizer = load_model(
        model,
        tokenizer,
        dtype=dtype,
        device=device,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
    )
    routing = _routing(model, virtual_experts, weights)
    encoded = encode_samples(
        checked,
        tokenizer,
        max_length=max_length,
        vocab_size=model.get_input_embeddings().num_embeddings,
    )
    if encoded.truncated.any():
        warnings.warn(
            f"capture: {int(encoded.truncated.sum())} of {len(checked)} samples were cut to "
            f"max_length={max_length} tokens (see Capture.truncated).",
            stacklevel=2,
        )
    n_tokens = np.array([ids.size for ids in encoded.ids], np.int64)
    order = np.argsort(-n_tokens, kind="stable")
    device = model.get_input_embeddings().weight.device
    n = len(checked)
    mean_weights = np.empty((n, len(routing.layers), routing.n_experts), np.float32)
    loss = np.empty(n, np.float32)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with (
            torch.inference_mode(),
            routing.recorder as recorder,
            tqdm(total=n, unit="sample", desc="capture", disable=not progress) as bar,
        ):
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                means, batch_loss = _forward(
                    model, recorder, *_pad(encoded, rows, padding_side, device)
                )
                mean_weights[rows] = means.cpu().numpy()
                loss[rows] = batch_loss.cpu().numpy()
                bar.update(rows.size)
    finally:
        for module, training in modes:
            module.training = training
    bad = ~(np.isfinite(loss) & np.isfinite(mean_weights).all(axis=(1, 2)))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"capture: {int(bad.sum())} samples got a non-finite loss or routing (first: samples[{first}], "
            f"id {checked[first].id!r}); check the checkpoint's weights for NaN or load it in float32."
        )
    return Capture(
        mean_weights=mean_weights,
        loss=loss,
        n_tokens=n_tokens,
        truncated=encoded.truncated,
        layers=routing.layers,
        router_weights=routing.router_weights,
        family=routing.family,
    )


class _CallableModule(ModuleType):
    """This package, callable as :func:`capture`.

    ``pathwatch.capture`` names both this package and the function. Importing any submodule binds
    the package to ``pathwatch.capture``, so the package forwards calls: ``pw.capture(model, samples)``
    works in every import order.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Capture:
        return capture(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
