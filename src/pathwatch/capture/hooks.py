"""Forward hooks on MoE routers that reduce routing to one mean probability vector per sample and layer.

The reduction runs on the model's device inside the hook, so no per-token tensor leaves it: for each
router, the per-token probabilities over all E experts of the batch's real tokens (padding is
never selected) are averaged per sample by one matrix product. Hooks are always removed, even on exceptions.
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
    """Base of the recorders: one forward hook per layer, each reducing a per-token vector to its
    mean over the sample's real tokens (padding masked), kept on the model's device.

    Subclasses register their hooks in :meth:`_register` and call :meth:`_record` from them.
    """

    #: what is hooked, for the error when a layer did not run
    _hooked = "modules"

    def __init__(self, layers: list[int]) -> None:
        self._layers = list(layers)  # true decoder-layer index of each hooked layer
        self._handles: list[RemovableHandle] = []
        self._means: list[torch.Tensor | None] = [None] * len(self._layers)
        self._mask: torch.Tensor | None = None
        self._real = self._sample = self._counts = torch.empty(0)

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
        # the flat (B * S) index of each real token and its sample: hooks reduce only real tokens,
        # so padding (which may hold NaN) never enters a sum
        self._real = mask.flatten().nonzero().squeeze(1)
        self._sample = self._real // mask.shape[1]
        self._counts = mask.sum(dim=1, keepdim=True).clamp(min=1).float()
        self._means = [None] * len(self._means)

    def means(self) -> torch.Tensor:
        """Per-sample means of the last forward, of shape (B, L, X), float32."""
        missing = [self._layers[i] for i, m in enumerate(self._means) if m is None]
        if missing:
            raise RuntimeError(
                f"{self._hooked} of decoder layers {missing} did not run in the forward pass"
            )
        device = self._mask.device  # type: ignore[union-attr]
        return torch.stack([m.to(device) for m in self._means], dim=1)  # type: ignore[union-attr]

    def _real_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows of ``x`` (B * S tokens, in (B, S) order, by X) at real tokens (n_real, X), the
        sample of each (n_real,) and the real tokens per sample (B, 1), on ``x``'s device."""
        if self._mask is None:
            raise RuntimeError(
                f"{type(self).__name__}.expect(mask) must be called before the forward"
            )
        if x.numel() != self._mask.numel() * x.shape[-1]:
            raise RuntimeError(
                f"a hooked layer saw {x.numel() // max(x.shape[-1], 1)} tokens, but expect() was "
                f"given a mask of {self._mask.numel()}"
            )
        device = x.device  # moves are no-ops unless the model is split over devices (device_map)
        rows = x.reshape(-1, x.shape[-1]).index_select(0, self._real.to(device))
        return rows, self._sample.to(device), self._counts.to(device)

    def _record(
        self, layer: int, values: torch.Tensor, sample: torch.Tensor, counts: torch.Tensor
    ) -> None:
        """Store the per-sample mean of ``values`` (n_real, X), one row per real token, for ``layer``."""
        sums = values.new_zeros(counts.shape[0], values.shape[-1]).index_add_(0, sample, values)
        self._means[layer] = sums.div_(counts)


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
        # per layer: scoring name, chosen on the first call (the family's, or "identity" when the
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
            scores = output[index] if isinstance(output, (tuple, list)) else output
            scores, sample, counts = self._real_tokens(scores)
            if self._scorings[layer] is None:
                raw = is_probability(scores)
                self._scorings[layer] = "identity" if raw else self._routers.family.scoring
            probs = SCORINGS[self._scorings[layer]](scores)
            if self._top_k is not None:
                top, idx = probs.topk(self._top_k, dim=-1)
                probs = torch.zeros_like(probs).scatter(-1, idx, top / top.sum(-1, keepdim=True))
            self._record(layer, probs, sample, counts)

        return hook
