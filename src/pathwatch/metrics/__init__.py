"""Routing metrics: pathways, pathway distance, consistency / smoothness (SPEC §1), churn."""

from pathwatch.metrics.churn import (
    churn_columns,
    group_churn,
    js_divergence,
    mean_divergence,
    routing_churn,
)
from pathwatch.metrics.consistency import (
    ConsistencyMetrics,
    adjacent_cosine,
    consistency,
    consistency_metrics,
    layer_cosines,
    smoothness,
)
from pathwatch.metrics.distance import (
    UNITS,
    DistanceStats,
    layer_distances,
    mean_pairwise_distance,
    pairwise_distance_stats,
    pathway_distance,
)
from pathwatch.metrics.pathways import LAYER_BOUNDARY, Pathway, Pathways, pathway_string, pathways

__all__ = [
    "LAYER_BOUNDARY",
    "UNITS",
    "ConsistencyMetrics",
    "DistanceStats",
    "Pathway",
    "Pathways",
    "adjacent_cosine",
    "churn_columns",
    "consistency",
    "consistency_metrics",
    "group_churn",
    "js_divergence",
    "layer_cosines",
    "layer_distances",
    "mean_divergence",
    "mean_pairwise_distance",
    "pairwise_distance_stats",
    "pathway_distance",
    "pathway_string",
    "pathways",
    "routing_churn",
    "smoothness",
]
