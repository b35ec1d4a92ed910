"""``attent``: AttENT of Li et al. 2021, attention-aware translation + adversarial entropy minimisation.

Li, Luo, Chen, He, Wu and Tan, "AttENT: Domain-Adaptive Medical Image Segmentation via
Attention-Aware Translation and Adversarial Entropy Minimization", BIBM 2021.

* **Pixel space** ("Attention-aware Image Alignment"): a CycleGAN
  (:class:`~segshift.methods.translation.CycleTranslator`) whose generators ``G_S2T``,
  ``G_T2S`` carry attention gates on encoder-decoder skip connections
  (``AG = f * sigma_2(W_theta^T sigma_1(W_f^T f + b_f + W_g^T g + b_g) + b_theta)``, see
  :mod:`segshift.nets.generators`), adversarial losses ``L_adv`` for ``D_S`` and ``D_T``
  and the L1 cycle loss ``L_cyc``.
* **Entropy space** ("Adversarial Feature Alignment in the Entropy Space"): the segmenter
  ``S`` is trained on labelled source images (``L_seg``); the normalised entropy maps
  ``E_xs = -1/log C sum_c S(x_s)^c log S(x_s)^c`` and ``E_xt`` of the *translated* target
  image ``x_t2s = G_T2S(x_t)`` go to a PatchGAN ``D_E``
  (:class:`~segshift.methods.alignment.AdversarialAlignment`):
  ``L_dis = L_DE(E_xs, 1) + L_DE(E_xt, 0)`` updates ``D_E`` (on detached maps) and
  ``L_adv = L_DE(E_xt, 1)`` (weight ``w * lambda_ent``) updates ``S`` with ``D_E`` frozen.
  ``S(x_s)`` and ``S(x_t2s)`` are one forward pass under ``train.norm_stats=joint``.
* Prediction: ``S(G_T2S(x_t))``.

``w`` is the schedule of both adversarial weights (``lambda_gan`` of the generators and
``lambda_ent`` of the segmenter): a discriminator warm-up, then a sigmoid ramp
(:class:`~segshift.methods.alignment.AlignmentSchedule`; segshift's, not the paper's).

Warm start (``--init RUN``, a finished ``source-only`` run): the segmenter ``seg`` comes from
the init run; the generators, ``D_S``, ``D_T`` and ``D_E`` start fresh. The ``best``
checkpoint holds the segmenter ``train.select`` picked and the final ``G_T2S``.

Ablations as in the paper's table (:data:`ABLATIONS`, ``--set`` overrides; ``source-only``
is its "w/o adaptation" row)::

    CycleGAN                  method.attention=false method.entropy=false
    Pixel space alignment     method.entropy=false
    Entropy space alignment   method.translation=false      (D_E on S(x_s) vs S(x_t), no generators)
    AttENT                    (defaults)

Readings where the slides are not explicit: the pixel-space and entropy-space parts are
trained jointly, one update each per step (generators, image discriminators, segmenter,
``D_E``); ``D_E`` uses BCE with ADVENT's settings (``lambda_ent`` 0.001, Adam lr 1e-4,
betas 0.9/0.99); the translation side uses the ``cyclegan`` defaults (see there, including
the CPU-sized generators). With ``direction: source_to_target`` the segmenter trains on
source images translated to the target look and ``E_xt`` is computed on raw target images.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from segshift.errors import SegshiftError
from segshift.losses import entropy_map
from segshift.methods.alignment import AdversarialAlignment, fitted
from segshift.methods.base import register
from segshift.methods.hparams import flag, ints, number, numbers
from segshift.methods.translation import TRANSLATION_HPARAMS, TranslationMethod
from segshift.nets import PatchDiscriminator

ABLATIONS: dict[str, list[str]] = {
    "CycleGAN": ["method.attention=false", "method.entropy=false"],
    "Pixel space alignment": ["method.entropy=false"],
    "Entropy space alignment": ["method.translation=false"],
    "AttENT": [],
}
"""The ``--set`` overrides of ``attent`` that give each row of Li et al. 2021's ablation table."""


@register
class AttENT(TranslationMethod):
    name = "attent"
    paper = "li2021 (AttENT; ablation rows via switches)"
    summary = "Attention-gated CycleGAN (pixel space) + adversarial entropy minimisation on translated-target predictions (entropy space)."
    hparams = {
        **TRANSLATION_HPARAMS,
        "translation": flag(True, "pixel space: CycleGAN translation (target -> source by default)"),
        "attention": flag(True, "attention gates on the generators' skip connections"),
        "entropy": flag(True, "entropy space: D_E on normalised entropy maps"),
        "lambda_ent": number(0.001, "weight of L_DE(E_xt, 1) in the segmenter update (ADVENT's value)"),
        "e_d_lr": number(0.0001, "D_E: Adam learning rate (constant)"),
        "e_d_betas": numbers([0.9, 0.99], "D_E: Adam betas", length=2, low=0.0, high=0.9999),
        "e_d_channels": ints([32, 64, 128, 128, 1], "D_E widths, strides 2,2,2,1,1 (ADVENT: 64-128-256-512-1)"),
    }

    @classmethod
    def check_hparams(cls, hp: Mapping[str, Any]) -> None:
        if not hp["translation"] and not hp["entropy"]:
            raise SegshiftError("attent with method.translation=false and method.entropy=false adapts nothing: use source-only")

    def build_optimizers(self) -> None:
        super().build_optimizers()  # supervised loss, optimisers, and the translator's discriminators
        if self.hp["entropy"]:  # D_E (training only): an alignment on normalised entropy maps (one channel)
            self.d_e = AdversarialAlignment(
                self,
                "d_e",
                {"d_e": fitted(PatchDiscriminator.from_widths(1, self.hp["e_d_channels"]), self, "D_E")},
                lambda_g=float(self.hp["lambda_ent"]),
                lr=float(self.hp["e_d_lr"]),
                betas=self.hp["e_d_betas"],
            )

    @property
    def translates(self) -> bool:
        return bool(self.hp["translation"])

    def attention_gates(self) -> bool:
        return bool(self.hp["attention"])

    def segments_test_images(self) -> bool:
        return bool(self.hp["entropy"])

    def segmenter_terms(
        self,
        logits: torch.Tensor,
        test_logits: torch.Tensor | None,
        step: int,
    ) -> tuple[dict[str, tuple[torch.Tensor | None, Any]], dict[str, Any]]:
        """``w * lambda_ent * L_DE(E_xt, 1)`` with ``D_E`` frozen; keeps both entropy maps for ``D_E``."""
        if not self.hp["entropy"]:
            return {}, {}
        e_s, e_t = entropy_map(logits), entropy_map(test_logits)
        w = self.schedule(step)
        return {"adv_d_e": self.d_e.generator_loss(e_t, w), "w_adv": (None, w)}, {"e_s": e_s, "e_t": e_t}

    def segmenter_keeps_graph(self) -> bool:
        """D_E's update reuses its target scores of the segmenter step."""
        return bool(self.hp["entropy"]) and self.d_e.holds_graph

    def discriminator_updates(self, state: dict[str, Any]) -> dict[str, float]:
        """``L_dis = L_DE(E_xs, 1) + L_DE(E_xt, 0)`` on detached maps."""
        return self.d_e.discriminator_step(state["e_s"], state["e_t"]) if state else {}
