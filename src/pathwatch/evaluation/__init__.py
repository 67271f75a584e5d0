"""Ground truth in, validation out: accuracy files and the paper's Table 1 with statistics."""

from pathwatch.evaluation.accuracy import (
    AccuracyTables,
    correctness_matrix,
    generalization_table,
    read_accuracy,
)
from pathwatch.evaluation.correlate import (
    NEEDS,
    correlation_stats,
    correlation_table,
    moving_average,
    rise_start,
)

__all__ = [
    "NEEDS",
    "AccuracyTables",
    "correctness_matrix",
    "correlation_stats",
    "correlation_table",
    "generalization_table",
    "moving_average",
    "read_accuracy",
    "rise_start",
]
