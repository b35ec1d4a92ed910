"""``attent``: AttENT of Li et al. 2021, attention-aware translation + adversarial entropy minimisation.

Li, Luo, Chen, He, Wu and Tan, "AttENT: Domain-Adaptive Medical Image Segmentation via
Attention-Aware Translation and Adversarial Entropy Minimization", BIBM 2021.

* **Pixel space** ("Attention-aware Image Alignment"): a CycleGAN whose generators
  ``G_S2T``, ``G_T2S`` carry attention gates on encoder-decoder skip connections
  (``AG = f * sigma_2(W_theta^T sigma_1(W_f^T f + b_f + W_g^T g + b_g) + b_theta)``, see
  :mod:`segshift.nets.generators`), adversarial losses ``L_adv`` for ``D_S`` and ``D_T``
  and the L1 cycle loss ``L_cyc``.
* **Entropy space** ("Adversarial Feature Alignment in the Entropy Space"): the segmenter
  ``S`` is trained on labelled source images (``L_seg``); the normalised entropy maps
  ``E_xs = -1/log C sum_c S(x_s)^c log S(x_s)^c`` and ``E_xt`` of the *translated* target
  image ``x_t2s = G_T2S(x_t)`` go to a PatchGAN ``D_E``:
  ``L_dis = L_DE(E_xs, 1) + L_DE(E_xt, 0)`` updates ``D_E`` (on detached maps) and
  ``L_adv = L_DE(E_xt, 1)`` (weight ``lambda_ent``) updates ``S`` with ``D_E`` frozen.
* Prediction: ``S(G_T2S(x_t))``.

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

from typing import Any

import torch

from segshift.errors import SegshiftError
from segshift.losses import d_loss, entropy_map, frozen, g_loss
from segshift.methods.adaptseg import check_non_negative
from segshift.methods.base import register
from segshift.methods.cyclegan import CYCLEGAN_HPARAMS, TranslationMethod

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
        **CYCLEGAN_HPARAMS,
        "translation": True,
        "attention": True,
        "entropy": True,
        "lambda_ent": 0.001,
        "e_d_lr": 0.0001,
        "e_d_betas": [0.9, 0.99],
        "e_d_channels": [32, 64, 128, 128, 1],
    }

    def build(self) -> None:
        hp = self.hp
        for k in ("translation", "attention", "entropy"):
            if not isinstance(hp[k], bool):
                raise SegshiftError(f"method.{k} must be true or false, got {hp[k]!r}")
        if not hp["translation"] and not hp["entropy"]:
            raise SegshiftError("attent with method.translation=false and method.entropy=false adapts nothing: use source-only")
        check_non_negative(hp, "lambda_ent", "e_d_lr")
        super().build()
        if hp["entropy"]:
            self.nets["d_e"] = self.discriminator(1, hp["e_d_channels"])
            betas = tuple(float(b) for b in hp["e_d_betas"])
            self.optimizers["d_e"] = torch.optim.Adam(self.nets["d_e"].parameters(), lr=float(hp["e_d_lr"]), betas=betas)

    @property
    def translates(self) -> bool:
        return bool(self.hp["translation"])

    def attention_gates(self) -> bool:
        return bool(self.hp["attention"])

    def segmenter_terms(self, src_logits: torch.Tensor, test_images: torch.Tensor) -> tuple[dict[str, tuple[float, torch.Tensor]], dict[str, Any]]:
        """``lambda_ent * L_DE(E_xt, 1)`` with ``D_E`` frozen; keeps both entropy maps for ``D_E``."""
        if not self.hp["entropy"]:
            return {}, {}
        with self.autocast():
            tgt_logits = self.net("seg")(test_images)
        e_s, e_t = entropy_map(src_logits), entropy_map(tgt_logits)
        with frozen(self.nets["d_e"]):
            with self.autocast():
                adv = g_loss(self.nets["d_e"](self.prepare(e_t)))
        return {"adv_entropy": (float(self.hp["lambda_ent"]), adv)}, {"e_s": e_s.detach(), "e_t": e_t.detach()}

    def discriminator_updates(self, state: dict[str, Any]) -> dict[str, float]:
        """``L_dis = L_DE(E_xs, 1) + L_DE(E_xt, 0)`` on detached maps."""
        if not state:
            return {}
        opt = self.optimizers["d_e"]
        opt.zero_grad(set_to_none=True)
        d_e = self.net("d_e")
        with self.autocast():
            real, fake = d_e(self.prepare(state["e_s"])).float(), d_e(self.prepare(state["e_t"])).float()
        loss = d_loss(real, fake)
        loss.backward()
        opt.step()
        acc = 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean())
        return {"loss_d_e": float(loss.detach()), "acc_d_e": float(acc)}
