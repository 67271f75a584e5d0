"""The one table of differences between MoE model families.

Routers are found by module class through ``type(model)._can_record_outputs["router_logits"]``, the
declaration ``transformers`` itself uses to record router outputs; each router is mapped to the index
of the decoder layer (``model.get_decoder().layers[i]``) that contains it. How a router's output
becomes a probability over all E experts is declared here, per router class, as data:

- ``softmax``: softmax of the logits (OLMoE, Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2, and any
  unknown router class);
- ``normalized_sigmoid``: sigmoid gate scores normalized to sum to 1 per token (DeepSeek-V3 and its
  relatives). Their correction bias and group-limited top-k only select experts; they are not part of
  the score.

Some ``transformers`` releases returned probabilities in place of logits; :func:`is_probability`
detects that and the ``identity`` scoring then keeps them as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pathwatch.errors import UnsupportedModelError


def _softmax(x: torch.Tensor) -> torch.Tensor:
    # exp of the shifted logits over their sum: on CPU ~3x faster than torch.softmax for the narrow
    # rows (few experts) of routers, equal to it within float32 rounding
    x = x.float()
    probs = (x - x.amax(dim=-1, keepdim=True)).exp_()
    return probs.div_(probs.sum(dim=-1, keepdim=True))


def _normalized_sigmoid(x: torch.Tensor) -> torch.Tensor:
    scores = torch.sigmoid(x.float())
    return scores / scores.sum(dim=-1, keepdim=True)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x.float()


#: scoring name -> router output (..., E) to float32 probabilities (..., E)
SCORINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": _softmax,
    "normalized_sigmoid": _normalized_sigmoid,
    "identity": _identity,
}


@dataclass(frozen=True)
class Family:
    """How one MoE family routes: the facts capture needs, read from the model, never hard-coded.

    Attributes
    ----------
    key : str
        Family name stored in captures and manifests.
    router_class : str
        ``__name__`` of the router module class (the ``router_logits`` recorder target).
    scoring : str
        Key of :data:`SCORINGS` that turns the router output into probabilities over all experts.
    n_experts_attrs : tuple of str
        Config attributes that may hold the number of routed experts (first present wins).
    top_k_attr : str
        Config attribute that holds the number of experts chosen per token.
    weight_attr : str
        Attribute of the router module that holds its (E, H) weight matrix.
    """

    key: str
    router_class: str
    scoring: str
    n_experts_attrs: tuple[str, ...]
    top_k_attr: str = "num_experts_per_tok"
    weight_attr: str = "weight"


#: router class name -> family; the known families
FAMILIES: dict[str, Family] = {
    family.router_class: family
    for family in (
        Family("olmoe", "OlmoeTopKRouter", "softmax", ("num_experts",)),
        Family("mixtral", "MixtralTopKRouter", "softmax", ("num_local_experts",)),
        Family("qwen2_moe", "Qwen2MoeTopKRouter", "softmax", ("num_experts",)),
        Family("qwen3_moe", "Qwen3MoeTopKRouter", "softmax", ("num_experts",)),
        Family("deepseek_v2", "DeepseekV2TopkRouter", "softmax", ("n_routed_experts",)),
        Family("deepseek_v3", "DeepseekV3TopkRouter", "normalized_sigmoid", ("n_routed_experts",)),
        Family("glm4_moe", "Glm4MoeTopkRouter", "normalized_sigmoid", ("n_routed_experts",)),
        Family("dots1", "Dots1TopkRouter", "normalized_sigmoid", ("n_routed_experts",)),
    )
}

#: any other router class that transformers records as ``router_logits``: assumed softmax of logits
GENERIC = Family(
    "generic",
    "",
    "softmax",
    ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"),
)

SUPPORTED = (
    f"{', '.join(f.key for f in FAMILIES.values())}, and any model whose transformers class records "
    "'router_logits' in _can_record_outputs"
)


@dataclass(frozen=True)
class Routers:
    """The MoE routers of one model, in decoder-layer order.

    Attributes
    ----------
    family : Family
        Row of the family table that describes the routers.
    modules : tuple of nn.Module
        One router module per MoE layer.
    layers : tuple of int
        True decoder-layer index of each router (dense layers are skipped).
    output_index : int
        Index of the router logits in the router's output tuple.
    model_type : str
        ``config.model_type`` of the model.
    n_layers : int
        Number of decoder layers, dense ones included.
    n_experts : int
        Number of routed experts E.
    top_k : int or None
        Experts chosen per token, from the config (None when the config does not say).
    """

    family: Family
    modules: tuple[nn.Module, ...]
    layers: tuple[int, ...]
    output_index: int
    model_type: str
    n_layers: int
    n_experts: int
    top_k: int | None

    def weights(self) -> list[np.ndarray]:
        """Router weight matrices, one float32 array of shape (E, H) per MoE layer.

        Copies: a Capture kept while training goes on must not change with the live weights.
        """
        return [
            getattr(module, self.family.weight_attr).detach().float().cpu().numpy().copy()
            for module in self.modules
        ]

    def summary(self) -> dict[str, Any]:
        """The manifest's ``model`` entry: family, model_type, n_layers, moe_layers, n_experts, top_k."""
        return {
            "family": self.family.key,
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "moe_layers": list(self.layers),
            "n_experts": self.n_experts,
            "top_k": self.top_k,
        }


