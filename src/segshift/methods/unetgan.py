"""``unetgan``: Unet-GAN of Yan et al. 2019, the three-step workflow.

Yan, Wang, Gu, Huang, Yan, Xia and Tao, "The Domain Shift Problem of Medical Image
Segmentation and Vendor-Adaptation by Unet-GAN", MICCAI 2019, section 2 "Overall
Workflow":

1. **Stage 1**: the LV-Unet (``model.name: resunet``) is trained on labelled source images
   (Adam, as ``source-only``). Model selection on source validation Dice happens in this
   stage only.
2. **Stage 2**: the generators and discriminators
   (:class:`~segshift.methods.translation.CycleTranslator`) are trained on *unlabelled*
   source and target images with the trained U-Net frozen (its batch-norm statistics
   too), on eq. 5: ``L_GAN + lambda_1 L_Unet + lambda_2 L_SSIM``, lambda_1 15, lambda_2 5
   (paper), ``L_GAN`` weighted by the schedule's ``w`` (discriminator warm-up, then a
   ramp; segshift's). ``L_SSIM`` is the structure-weighted SSIM loss (alpha = beta = 0.1,
   gamma = 1, :class:`~segshift.losses.StructureSSIMLoss`) and ``L_Unet`` the MSE between
   the U-Net's deep encoder features of the original and the translated image (eq. 4; the
   7th and 9th residual blocks, after three poolings: ``model.kwargs.feature_blocks``).
   Both terms are applied to both generators.
3. **Prediction**: target images are translated to the source look by ``G_T2S``, then
   segmented (``segshift predict``); the ``best`` checkpoint holds the stage-1 U-Net
   and the final ``G_T2S``.

Two ways to run it:

* **From scratch**: one run of ``method.seg_steps + method.gan_steps`` steps; steps
  ``1..seg_steps`` are stage 1, the rest stage 2.
* **Warm start** (``--init RUN``, a finished ``source-only`` run with the same U-Net):
  stage 1 is the init run; the U-Net ``seg`` comes from it and this run is stage 2 only,
  ``train.steps`` steps (``seg_steps`` and ``gan_steps`` are not used). The generators
  and image discriminators start fresh.

Readings where the paper is not explicit (each a config key):

* ``ssim_pair: translated`` (default): the paper replaces CycleGAN's image loss by SSIM
  "between the input image and the translated one", and eq. 5 has no cycle term, so SSIM
  compares ``x`` with ``G(x)`` and ``lambda_cycle`` is 0; ``ssim_pair: cycle`` compares
  ``x`` with its cycle reconstruction instead (then set ``lambda_cycle`` as wished).
* Optimiser: the paper's Adam lr 1e-5 with early stopping over tens of thousands of images
  does not move in a CPU budget of a few thousand steps; ``g_lr``/``d_lr`` default to
  CycleGAN's 2e-4 (set 1e-5 for the paper's value). ``L_GAN`` is CycleGAN's least-squares
  loss. Early stopping needs a label-free criterion the paper does not give: the final
  generator is kept.
* Segmenters without ``encoder_features`` (a plain U-Net) use their bottleneck feature.
* Only ``direction: target_to_source`` exists for Unet-GAN (the paper's workflow); the
  CyCADA-style other direction is ``cyclegan``/``attent`` with ``source_to_target``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segshift.errors import SegshiftError
from segshift.losses import StructureSSIMLoss
from segshift.losses.adversarial import frozen
from segshift.methods.base import Batch, make_schedule, register
from segshift.methods.hparams import choice, integer, number
from segshift.methods.source_only import SourceOnly
from segshift.methods.translation import TRANSLATION_HPARAMS, Terms, TranslationMethod

SSIM_PAIRS = ("translated", "cycle")


@register
class UnetGAN(TranslationMethod):
    name = "unetgan"
    paper = "yan2019 (Unet-GAN)"
    summary = "Source U-Net, then a CycleGAN with structure-weighted SSIM and U-Net-feature losses; target images are translated to the source look, then segmented."
    hparams = {
        **TRANSLATION_HPARAMS,
        "seg_steps": integer(1500, "stage 1: the U-Net on labelled source images (from scratch only)"),
        "gan_steps": integer(1500, "stage 2: the translation, U-Net frozen (from scratch only; warm-started: train.steps)"),
        "lambda_cycle": number(0.0, "cycle consistency weight (eq. 5 has no cycle term)"),
        "lambda_unet": number(15.0, "lambda_1 (eq. 5): the U-Net feature loss"),
        "lambda_ssim": number(5.0, "lambda_2 (eq. 5): the structure-weighted SSIM loss"),
        "ssim_pair": choice("translated", SSIM_PAIRS, "translated: SSIM(x, G(x)) | cycle: SSIM(x, F(G(x)))"),
        "ssim_alpha": number(0.1, "SSIM luminance exponent"),
        "ssim_beta": number(0.1, "SSIM contrast exponent"),
        "ssim_gamma": number(1.0, "SSIM structure exponent"),
        "ssim_data_range": number(4.0, "L of c1 = (0.01 L)^2, c2 = (0.03 L)^2 for z-scored images", low=1e-6),
        "g_lr": number(0.0002, "generators' Adam learning rate (paper: 1e-5 with early stopping over ~35 epochs)"),
    }

    @classmethod
    def check_hparams(cls, hp: Mapping[str, Any]) -> None:
        if hp["direction"] != "target_to_source":
            raise SegshiftError("unetgan translates target images to the source look: method.direction must be target_to_source")

    def build_nets(self) -> None:
        # stage 1 is the init run's when warm-started
        self.seg_steps = 0 if self.warm_started else int(self.hp["seg_steps"])
        self.gan_steps = int(self.cfg["train"]["steps"]) if self.warm_started else int(self.hp["gan_steps"])
        super().build_nets()

    def build_optimizers(self) -> None:
        super().build_optimizers()
        hp = self.hp
        self.ssim_loss = StructureSSIMLoss(
            float(hp["ssim_alpha"]), float(hp["ssim_beta"]), float(hp["ssim_gamma"]), float(hp["ssim_data_range"])
        )
        # the segmenter's schedule spans stage 1 only (none when stage 1 was the init run's)
        if self.seg_steps:
            self.schedulers["seg"] = make_schedule(self.optimizers["seg"], self.cfg["train"], self.seg_steps)
        else:
            del self.schedulers["seg"]

    def total_steps(self) -> int:
        return self.seg_steps + self.gan_steps

    def stage(self, step: int) -> int:
        return 1 if step <= self.seg_steps else 2

    def validation_due(self, step: int) -> bool:
        return self.stage(step) == 1  # stage 2 leaves the segmenter frozen

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The frozen U-Net's segmentation-specific features ``f`` (eq. 4)."""
        seg = self.nets["seg"]
        if hasattr(seg, "encoder_features"):
            return list(self.call(seg.encoder_features, x))
        return [self.call(seg.forward_features, x)[1][0]]

    def generator_terms(self, xs: torch.Tensor, xt: torch.Tensor, fake_t: torch.Tensor, fake_s: torch.Tensor) -> Terms:
        """``lambda_2 L_SSIM + lambda_1 L_Unet`` of eq. 5, for both generators."""
        hp = self.hp
        if hp["ssim_pair"] == "translated":
            ref_s, ref_t = fake_t, fake_s  # SSIM(x_s, G_S2T(x_s)) and SSIM(x_t, G_T2S(x_t))
        elif self.translator.reconstructions is not None:  # the cycle term's, of these very images
            ref_s, ref_t = self.translator.reconstructions
        else:
            ref_s, ref_t = self.call("g_t2s", fake_t), self.call("g_s2t", fake_s)
        l_ssim = self.ssim_loss(xs, ref_s) + self.ssim_loss(xt, ref_t)  # float32, outside the networks' precision
        with torch.no_grad():
            f_orig = self.features(torch.cat([xs, xt]))
        f_trans = self.features(torch.cat([fake_t, fake_s]))
        l_unet = sum(F.mse_loss(a.float(), b.float()) for a, b in zip(f_trans, f_orig)) / len(f_orig)
        return {"ssim": (float(hp["lambda_ssim"]), l_ssim), "unet_feat": (float(hp["lambda_unet"]), l_unet)}

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        if self.stage(step) == 1:
            values = SourceOnly.train_step(self, batch, step)  # the U-Net on labelled source
            values["stage"] = 1.0
            return values
        seg = self.nets["seg"]
        seg.eval()  # frozen feature extractor: no batch-norm statistics updates
        with frozen(seg):
            values = self.translation_step(batch, step - self.seg_steps)
        values["stage"] = 2.0
        return values
