"""Memorization and generalization onsets, and the pairing of their groups (SPEC §1)."""

from pathwatch.dynamics.embeddings import Embeddings, embed_texts, minilm_available
from pathwatch.dynamics.matching import group_similarity, match_groups
from pathwatch.dynamics.onsets import (
    NEVER,
    EpsilonChoice,
    auto_epsilon,
    generalization_onset,
    group_labels,
    memorization_onset,
    memorization_table,
    scaled_delta,
)

__all__ = [
    "NEVER",
    "Embeddings",
    "EpsilonChoice",
    "auto_epsilon",
    "embed_texts",
    "generalization_onset",
    "group_labels",
    "group_similarity",
    "match_groups",
    "memorization_onset",
    "memorization_table",
    "minilm_available",
    "scaled_delta",
]
