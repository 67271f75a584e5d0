"""Tiny randomly initialised causal LMs of every known MoE family, for fast CPU tests.

Shared test helper: ``build_tiny_model("olmoe")`` gives a float32 model in eval mode with hidden size
64, 4 decoder layers, 4-8 experts and a 128-token vocabulary. Keyword overrides go to the config,
e.g. ``build_tiny_model("qwen2_moe", mlp_only_layers=[0, 2])``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

VOCAB = 128

_COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# per family: the config fields that make it small and routed (top-k, experts, MoE layer sizes)
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "olmoe": {
        "intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
    },
    "mixtral": {
        "intermediate_size": 32,
        "num_local_experts": 6,
        "num_experts_per_tok": 2,
    },
    "qwen2_moe": {
        "intermediate_size": 64,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
    },
    "qwen3_moe": {
        "head_dim": 16,
        "intermediate_size": 64,
        "moe_intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
    },
    "deepseek_v3": {
        "intermediate_size": 64,
        "moe_intermediate_size": 32,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "n_group": 2,
        "topk_group": 1,
        "first_k_dense_replace": 1,
        "num_key_value_heads": 4,
        "kv_lora_rank": 16,
        "q_lora_rank": 32,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "v_head_dim": 16,
    },
    "deepseek_v2": {
        "intermediate_size": 64,
        "moe_intermediate_size": 32,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "num_key_value_heads": 4,
        "kv_lora_rank": 16,
        "q_lora_rank": 32,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "v_head_dim": 16,
    },
    "glm4_moe": {
        "intermediate_size": 64,
        "moe_intermediate_size": 32,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
    },
    "dots1": {
        "intermediate_size": 64,
        "moe_intermediate_size": 32,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 2,
    },
}

FAMILIES: tuple[str, ...] = tuple(TINY_CONFIGS)


def build_tiny_model(family: str, *, seed: int = 0, **overrides: Any) -> PreTrainedModel:
    """A tiny float32 causal LM of ``family`` (a key of ``TINY_CONFIGS``), in eval mode.

    Router weights are drawn with a larger scale than the default initialisation so that routing
    is far from uniform and tests can tell experts apart.
    """
    if family not in TINY_CONFIGS:
        raise ValueError(f"Unknown tiny model family {family!r}; valid: {', '.join(FAMILIES)}.")
    config = AutoConfig.for_model(family, **{**_COMMON, **TINY_CONFIGS[family], **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gate.weight") and param.ndim == 2 and param.shape[0] > 1:
                param.normal_(0.0, 0.5)
    return model.eval()


def build_tiny_dense_model(*, seed: int = 0) -> PreTrainedModel:
    """A tiny dense Llama (no router), in eval mode."""
    torch.manual_seed(seed)
    config = LlamaConfig(**_COMMON, intermediate_size=64)
    return LlamaForCausalLM(config).eval()


SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")  # ids 0..3, matching the tiny configs
WORDS = (*(str(i) for i in range(100)), "+", "-", "=", "the", "cat", "sat", "on", "mat")


def build_tiny_tokenizer(words: tuple[str, ...] = WORDS) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over ``words`` (after 4 special tokens) that prepends [BOS]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    if len(vocab) > VOCAB:
        raise ValueError(
            f"{len(vocab)} tokens do not fit the tiny models' {VOCAB}-token vocabulary"
        )
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", special_tokens=[("[BOS]", vocab["[BOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )
