"""``adaptseg``: output-space adversarial alignment (AdaptSegNet; the "MDA" of Wang et al. 2019).

Tsai, Hung, Schulter, Sohn, Yang and Chandraker, "Learning to Adapt Structured Output Space
for Semantic Segmentation", CVPR 2018 (single-level variant); Wang et al. 2019, section 2.3,
eqs. 5-6 (mask-level discriminator ``D_m``).

A PatchGAN discriminator ``D`` sees softmax maps and learns to tell source (label 1) from
target (label 0) predictions; the segmenter learns to segment the source and to make its
target predictions look like source ones. One training step
(:class:`~segshift.methods.alignment.AdversarialMethod`):

* **Step 1: update the segmenter with D frozen**:
  ``L_seg(source) + w * lambda_adv * BCE(D(softmax(G(x_t))), 1)``.
* **Step 2: update D on detached inputs**: ``0.5 * (BCE(D(p_s), 1) + BCE(D(p_t), 0))`` on
  the step-1 softmax maps, detached, so nothing reaches the segmenter.

``w`` is the alignment schedule (:class:`~segshift.methods.alignment.AlignmentSchedule`):
0 while only D learns (``d_warmup_steps``), a sigmoid ramp over ``ramp_steps``, then 1.
The segmenter sees source and target in one forward pass under ``train.norm_stats=joint``
(:meth:`~segshift.methods.base.Method.segment`).

Warm start (``--init RUN``, a finished ``source-only`` run): the segmenter ``seg`` comes from
the init run; ``D`` starts fresh (hence its warm-up).

Defaults follow AdaptSegNet's single-level setting: ``lambda_adv`` 0.001, D trained with
Adam (lr 1e-4, betas 0.9/0.99) at a constant learning rate (AdaptSegNet also decays D's lr
polynomially; a constant rate is used for every discriminator here, as in Wang et al.).
The segmenter's optimiser, schedule and supervised loss come from ``train`` as for
``source-only``. D's widths are ``method.d_channels`` (the paper's 64/128/256/256/1 by
default; halve them for CPU runs).
"""

from __future__ import annotations

import torch

from segshift.methods.alignment import SCHEDULE_HPARAMS, AdversarialAlignment, AdversarialMethod, Tensors, discriminator_hparams, softmax
from segshift.methods.base import Batch, register
from segshift.methods.hparams import number


@register
class AdaptSeg(AdversarialMethod):
    name = "adaptseg"
    paper = "Tsai et al. CVPR 2018 (AdaptSegNet); wang2019 MDA"
    summary = "Output-space adversarial alignment: a PatchGAN on softmax maps makes target predictions look like source ones."
    hparams = {
        "lambda_adv": number(0.001, "weight of BCE(D(softmax(target)), source label) in the segmenter step"),
        **discriminator_hparams(),
        **SCHEDULE_HPARAMS,
    }

    def build_alignments(self) -> dict[str, AdversarialAlignment]:
        return {"d": self.align("d", {"d": self.discriminator(self.num_classes)}, lambda_g=float(self.hp["lambda_adv"]))}

    def d_input(self, logits: torch.Tensor) -> torch.Tensor:
        """What D sees of a prediction: softmax maps."""
        return softmax(logits)

    def forward_passes(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, tuple[Tensors, Tensors]]]:
        if not self.needs_target():
            (src_logits,) = self.segment(batch.source_image)
            return src_logits, None, {}
        src_logits, tgt_logits = self.segment(batch.source_image, batch.target_image)
        inputs = {n: (self.d_input(src_logits), self.d_input(tgt_logits)) for n in self.alignments}
        return src_logits, tgt_logits, inputs
