"""Image translation between the domains, once: the CycleGAN component and the methods built on it.

Shared by ``cyclegan`` (Zhu et al. 2017), ``unetgan`` (Yan et al. 2019) and ``attent``
(Li et al. 2021).

:class:`CycleTranslator` owns two generators ``G_S2T``, ``G_T2S`` (registered into
``method.nets`` as ``g_s2t``, ``g_t2s``) and their optimiser ``method.optimizers["g"]``, and
two :class:`~segshift.methods.alignment.AdversarialAlignment` s, one per image PatchGAN:
``d_t`` judges target images against ``G_S2T(x_s)``, ``d_s`` source images against
``G_T2S(x_t)``, both with the GAN objective ``gan_loss`` and sharing the optimiser
``method.optimizers["d_img"]``. A CycleGAN step is their two updates:

1. **Generators, with D_S and D_T frozen**: ``w * lambda_gan (L_G(D_T(G_S2T(x_s))) +
   L_G(D_S(G_T2S(x_t)))) + lambda_cycle L_cyc + lambda_identity L_idt`` plus a method's own
   generator terms (Unet-GAN's SSIM and U-Net feature losses), with
   ``L_cyc = |G_T2S(G_S2T(x_s)) - x_s|_1 + |G_S2T(G_T2S(x_t)) - x_t|_1`` and
   ``L_idt = |G_T2S(x_s) - x_s|_1 + |G_S2T(x_t) - x_t|_1``.
2. **D_S and D_T on detached images**: real images label 1, translated ones label 0.

The alignments share each discriminator's pass over the translated images between the two
updates, as they do for a segmenter (:mod:`segshift.methods.alignment`): update 2 forwards
only the real images, and a discriminator with batch norm keeps separate passes (one per
batch of images).

``w`` is the same schedule as the segmenters' alignment weight
(:class:`~segshift.methods.alignment.AlignmentSchedule`, ``d_warmup_steps`` and
``ramp_steps``, logged as ``w_gan``): for the first steps of the translation stage only the
image discriminators learn the look of each domain (the residual generators start as the
identity), then the generators' adversarial weight ramps up to ``lambda_gan``.

Logged besides the losses: the image discriminators' accuracy (``d_acc_d_s``, ``d_acc_d_t``,
before their update) and, on the engine's logged steps,
:meth:`~TranslationMethod.translation_diagnostics` (``trans_dice``, ``trans_stat_dist*``).

:class:`TranslationMethod` is a segmenter plus a translator: each step runs the translator's
two updates, then **the segmenter** on labelled images of the side it works on (see
``direction``; forward passes through :meth:`~segshift.methods.base.Method.segment`), plus
a method's own segmenter terms (AttENT's entropy-space alignment).

``method.direction`` says which side is translated:

* ``target_to_source`` (default; Yan et al. 2019 step 3, AttENT): the segmenter is trained
  on source images; at prediction a target image is first translated by ``G_T2S``, then
  segmented. ``segshift predict --target-domain no`` segments images as they are (for
  source-like inputs); the predictor translates only images of the run's own target domain.
* ``source_to_target`` (CyCADA-style): the segmenter is trained on source images
  translated to the target look (with their source labels; ``seg_on_source`` also keeps
  the untranslated ones) and segments target images as they are.

Model selection is the engine's (``train.select``); the translator's networks are
:meth:`~TranslationMethod.final_nets`: source validation Dice judges only the segmenter
and target labels may not be used, so the ``best`` checkpoint always holds the *final*
``G_T2S``, next to the segmenter that ``train.select`` picked.

Readings and CPU choices (each a config key, :data:`TRANSLATION_HPARAMS`):

* The generators are residual, ``G(x) = x + g(x)`` with ``g`` zero at the start
  (``g_residual``): MR-to-MR translation keeps anatomy and most of the contrast, and plain
  generators trained for the few thousand steps a CPU affords learnt contrast inversions on
  the phantom (target Dice 0.007 after 200 steps) that the cycle loss cannot forbid.
* CycleGAN's least-squares GAN loss (``gan_loss: lsgan``), Adam lr 2e-4, betas (0.5, 0.999),
  ``lambda_cycle`` 10, no identity loss (``lambda_identity`` 0; it is for photo
  colour-preservation), no history pool of generated images.
* CPU sizes: the CycleGAN ResNet generator with ``g_ngf`` 16 and ``g_blocks`` 3 instead of
  CycleGAN's 64/9, discriminators ``d_channels`` 32-64-128-1 (strides 2, 2, 1, 1; CycleGAN:
  64-128-256-512-1), and the translation update on the first ``g_batch`` (4) images of each
  domain's batch (CycleGAN trains on batches of 1; the segmenter still sees the whole
  batch). Widen everything on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segshift.errors import SegshiftError
from segshift.losses.adversarial import GAN_OBJECTIVES, gan_objective
from segshift.methods.alignment import SCHEDULE_HPARAMS, AdversarialAlignment, AlignmentSchedule, backward_discriminators, fitted
from segshift.methods.base import Batch, FigureSamples, Method, MethodFigure
from segshift.methods.diagnostics import evaluating, hard_dice, intensity_distance
from segshift.methods.hparams import HParam, choice, flag, integer, ints, number, numbers
from segshift.methods.source_only import SourceOnly
from segshift.nets import PatchDiscriminator, ResnetGenerator
from segshift.nets.blocks import NORMS

DIRECTIONS = ("target_to_source", "source_to_target")

TRANSLATION_HPARAMS: dict[str, HParam] = {
    "direction": choice(
        "target_to_source", DIRECTIONS, "target_to_source: segment G_T2S(x_t) | source_to_target: train on G_S2T(x_s), segment x_t as is"
    ),
    "seg_on_source": flag(True, "source_to_target only: also train the segmenter on untranslated source images"),
    "gan_loss": choice("lsgan", tuple(GAN_OBJECTIVES), "lsgan (CycleGAN's least squares) | bce (non-saturating)"),
    "lambda_gan": number(1.0, "the generators' adversarial weight"),
    "lambda_cycle": number(10.0, "L1 cycle consistency (CycleGAN's lambda)"),
    "lambda_identity": number(0.0, "identity loss (off: it is for photo colour preservation)"),
    "g_ngf": integer(16, "generator width (CPU size; CycleGAN: 64)"),
    "g_down": integer(2, "generator downsamplings", low=0),
    "g_blocks": integer(3, "generator residual blocks (CPU size; CycleGAN: 6 at 128 px, 9 at 256 px)", low=0),
    "g_norm": choice("instance", NORMS, "generator normalisation"),
    "g_residual": flag(True, "G(x) = x + g(x), g zero at the start (false: CycleGAN's plain generator)"),
    "g_batch": integer(4, "images per domain in the translation update (0: the whole batch)", low=0),
    "d_channels": ints([32, 64, 128, 1], "image PatchGAN widths, strides 2,2,1,1 (CycleGAN: 64-128-256-512-1)"),
    "d_norm": choice("instance", NORMS, "image discriminator normalisation"),
    "g_lr": number(0.0002, "generators' Adam learning rate (constant)"),
    "d_lr": number(0.0002, "image discriminators' Adam learning rate (constant)"),
    "betas": numbers([0.5, 0.999], "Adam betas of generators and image discriminators", length=2, low=0.0, high=0.9999),
    **SCHEDULE_HPARAMS,
}
"""Hyper-parameters of the translation methods (CycleGAN's, CPU-sized; see the module docstring)."""

Terms = dict[str, tuple[float, torch.Tensor]]
"""Extra loss terms ``{name: (weight, loss)}``."""


class CycleTranslator:
    """Two generators, two image-discriminator alignments, and the two updates of a CycleGAN step.

    Args:
        method: the method whose ``nets`` and ``optimizers`` receive the networks and optimisers.
        hp: the ``method:`` section (:data:`TRANSLATION_HPARAMS` keys).
        attention: attention-gated generator skips (AttENT).
    """

    GENERATORS = ("g_s2t", "g_t2s")
    DISCRIMINATORS = ("d_s", "d_t")

    def __init__(self, method: Method, hp: Mapping[str, Any], attention: bool = False) -> None:
        self.method, self.hp = method, hp
        self.objective = gan_objective(str(hp["gan_loss"]))
        self.lambda_gan, self.lambda_cycle, self.lambda_identity = (float(hp[k]) for k in ("lambda_gan", "lambda_cycle", "lambda_identity"))
        self.alignments: dict[str, AdversarialAlignment] = {}
        """``{"d_s": ..., "d_t": ...}``: the image discriminators (:meth:`build_optimizers`)."""
        self.reconstructions: tuple[torch.Tensor, torch.Tensor] | None = None
        """``(G_T2S(G_S2T(x_s)), G_S2T(G_T2S(x_t)))`` of the current generator update (``lambda_cycle > 0``), for ``extra`` terms."""
        for name in self.GENERATORS:
            method.nets[name] = ResnetGenerator(
                method.in_channels,
                method.in_channels,
                ngf=int(hp["g_ngf"]),
                n_down=int(hp["g_down"]),
                n_blocks=int(hp["g_blocks"]),
                norm=str(hp["g_norm"]),
                attention=attention,
                residual=hp["g_residual"],
            )

    def build_optimizers(self) -> None:
        """The generators' optimiser, and the image discriminators (training only) as two alignments sharing one."""
        method, hp = self.method, self.hp
        ds = {
            n: fitted(
                PatchDiscriminator.from_widths(method.in_channels, hp["d_channels"], norm=str(hp["d_norm"])),
                method,
                f"the image discriminator {n}",
            )
            for n in self.DISCRIMINATORS
        }
        betas = tuple(float(b) for b in hp["betas"])
        g_params = [p for n in self.GENERATORS for p in method.nets[n].parameters()]
        method.optimizers["g"] = torch.optim.Adam(g_params, lr=float(hp["g_lr"]), betas=betas)
        method.optimizers["d_img"] = torch.optim.Adam([p for d in ds.values() for p in d.parameters()], lr=float(hp["d_lr"]), betas=betas)
        self.alignments = {
            n: AdversarialAlignment(
                method, n, {n: d}, lambda_g=self.lambda_gan, objective=self.objective, optimizer="d_img", joint_pass=False
            )
            for n, d in ds.items()
        }

    def _nets(self, *names: str) -> list[torch.nn.Module]:
        return [self.method.net(n) for n in names]

    def generator_step(
        self,
        xs: torch.Tensor,
        xt: torch.Tensor,
        weight: float = 1.0,
        extra: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Terms] | None = None,
    ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """Update 1: the generators, with D_S and D_T frozen.

        Args:
            xs, xt: source and target images.
            weight: the schedule's ``w`` on ``lambda_gan``.
            extra: ``extra(xs, xt, fake_t, fake_s)`` gives a method's own generator terms.

        Returns the logged values and the translated images ``G_S2T(x_s)``, ``G_T2S(x_t)``.
        """
        m = self.method
        g_s2t, g_t2s = self._nets(*self.GENERATORS)
        opt = m.optimizers["g"]
        opt.zero_grad(set_to_none=True)
        values: dict[str, float] = {}
        self.reconstructions = None
        fake_t, fake_s = m.call(g_s2t, xs), m.call(g_t2s, xt)
        d_s, d_t = (self.alignments[n] for n in self.DISCRIMINATORS)
        adv = d_t.adversarial_loss(fake_t, linked=weight > 0) + d_s.adversarial_loss(fake_s, linked=weight > 0)
        total = weight * self.lambda_gan * adv
        values["g_adv"] = float(adv.detach())
        if self.lambda_cycle > 0:
            rec_s, rec_t = m.call(g_t2s, fake_t), m.call(g_s2t, fake_s)
            self.reconstructions = (rec_s, rec_t)
            cyc = F.l1_loss(rec_s.float(), xs.float()) + F.l1_loss(rec_t.float(), xt.float())
            total = total + self.lambda_cycle * cyc
            values["cycle"] = float(cyc.detach())
        if self.lambda_identity > 0:
            idt = F.l1_loss(m.call(g_t2s, xs).float(), xs.float()) + F.l1_loss(m.call(g_s2t, xt).float(), xt.float())
            total = total + self.lambda_identity * idt
            values["identity"] = float(idt.detach())
        for name, (w, loss) in (extra(xs, xt, fake_t, fake_s) if extra else {}).items():
            total = total + w * loss.float()
            values[name] = float(loss.detach())
        m.backward(total, "g", retain_graph=d_s.holds_graph or d_t.holds_graph)  # into the generators only
        opt.step()
        values["loss_g"] = float(total.detach())
        self.reconstructions = None
        return values, fake_t.detach(), fake_s.detach()

    def discriminator_step(self, xs: torch.Tensor, xt: torch.Tensor, fake_t: torch.Tensor, fake_s: torch.Tensor) -> dict[str, float]:
        """Update 2: D_S and D_T on real (1) and detached translated (0) images; logs their losses
        and their accuracies before the update (``d_acc_d_s``, ``d_acc_d_t``: real vs translated).
        """
        opt = self.method.optimizers["d_img"]
        opt.zero_grad(set_to_none=True)
        ld_s, values_s, reused_s = self.alignments["d_s"].discriminator_loss(xs, fake_s)
        ld_t, values_t, reused_t = self.alignments["d_t"].discriminator_loss(xt, fake_t)
        backward_discriminators(self.method, "d_img", ld_s + ld_t, reused_s or reused_t)
        opt.step()
        values = {**values_s, **values_t}
        return {k: values[k] for k in ("loss_d_s", "loss_d_t", "d_acc_d_s", "d_acc_d_t")}

    def step(
        self,
        xs: torch.Tensor,
        xt: torch.Tensor,
        weight: float = 1.0,
        extra: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Terms] | None = None,
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Both updates; returns the logged values and the detached translations ``{"s2t": ..., "t2s": ...}``."""
        values, fake_t, fake_s = self.generator_step(xs, xt, weight, extra)
        values.update(self.discriminator_step(xs, xt, fake_t, fake_s))
        return values, {"s2t": fake_t, "t2s": fake_s}

    @torch.no_grad()
    def translate(self, image: torch.Tensor, which: str = "g_t2s") -> torch.Tensor:
        """An image batch translated by generator ``which`` (float32 out)."""
        m = self.method
        return m.call(m.nets[which], image.to(m.device)).float()


class TranslationMethod(SourceOnly):
    """A segmenter and a :class:`CycleTranslator` (see the module docstring); subclasses add terms and stages."""

    uses_target = True
    supports_view_consistency = False  # its segmenter step has no GIN-IPA consistency term (GIN appearance only)
    supports_ddp = False  # each generator runs twice per update (translation, then cycle): see wrap
    attention: bool = False  # attention-gated generator skips (AttENT)

    hparams = TRANSLATION_HPARAMS

    def build_nets(self) -> None:
        super().build_nets()  # segmenter
        self.translator = CycleTranslator(self, self.hp, attention=self.attention_gates()) if self.translates else None
        self.translate_at_predict = self.can_translate()

    def build_optimizers(self) -> None:
        super().build_optimizers()  # supervised loss, the segmenter's optimiser and schedule
        self.schedule = AlignmentSchedule.from_hparams(self.hp)
        if self.translator is not None:
            self.translator.build_optimizers()
        self._fakes: dict[str, torch.Tensor] = {}

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
        """The translator: its final weights go into ``best`` (nothing label-free can select it)."""
        return ("g_t2s",) if self.can_translate() else ()

    # -- prediction -----------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, image: torch.Tensor, which: str = "g_t2s") -> torch.Tensor:
        """An image batch translated by generator ``which`` (float32 out)."""
        return self.translator.translate(image, which)

    @torch.no_grad()
    def prediction_input(self, image: torch.Tensor) -> torch.Tensor:
        """Target images: translated to the source look first when the direction says so (TENT adapts the segmenter only)."""
        return self.translate(image) if self.can_translate() and self.translate_at_predict else image

    @torch.no_grad()
    def validation_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Source validation images are segmented untranslated."""
        return self.segmenter_logits(image)

    # -- training -------------------------------------------------------------------------
    def generator_terms(self, xs: torch.Tensor, xt: torch.Tensor, fake_t: torch.Tensor, fake_s: torch.Tensor) -> Terms:
        """Extra generator terms ``{name: (weight, loss)}`` (none for CycleGAN)."""
        return {}

    def translation_step(self, batch: Batch, stage_step: int) -> dict[str, float]:
        """The translator's two updates on the first ``g_batch`` images of each domain (``stage_step``: for the schedule)."""
        n = int(self.hp["g_batch"]) or batch.source_image.shape[0]
        xs, xt = batch.source_image[:n], batch.target_image[:n]
        w = self.schedule(stage_step)
        values, self._fakes = self.translator.step(xs, xt, w, extra=self.generator_terms)
        values["w_gan"] = w
        if self.diagnostics:
            values.update(self.translation_diagnostics(xs, batch.source_label[:n], xt, self._fakes))
        return values

    @torch.no_grad()
    def translation_diagnostics(
        self, xs: torch.Tensor, ys: torch.Tensor, xt: torch.Tensor, fakes: Mapping[str, torch.Tensor]
    ) -> dict[str, float]:
        """What the translator does to labelled anatomy and to image statistics (docs/training.md, "Diagnostics").

        * ``trans_dice``: the current segmenter's Dice (:func:`~segshift.methods.diagnostics.hard_dice`)
          against ``ys`` on the source images translated the way it meets images:
          ``G_S2T(x_s)`` (``source_to_target``: what it trains on) or ``G_T2S(G_S2T(x_s))``
          (``target_to_source``: source anatomy in the target look, through the prediction path);
          ``trans_dice_raw`` on ``x_s`` untranslated, the reference;
        * ``trans_stat_dist``: :func:`~segshift.methods.diagnostics.intensity_distance` of
          ``G_S2T(x_s)`` from real target images; ``trans_stat_dist_t2s`` of ``G_T2S(x_t)`` from
          real source images; ``trans_stat_dist_raw`` of the source from the target, the reference.

        Networks run in eval mode (as at prediction), so no statistics change; the segmenter
        with its own (source) batch-norm statistics.
        """
        s2t, t2s = fakes["s2t"], fakes["t2s"]
        with evaluating(self.nets["seg"], self.nets["g_t2s"]):
            seen = self.translate(s2t, "g_t2s") if self.target_to_source else s2t
            dice = hard_dice(self.segmenter_logits(seen), ys)
            dice_raw = hard_dice(self.segmenter_logits(xs), ys)
        return {
            "trans_dice": dice,
            "trans_dice_raw": dice_raw,
            "trans_stat_dist": intensity_distance(s2t, xt),
            "trans_stat_dist_t2s": intensity_distance(t2s, xs),
            "trans_stat_dist_raw": intensity_distance(xs, xt),
        }

    def segmenter_images(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(labelled images, their labels, the images the segmenter will meet at test)``."""
        xs, ys = batch.source_image, batch.source_label
        if not self.translates:
            return xs, ys, batch.target_image
        if self.target_to_source:
            return xs, ys, self._fakes["t2s"]
        fake = self._fakes["s2t"]
        y_fake = ys[: fake.shape[0]]
        if self.hp["seg_on_source"]:
            return torch.cat([xs, fake]), torch.cat([ys, y_fake]), batch.target_image
        return fake, y_fake, batch.target_image

    def segments_test_images(self) -> bool:
        """Whether the segmenter step also segments the test-side images (for a target term)."""
        return False

    def segmenter_terms(
        self,
        logits: torch.Tensor,
        test_logits: torch.Tensor | None,
        step: int,
    ) -> tuple[dict[str, tuple[torch.Tensor | None, Any]], dict[str, Any]]:
        """A method's own segmenter terms: ``({name: (weighted term or None, value to log)}, state for
        discriminator_updates)`` (see :meth:`~segshift.methods.source_only.SourceOnly.segmenter_update`).
        """
        return {}, {}

    def discriminator_updates(self, state: dict[str, Any]) -> dict[str, float]:
        """Updates after the segmenter's (AttENT's entropy discriminator); none here."""
        return {}

    def segmenter_step(self, batch: Batch, step: int) -> dict[str, float]:
        """The segmenter on labelled images (plus a method's own terms), then any later discriminator update."""
        images, labels, test_images = self.segmenter_images(batch)
        if self.segments_test_images():
            logits, test_logits = self.segment(images, test_images)  # one batch-norm pass under norm_stats=joint
        else:
            (logits,), test_logits = self.segment(images), None
        terms, state = self.segmenter_terms(logits, test_logits, step)
        values = self.segmenter_update(logits, labels, None, terms)
        values.update(self.discriminator_updates(state))
        return values

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        values = self.translation_step(batch, step) if self.translates else {}
        values.update(self.segmenter_step(batch, step))
        return values

    # -- figures --------------------------------------------------------------------------
    def figures(self, samples: FigureSamples) -> list[MethodFigure]:
        """``translation``: source, S->T, S->T->S; target, T->S, T->S->T (an image grid, one column per case)."""
        if not self.translates or samples.target_image is None:
            return []
        xs = torch.from_numpy(np.ascontiguousarray(samples.source_image))[:, None]
        xt = torch.from_numpy(np.ascontiguousarray(samples.target_image))[:, None]
        s2t = self.translate(xs, "g_s2t")
        t2s = self.translate(xt, "g_t2s")
        rows = {
            "source": xs[:, 0].numpy(),
            "source -> target": s2t[:, 0].cpu().numpy(),
            "cycle S->T->S": self.translate(s2t, "g_t2s")[:, 0].cpu().numpy(),
            "target": xt[:, 0].numpy(),
            "target -> source": t2s[:, 0].cpu().numpy(),
            "cycle T->S->T": self.translate(t2s, "g_s2t")[:, 0].cpu().numpy(),
        }
        return [MethodFigure("translation", "image_grid", rows, {"title": f"{self.name}: translation (preprocessed slices)"})]
