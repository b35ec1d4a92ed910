"""Metrics: per-case overlap and surface distances in mm, and folder evaluation.

* :mod:`segshift.metrics.surface`: :func:`case_metrics` (Dice, Jaccard, ASSD, HD95 per
  structure, matching MONAI's definitions, with a documented policy for empty masks) and
  :func:`summarise` (per-structure and overall mean/std with NaN counts).
* :mod:`segshift.metrics.evaluate`: :func:`evaluate_folders` matches prediction files to
  reference label files by case name, and :func:`write_evaluation` writes ``per_case.csv``
  and ``summary.json``.
"""

from segshift.metrics.evaluate import EvaluationResult, evaluate_folders, format_table, write_evaluation
from segshift.metrics.surface import (
    EMPTY_DISTANCE_POLICIES,
    METRICS,
    STATUSES,
    binary_metrics,
    case_metrics,
    summarise,
    surface_distances,
    volume_diagonal,
)

__all__ = [
    "EMPTY_DISTANCE_POLICIES",
    "METRICS",
    "STATUSES",
    "EvaluationResult",
    "binary_metrics",
    "case_metrics",
    "evaluate_folders",
    "format_table",
    "summarise",
    "surface_distances",
    "volume_diagonal",
    "write_evaluation",
]
