"""``cyclegan``: unpaired image translation between the domains, then segmentation.

Zhu, Park, Isola and Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017; the "CycleGAN" row of Yan et al. 2019 (Fig. 2(b), eq. 1)
and of Li et al. 2021 (AttENT, ablation table). Two generators ``G_S2T``, ``G_T2S`` and two
PatchGAN discriminators ``D_S``, ``D_T``: adversarial losses make translated images look
like the other domain, the cycle loss ``|G_T2S(G_S2T(x_s)) - x_s|_1 + |G_S2T(G_T2S(x_t)) -
x_t|_1`` (weight ``lambda_cycle``) keeps the content.

:class:`TranslationMethod` holds what ``cyclegan``, ``unetgan`` and ``attent`` share. One
training step, in three plainly separated updates:

1. **Generators, with D_S and D_T frozen**: ``lambda_gan (L_G(D_T(G_S2T(x_s))) +
   L_G(D_S(G_T2S(x_t)))) + lambda_cycle L_cyc + lambda_identity L_idt`` plus a method's own
   generator terms (Unet-GAN's SSIM and U-Net feature losses).
2. **D_S and D_T on detached images**: real images label 1, translated ones label 0.
3. **Segmenter** on labelled images of the side it works on (see ``direction``), plus a
   method's own segmenter terms (AttENT's entropy-space alignment).

``method.direction`` says which side is translated:

* ``target_to_source`` (default; Yan et al. 2019 step 3, AttENT): the segmenter is trained
  on source images; at prediction a target image is first translated by ``G_T2S``, then
  segmented. ``segshift predict --no-translate`` segments images as they are (for
  source-like inputs).
* ``source_to_target`` (CyCADA-style): the segmenter is trained on source images
  translated to the target look (with their source labels; ``seg_on_source`` also keeps
  the untranslated ones) and segments target images as they are.

Readings and CPU choices (each a config key):

* The generators are residual, ``G(x) = x + g(x)`` with ``g`` zero at the start
  (``g_residual``): MR-to-MR translation keeps anatomy and most of the contrast, and plain
  generators trained for the few thousand steps a CPU affords learnt contrast inversions on
  the phantom (target Dice 0.007 after 200 steps) that the cycle loss cannot forbid.
* CycleGAN's least-squares GAN loss (``gan_loss: lsgan``), Adam lr 2e-4, betas (0.5, 0.999),
  ``lambda_cycle`` 10, no identity loss (``lambda_identity`` 0; it is for photo
  colour-preservation), no history pool of generated images.
* CPU sizes: the CycleGAN ResNet generator with ``g_ngf`` 16 and ``g_blocks`` 3 instead of
  CycleGAN's 64/9 (or the 32/6 the issue measured at 1.4 pairs/s), discriminators
  ``d_channels`` 32-64-128-1 (strides 2, 2, 1, 1; CycleGAN: 64-128-256-512-1), and the
  translation update on the first ``g_batch`` (4) images of each domain's batch (CycleGAN
  trains on batches of 1; the segmenter still sees the whole batch). Translation runs on the
  segmenter's preprocessed grid (1.5 mm, 160 px by default), in the run's precision (fp32
  on CPUs without native bf16). On 2 AVX2 cores an ``attent`` step at 160 px with the full
  batch of 8 in the translation update took 6.4 s; widen everything on a GPU.
* Model selection (``select``): source validation Dice judges only the segmenter, and
  target labels may not be used, so by default (``final``) the final step's networks are
  kept; ``source_val`` keeps every network of the step with the best source validation Dice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segshift.errors import SegshiftError
from segshift.losses.adversarial import frozen, gan_losses
from segshift.methods.adaptseg import check_non_negative
from segshift.methods.base import Batch, FigureSamples, register
from segshift.methods.source_only import SourceOnly
from segshift.nets import PatchDiscriminator, ResnetGenerator

DIRECTIONS = ("target_to_source", "source_to_target")
SELECTIONS = ("final", "source_val")


class TranslationMethod(SourceOnly):
    """Shared CycleGAN machinery (see the module docstring); subclasses add terms and stages."""

    uses_target = True
    attention: bool = False  # attention-gated generator skips (AttENT)

    def build(self) -> None:
        super().build()  # segmenter, supervised loss, its optimiser and schedule
        hp = self.hp
        if hp["direction"] not in DIRECTIONS:
            raise SegshiftError(f"method.direction must be one of {', '.join(DIRECTIONS)}, got {hp['direction']!r}")
        if hp.get("select", "final") not in SELECTIONS:
            raise SegshiftError(f"method.select must be one of {', '.join(SELECTIONS)}, got {hp['select']!r}")
        check_non_negative(hp, "lambda_gan", "lambda_cycle", "lambda_identity", "g_lr", "d_lr")
        self.d_gan, self.g_gan = self._gan(hp["gan_loss"])
        if self.translates:
            for name in ("g_s2t", "g_t2s"):
                self.nets[name] = ResnetGenerator(
                    self.in_channels, self.in_channels, ngf=int(hp["g_ngf"]), n_down=int(hp["g_down"]), n_blocks=int(hp["g_blocks"]),
                    norm=str(hp["g_norm"]), attention=self.attention_gates(), residual=bool(hp["g_residual"]),
                )
            for name in ("d_s", "d_t"):
                self.nets[name] = self.discriminator(self.in_channels, hp["d_channels"], norm=str(hp["d_norm"]))
            betas = tuple(float(b) for b in hp["betas"])
            g_params = [p for n in ("g_s2t", "g_t2s") for p in self.nets[n].parameters()]
            d_params = [p for n in ("d_s", "d_t") for p in self.nets[n].parameters()]
            self.optimizers["g"] = torch.optim.Adam(g_params, lr=float(hp["g_lr"]), betas=betas)
            self.optimizers["d_img"] = torch.optim.Adam(d_params, lr=float(hp["d_lr"]), betas=betas)
        self._fakes: dict[str, torch.Tensor] = {}
        self.translate_at_predict = self.can_translate()

    @staticmethod
    def _gan(mode: Any) -> tuple:
        try:
            return gan_losses(str(mode))
        except ValueError as exc:
            raise SegshiftError(f"method.gan_loss: {exc}") from None

    @staticmethod
    def discriminator(in_channels: int, channels: Any, norm: str = "none") -> PatchDiscriminator:
        return PatchDiscriminator.from_widths(in_channels, channels, norm=norm)

    def wrap(self, fn: Any) -> None:
        """Refuse DDP: a generator runs twice per update (translation, then cycle), which plain DDP does not allow."""
        raise SegshiftError(
            f"{self.name} does not run under torchrun/DDP yet (each generator is called twice per update); train it in one process"
        )

    # -- what the method is ---------------------------------------------------------------
    @property
    def translates(self) -> bool:
        """Whether this configuration has generators (AttENT's entropy-only ablation has none)."""
        return True

    def attention_gates(self) -> bool:
        return self.attention

    @property
    def target_to_source(self) -> bool:
        return self.hp["direction"] == "target_to_source"

    def can_translate(self) -> bool:
        return self.translates and self.target_to_source

    def inference_nets(self):  # noqa: ANN201 - iterator of names
        yield "seg"
        if self.can_translate():
            yield "g_t2s"

    def final_nets(self) -> tuple[str, ...]:
        return tuple(self.inference_nets()) if self.hp.get("select", "final") == "final" else ()

    # -- prediction -----------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, image: torch.Tensor, which: str = "g_t2s") -> torch.Tensor:
        """An image batch translated by generator ``which`` (float32 out)."""
        with self.autocast():
            return self.nets[which](self.prepare(image.to(self.device))).float()

    @torch.no_grad()
    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Target images: translated to the source look first when the direction says so."""
        if self.translates and self.target_to_source and self.translate_at_predict:
            image = self.translate(image)
        return self.validation_logits(image)

    @torch.no_grad()
    def validation_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Source validation images are segmented untranslated."""
        with self.autocast():
            return self.nets["seg"](self.prepare(image.to(self.device))).float()

    # -- training -------------------------------------------------------------------------
    def generator_terms(self, batch: Batch, xs: torch.Tensor, xt: torch.Tensor, fake_t: torch.Tensor, fake_s: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """Extra generator terms ``{name: (weight, loss)}`` (none for CycleGAN)."""
        return {}

    def translation_step(self, batch: Batch) -> dict[str, float]:
        """Updates 1 (generators, discriminators frozen) and 2 (image discriminators)."""
        hp = self.hp
        n = int(hp["g_batch"]) or batch.source_image.shape[0]
        xs, xt = self.prepare(batch.source_image[:n]), self.prepare(batch.target_image[:n])
        g_s2t, g_t2s, d_s, d_t = (self.net(n) for n in ("g_s2t", "g_t2s", "d_s", "d_t"))
        opt_g = self.optimizers["g"]
        opt_g.zero_grad(set_to_none=True)
        values: dict[str, float] = {}
        with frozen(self.nets["d_s"], self.nets["d_t"]):
            with self.autocast():
                fake_t, fake_s = g_s2t(xs), g_t2s(xt)
                adv = self.g_gan(d_t(fake_t)) + self.g_gan(d_s(fake_s))
            total = float(hp["lambda_gan"]) * adv
            values["g_adv"] = float(adv.detach())
            if float(hp["lambda_cycle"]) > 0:
                with self.autocast():
                    rec_s, rec_t = g_t2s(fake_t), g_s2t(fake_s)
                cyc = F.l1_loss(rec_s.float(), xs.float()) + F.l1_loss(rec_t.float(), xt.float())
                total = total + float(hp["lambda_cycle"]) * cyc
                values["cycle"] = float(cyc.detach())
            if float(hp["lambda_identity"]) > 0:
                with self.autocast():
                    idt = F.l1_loss(g_t2s(xs).float(), xs.float()) + F.l1_loss(g_s2t(xt).float(), xt.float())
                total = total + float(hp["lambda_identity"]) * idt
                values["identity"] = float(idt.detach())
            for name, (w, loss) in self.generator_terms(batch, xs, xt, fake_t, fake_s).items():
                total = total + w * loss.float()
                values[name] = float(loss.detach())
            total.backward()
        opt_g.step()
        values["loss_g"] = float(total.detach())
        opt_d = self.optimizers["d_img"]
        opt_d.zero_grad(set_to_none=True)
        fake_t, fake_s = fake_t.detach(), fake_s.detach()
        with self.autocast():
            ld_s = self.d_gan(d_s(xs), d_s(fake_s))
            ld_t = self.d_gan(d_t(xt), d_t(fake_t))
        (ld_s + ld_t).backward()
        opt_d.step()
        values["loss_d_s"], values["loss_d_t"] = float(ld_s.detach()), float(ld_t.detach())
        self._fakes = {"s2t": fake_t, "t2s": fake_s}
        return values

    def segmenter_images(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(labelled images, their labels, the images the segmenter will meet at test)``."""
        xs, ys = self.prepare(batch.source_image), batch.source_label
        if not self.translates:
            return xs, ys, self.prepare(batch.target_image)
        if self.target_to_source:
            return xs, ys, self._fakes["t2s"]
        fake = self._fakes["s2t"]
        y_fake = ys[: fake.shape[0]]
        if self.hp.get("seg_on_source", True):
            return torch.cat([xs, fake]), torch.cat([ys, y_fake]), self.prepare(batch.target_image)
        return fake, y_fake, self.prepare(batch.target_image)

    def segmenter_terms(self, src_logits: torch.Tensor, test_images: torch.Tensor) -> tuple[dict[str, tuple[float, torch.Tensor]], dict[str, Any]]:
        """Extra segmenter terms and what the later discriminator update needs (none here)."""
        return {}, {}

    def discriminator_updates(self, state: dict[str, Any]) -> dict[str, float]:
        """Updates after the segmenter's (AttENT's entropy discriminator); none here."""
        return {}

    def segmenter_step(self, batch: Batch) -> dict[str, float]:
        """Update 3: the segmenter on labelled images (plus a method's own terms)."""
        images, labels, test_images = self.segmenter_images(batch)
        opt = self.optimizers["seg"]
        opt.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.net("seg")(images)
        total, parts = self.loss(logits.float(), labels)
        values: dict[str, Any] = {"loss_seg": total.detach(), **parts}
        extra, state = self.segmenter_terms(logits, test_images)
        for name, (w, loss) in extra.items():
            total = total + w * loss.float()
            values[name] = loss.detach()
        total.backward()
        opt.step()
        values["loss"] = total.detach()
        out = {k: float(v) for k, v in values.items()}
        out.update(self.discriminator_updates(state))
        return out

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        values = self.translation_step(batch) if self.translates else {}
        values.update(self.segmenter_step(batch))
        return values

    # -- figures --------------------------------------------------------------------------
    def save_figures(self, folder: Path, samples: FigureSamples) -> list[Path]:
        """``translation.png``: source, S->T, S->T->S; target, T->S, T->S->T (one column per case)."""
        if not self.translates or samples.target_image is None:
            return []
        from segshift.report.figures import image_grid

        xs = torch.from_numpy(np.ascontiguousarray(samples.source_image))[:, None]
        xt = torch.from_numpy(np.ascontiguousarray(samples.target_image))[:, None]
        s2t = self.translate(xs, "g_s2t")
        t2s = self.translate(xt, "g_t2s")
        rows = [
            ("source", xs[:, 0].numpy()),
            ("source -> target", s2t[:, 0].cpu().numpy()),
            ("cycle S->T->S", self.translate(s2t, "g_t2s")[:, 0].cpu().numpy()),
            ("target", xt[:, 0].numpy()),
            ("target -> source", t2s[:, 0].cpu().numpy()),
            ("cycle T->S->T", self.translate(t2s, "g_s2t")[:, 0].cpu().numpy()),
        ]
        return [image_grid(rows, folder / "translation.png", title=f"{self.name}: translation (preprocessed slices)")]


CYCLEGAN_HPARAMS: dict[str, Any] = {
    "direction": "target_to_source",
    "seg_on_source": True,
    "select": "final",
    "gan_loss": "lsgan",
    "lambda_gan": 1.0,
    "lambda_cycle": 10.0,
    "lambda_identity": 0.0,
    "g_ngf": 16,
    "g_down": 2,
    "g_blocks": 3,
    "g_norm": "instance",
    "g_residual": True,
    "g_batch": 4,
    "d_channels": [32, 64, 128, 1],
    "d_norm": "instance",
    "g_lr": 0.0002,
    "d_lr": 0.0002,
    "betas": [0.5, 0.999],
}


@register
class CycleGAN(TranslationMethod):
    name = "cyclegan"
    paper = "Zhu et al. ICCV 2017; the CycleGAN row of yan2019 and li2021"
    summary = "Unpaired CycleGAN translation between the domains (target -> source by default), trained jointly with the segmenter."
    hparams = dict(CYCLEGAN_HPARAMS)
