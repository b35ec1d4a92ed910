"""``adabn``: source-only training, with the target domain's own batch-norm statistics.

Li, Wang, Shi, Hou and Liu, "Adaptive Batch Normalization for practical domain
adaptation", Pattern Recognition 80, 2018 (AdaBN): a network's batch-norm statistics carry
the domain; replacing the source's by the target's adapts it with no label and no loss.

The segmenter trains on labelled source batches exactly as ``source-only`` does (same loss,
optimiser and schedule); unlabelled target batches only pass through it, through
:meth:`~segshift.methods.base.Method.segment`, with no loss of their own. Under
``train.norm_stats: domain`` (the default) the target passes update a second set of
running statistics that prediction uses for target-domain inputs (the AdaBN of the paper,
estimated during training rather than after it); under ``joint`` both domains share one
pass and the running statistics are their mix.

It is the lambda = 0 control of every alignment method under the same policy: what the
batch statistics alone recover. An alignment method has to beat it, not only
``source-only``, before its alignment loss can be said to help.

Networks: ``seg`` from the init run (``--init``); the target statistics start as a copy of
the init's (source) statistics.
"""

from __future__ import annotations

from typing import Any

from segshift.errors import SegshiftError
from segshift.methods.base import Batch, register
from segshift.methods.source_only import SourceOnly


@register
class AdaBN(SourceOnly):
    name = "adabn"
    paper = "Li et al. Pattern Recognition 2018 (AdaBN); the batch-norm control of every alignment method"
    summary = "Source-only training whose batch-norm layers also learn the target domain's statistics (used for target inputs)."
    uses_target = True

    def build_optimizers(self) -> None:
        if self.norm_stats not in ("domain", "joint"):
            raise SegshiftError(f"adabn adapts batch-norm statistics: train.norm_stats must be domain or joint, got {self.norm_stats!r}")
        super().build_optimizers()

    def train_step(self, batch: Batch, step: int) -> dict[str, Any]:
        src_logits, _ = self.segment(batch.source_image, batch.target_image)  # the target pass only moves statistics
        return self.segmenter_update(src_logits, batch.source_label, batch)
