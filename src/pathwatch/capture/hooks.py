"""Forward hooks on MoE routers that reduce routing to one mean probability vector per sample and layer.

The reduction runs on the model's device, so no per-token tensor leaves it: each hook keeps its
router's output, and after the forward pass the per-token probabilities over all E experts of the
batch's real tokens (padding is never selected) of all routers are computed and averaged per sample
at once. Hooks are always removed, even on exceptions.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pathwatch.capture.families import SCORINGS, Routers, is_probability
from pathwatch.config import WEIGHTS
from pathwatch.errors import UnsupportedModelError, unknown_name


class MaskedMeanRecorder:
    """Base of the recorders: one forward hook per layer keeps a per-token vector, and
    :meth:`means` averages all layers' vectors over each sample's real tokens at once (padding
    never selected), on the model's device.

    Subclasses register their hooks in :meth:`_register`, call :meth:`_record` from them, and may
    turn the kept vectors into the averaged ones in :meth:`_values`. One reduction per forward pass,
    not per layer: per-call costs of small tensor operations dominate on small models.
    """

    #: what is hooked, for the error when a layer did not run
    _hooked = "modules"

    def __init__(self, layers: list[int]) -> None:
        self._layers = list(layers)  # true decoder-layer index of each hooked layer
        self._handles: list[RemovableHandle] = []
        self._tokens: list[torch.Tensor | None] = [None] * len(self._layers)
        self._mask: torch.Tensor | None = None

    def _register(self) -> None:
        """Append one forward hook handle per layer to ``self._handles``."""
        raise NotImplementedError

    def __enter__(self) -> MaskedMeanRecorder:
        try:
            self._register()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def expect(self, mask: torch.Tensor) -> None:
        """Set the (B, S) boolean mask of real tokens for the next forward pass."""
        self._mask = mask
        self._tokens = [None] * len(self._tokens)

    def _record(self, layer: int, values: torch.Tensor) -> None:
        """Keep ``values`` of ``layer`` (one X-vector per token, B * S in (B, S) order) for :meth:`means`."""
        if self._mask is None:
            raise RuntimeError(
                f"{type(self).__name__}.expect(mask) must be called before the forward"
            )
        width = values.shape[-1]
        if values.numel() != self._mask.numel() * width:
            raise RuntimeError(
                f"a hooked layer saw {values.numel() // max(width, 1)} tokens, but expect() was "
                f"given a mask of {self._mask.numel()}"
            )
        # a no-op unless the model is split over devices (device_map)
        self._tokens[layer] = values.reshape(-1, width).to(self._mask.device)

    def _values(self, tokens: torch.Tensor) -> torch.Tensor:
        """The vectors averaged (L, n_real, X), float32, from the kept ones at real tokens."""
        return tokens.float()

    def means(self) -> torch.Tensor:
        """Per-sample means of the last forward, of shape (B, L, X), float32."""
        missing = [self._layers[i] for i, t in enumerate(self._tokens) if t is None]
        if missing:
            raise RuntimeError(
                f"{self._hooked} of decoder layers {missing} did not run in the forward pass"
            )
        mask = self._mask  # set: the hooks ran
        real = mask.flatten().nonzero().squeeze(1)  # type: ignore[union-attr]
        values = self._values(torch.stack(self._tokens).index_select(1, real))  # type: ignore[arg-type]
        sums = values.new_zeros(len(self._tokens), mask.shape[0], values.shape[-1])  # type: ignore[union-attr]
        sums.index_add_(1, real // mask.shape[1], values)  # type: ignore[union-attr]
        counts = mask.sum(dim=1).clamp(min=1)[:, None]  # type: ignore[union-attr]
        return (sums / counts).transpose(0, 1)


class RoutingRecorder(MaskedMeanRecorder):
    """Context manager that hooks every router of a model and averages its probabilities per sample.

    Before each forward pass, call :meth:`expect` with the batch's attention mask; after it,
    :meth:`means` returns the (B, L, E) per-sample mean router probabilities on the model's device.

    Parameters
    ----------
    routers : Routers
        From :func:`pathwatch.capture.families.find_routers`.
    weights : {"softmax", "topk"}, default "softmax"
        ``"softmax"``: the probability of every expert (SPEC); ``"topk"``: per token only the
        ``routers.top_k`` largest probabilities, renormalized to sum to 1, zero elsewhere.

    Examples
    --------
    >>> with RoutingRecorder(routers) as recorder:  # doctest: +SKIP
    ...     recorder.expect(attention_mask.bool())
    ...     model(input_ids, attention_mask=attention_mask)
    ...     means = recorder.means()
    """

    def __init__(self, routers: Routers, *, weights: str = "softmax") -> None:
        if weights not in WEIGHTS:
            raise unknown_name("weights", weights, WEIGHTS)
        if weights == "topk" and routers.top_k is None:
            raise UnsupportedModelError(
                f"weights='topk' needs the model's top-k, but its config has no "
                f"{routers.family.top_k_attr!r}; use weights='softmax'."
            )
        super().__init__(list(routers.layers))
        self._routers = routers
        self._top_k = routers.top_k if weights == "topk" else None
        # per layer: scoring name, chosen on the first batch (the family's, or "identity" when the
        # router already returns probabilities)
        self._scorings: list[str | None] = [None] * len(routers.modules)

    _hooked = "routers"

    def _register(self) -> None:
        for layer, module in enumerate(self._routers.modules):
            self._handles.append(module.register_forward_hook(self._hook(layer)))

    @property
    def scorings(self) -> list[str | None]:
        """Scoring used by each layer's router (None before its first forward)."""
        return list(self._scorings)

    def _hook(self, layer: int) -> Any:
        index = self._routers.output_index

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._record(layer, output[index] if isinstance(output, (tuple, list)) else output)
            if self._scorings[layer] is None:  # the first batch's real tokens decide
                raw = is_probability(self._tokens[layer][self._mask.flatten()])  # type: ignore[index,union-attr]
                self._scorings[layer] = "identity" if raw else self._routers.family.scoring

        return hook

    def _values(self, tokens: torch.Tensor) -> torch.Tensor:
        if len(set(self._scorings)) == 1:
            probs = SCORINGS[self._scorings[0]](tokens)  # type: ignore[index]
        else:
            probs = torch.stack(
                [SCORINGS[s](t) for s, t in zip(self._scorings, tokens, strict=True)]
            )  # type: ignore[index]
        if self._top_k is not None:
            top, idx = probs.topk(self._top_k, dim=-1)
            probs = torch.zeros_like(probs).scatter(-1, idx, top / top.sum(-1, keepdim=True))
        return probs
