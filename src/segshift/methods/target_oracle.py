"""``target-oracle``: supervised training on *labelled target* data: an upper bound.

Uses target labels by design, so it is an oracle: every output of such a run is labelled
``oracle``. It trains on the target domain's labelled training cases and selects its model
on held-out labelled target cases (never on the cases it is evaluated on, if the user keeps
them apart with ``data.val_cases``/``data.train_cases``).

Warm start (``--init RUN``): the segmenter ``seg`` comes from the init run (e.g. a
``source-only`` run, for a fine-tuned upper bound).
"""

from __future__ import annotations

from segshift.methods.base import register
from segshift.methods.source_only import SourceOnly


@register
class TargetOracle(SourceOnly):
    name = "target-oracle"
    paper = 'upper bound of wang2019, li2021 ("supervised on target")'
    summary = "ORACLE: train on labelled target data (upper bound; uses target labels)."
    uses_target_labels = True
