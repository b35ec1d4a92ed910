"""``advent``: alignment in entropy space (ADVENT; the "entropy space alignment" of AttENT).

Vu, Jain, Bucher, Cord and Pérez, "ADVENT: Adversarial Entropy Minimization for Domain
Adaptation in Semantic Segmentation", CVPR 2019; Li et al. 2021 (AttENT), "Adversarial
Feature Alignment in the Entropy Space": ``L_dis = L_D(E_xs, 1) + L_D(E_xt, 0)``,
``L_adv = L_D(E_xt, 1)``.

Two modes (``method.mode``):

* ``adversarial`` (AdvEnt, default): a PatchGAN ``D`` sees the *weighted self-information
  maps* ``I_c = -p_c log p_c / log C`` (``C`` channels, one per class; their channel sum is
  the normalised entropy map of AttENT), as ADVENT's discriminator does. Step 1: update the
  segmenter with D frozen, ``L_seg(source) + w * lambda_adv * BCE(D(I_t), 1)``; step 2:
  update D on detached ``I_s`` (label 1) and ``I_t`` (label 0). ``lambda_adv`` 0.001, D
  Adam lr 1e-4, betas 0.9/0.99 (ADVENT's settings).
* ``minent`` (MinEnt): no discriminator; the target predictions' mean normalised entropy is
  minimised directly, ``L_seg(source) + w * lambda_ent * mean(E_t)``, ``lambda_ent`` 0.001.

``w`` is the alignment schedule (:class:`~segshift.methods.alignment.AlignmentSchedule`; in
``minent`` mode there is no D to warm up, so the first ``d_warmup_steps`` steps are
source-only). The segmenter's optimiser, schedule and supervised loss come from ``train``.

Warm start (``--init RUN``): the segmenter ``seg`` comes from the init run; ``D`` starts fresh.
"""

from __future__ import annotations

import torch

from segshift.losses import mean_entropy, self_information_map
from segshift.methods.adaptseg import AdaptSeg
from segshift.methods.alignment import SCHEDULE_HPARAMS, AdversarialAlignment, discriminator_hparams
from segshift.methods.base import register
from segshift.methods.hparams import choice, number

MODES = ("adversarial", "minent")


@register
class Advent(AdaptSeg):
    name = "advent"
    paper = "Vu et al. CVPR 2019 (ADVENT); li2021 entropy-space alignment"
    summary = (
        "Entropy-space alignment: a PatchGAN on self-information maps (mode adversarial) or target entropy minimisation (mode minent)."
    )
    hparams = {
        "mode": choice("adversarial", MODES, "adversarial: D on per-class self-information maps | minent: minimise target entropy"),
        "lambda_adv": number(0.001, "adversarial mode: weight of BCE(D(I_target), source label)"),
        "lambda_ent": number(0.001, "minent mode: weight of the mean normalised target entropy"),
        **discriminator_hparams(),
        **SCHEDULE_HPARAMS,
    }

    def build_alignments(self) -> dict[str, AdversarialAlignment]:
        if self.hp["mode"] == "minent":
            return {}
        return super().build_alignments()

    def needs_target(self) -> bool:
        return True

    def d_input(self, logits: torch.Tensor) -> torch.Tensor:
        """What D sees of a prediction: per-class weighted self-information, normalised by log C."""
        return self_information_map(logits)

    def target_losses(self, target_logits: torch.Tensor | None) -> dict[str, tuple[float, torch.Tensor]]:
        if self.hp["mode"] != "minent":
            return {}
        return {"ent_target": (float(self.hp["lambda_ent"]), mean_entropy(target_logits))}