def is_probability(scores: torch.Tensor, *, atol: float = 1e-4) -> bool:
    """Whether router outputs of shape (..., E) are already probabilities (non-negative, rows sum to 1)."""
    scores = scores.float()
    if scores.numel() == 0:
        return False
    sums = scores.sum(dim=-1)
    return bool((scores.min() >= 0) & ((sums - 1).abs().max() <= atol))


def _router_recorder(model: nn.Module) -> tuple[type, int]:
    """Router module class and output index declared by the model's ``_can_record_outputs``."""
    recorders = getattr(type(model), "_can_record_outputs", None) or {}
    spec = recorders.get("router_logits")
    if isinstance(spec, list) and len(spec) == 1:
        spec = spec[0]
    if isinstance(spec, type):  # a bare class records output[1], as transformers does
        return spec, 1
    target = getattr(spec, "target_class", None)
    if isinstance(target, type):
        return target, int(spec.index)
    raise UnsupportedModelError(
        f"{type(model).__name__} has no MoE router that pathwatch can record. Supported: {SUPPORTED}. "
        "Dense models have no router: capture them through virtual experts (an extension beyond "
        "the paper), e.g. capture(model, samples, virtual_experts=8) or `pathwatch capture "
        "--virtual-experts 8`."
    )


def _config_int(config: Any, names: tuple[str, ...]) -> int | None:
    """First of the config attributes ``names`` that is set, as an int."""
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def find_routers(model: nn.Module) -> Routers:
    """Find the routers of ``model`` and the true decoder-layer index of each.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM whose class records ``router_logits``.

    Returns
    -------
    Routers

    Raises
    ------
    UnsupportedModelError
        The model has no recordable router, its layers cannot be found, or its router weights do not
        agree with its config.
    """
    router_class, output_index = _router_recorder(model)
    family = FAMILIES.get(router_class.__name__, GENERIC)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedModelError(
            f"{type(model).__name__}: cannot find the decoder layers (model.get_decoder().layers) that "
            f"hold its {router_class.__name__} routers. Supported: {SUPPORTED}."
        )
    found = [
        (index, module)
        for index, layer in enumerate(layers)
        for module in layer.modules()
        if isinstance(module, router_class)
    ]
    n_total = sum(isinstance(module, router_class) for module in model.modules())
    if not found or len(found) != n_total or len({i for i, _ in found}) != len(found):
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected one {router_class.__name__} per MoE decoder layer, found "
            f"{len(found)} inside {len(layers)} decoder layers and {n_total} in the model. "
            f"Supported: {SUPPORTED}."
        )
    config = model.config.get_text_config()
    weights = [getattr(module, family.weight_attr, None) for _, module in found]
    shapes = {tuple(w.shape) if isinstance(w, torch.Tensor) else None for w in weights}
    shape = shapes.pop() if len(shapes) == 1 else None
    if shape is None or len(shape) != 2:
        raise UnsupportedModelError(
            f"{type(model).__name__}: the {router_class.__name__} routers need one (E, H) weight matrix "
            f"'{family.weight_attr}' of the same shape in every layer; got shapes {sorted(map(str, shapes))}."
        )
    n_experts = _config_int(config, family.n_experts_attrs)
    if n_experts is not None and n_experts != shape[0]:
        raise UnsupportedModelError(
            f"{type(model).__name__}: config says {n_experts} experts but the router weight has "
            f"{shape[0]} rows; fix the checkpoint's config.json."
        )
    return Routers(
        family=family,
        modules=tuple(module for _, module in found),
        layers=tuple(index for index, _ in found),
        output_index=output_index,
        model_type=str(getattr(config, "model_type", "")),
        n_layers=len(layers),
        n_experts=shape[0],
        top_k=_config_int(config, (family.top_k_attr,)),
    )
