"""``adaptseg``: output-space adversarial alignment (AdaptSegNet; the "MDA" of Wang et al. 2019).

Tsai, Hung, Schulter, Sohn, Yang and Chandraker, "Learning to Adapt Structured Output Space
for Semantic Segmentation", CVPR 2018 (single-level variant); Wang et al. 2019, section 2.3,
eqs. 5-6 (mask-level discriminator ``D_m``).

A PatchGAN discriminator ``D`` sees softmax maps and learns to tell source (label 1) from
target (label 0) predictions; the segmenter learns to segment the source and to make its
target predictions look like source ones. One training step:

* **Step 1: update the segmenter with D frozen**:
  ``L_seg(source) + lambda_adv * BCE(D(softmax(G(x_t))), 1)``.
* **Step 2: update D on detached inputs**: ``0.5 * (BCE(D(p_s), 1) + BCE(D(p_t), 0))`` on
  the step-1 softmax maps, detached, so nothing reaches the segmenter.

Defaults follow AdaptSegNet's single-level setting: ``lambda_adv`` 0.001, D trained with
Adam (lr 1e-4, betas 0.9/0.99) at a constant learning rate (AdaptSegNet also decays D's lr
polynomially; a constant rate is used for every discriminator here, as in Wang et al.).
The segmenter's optimiser, schedule and supervised loss come from ``train`` as for
``source-only``. D's widths are ``method.d_channels`` (the paper's 64/128/256/256/1 by
default; halve them for CPU runs).

:class:`AdversarialMethod` holds the two-step logic shared by ``adaptseg``, ``advent`` and
``adanet``: a method names its *alignments* (a discriminator path and its inputs) and the
base class runs step 1 and step 2 for all of them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from segshift.errors import SegshiftError
from segshift.losses.adversarial import d_loss, frozen, g_loss
from segshift.methods.base import Batch, register
from segshift.methods.source_only import SourceOnly
from segshift.nets import PatchDiscriminator

Tensors = torch.Tensor | list[torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Alignment:
    """One adversarial alignment.

    Attributes:
        nets: names (in ``Method.nets``) of the discriminator-side networks applied in
            order; the first receives the alignment input (a tensor, or a list of
            multi-level features for GFRM). They share the optimiser named ``optimizer``.
        lambda_g: weight of the segmenter's adversarial loss (step 1).
        lambda_d: weight of the discriminator loss (step 2).
    """

    nets: tuple[str, ...]
    lambda_g: float
    lambda_d: float = 1.0

    @property
    def optimizer(self) -> str:
        return self.nets[-1]


def _detach(x: Tensors) -> Tensors:
    return [t.detach() for t in x] if isinstance(x, (list, tuple)) else x.detach()


def _cat(a: Tensors, b: Tensors) -> Tensors:
    if isinstance(a, (list, tuple)):
        return [torch.cat([u, v]) for u, v in zip(a, b)]
    return torch.cat([a, b])


def _floats(values: dict[str, Any]) -> dict[str, float]:
    """Every logged value as a plain float (NaN/Inf kept, so the engine's divergence check sees them)."""
    return {k: float(v) for k, v in values.items()}


class AdversarialMethod(SourceOnly):
    """Supervised source loss plus adversarial alignments, in two plainly separated steps.

    Subclasses implement :meth:`build_alignments` (create the discriminator networks, return
    the :class:`Alignment` by name) and :meth:`forward_passes` (the segmenter's forward
    passes under ``self.autocast()``: source logits, target logits and, for each alignment,
    its source and target inputs). Optional :meth:`target_losses` adds non-adversarial
    target terms (ADVENT's MinEnt).
    """

    uses_target = True

    def build(self) -> None:
        super().build()  # segmenter, supervised loss, segmenter optimiser and schedule
        self.alignments: dict[str, Alignment] = self.build_alignments()
        betas = tuple(float(b) for b in self.hp.get("d_betas", (0.9, 0.99)))
        for al in self.alignments.values():
            params = [p for n in al.nets for p in self.nets[n].parameters()]
            self.optimizers[al.optimizer] = torch.optim.Adam(
                params, lr=float(self.hp["d_lr"]), betas=betas, weight_decay=float(self.hp.get("d_weight_decay", 0.0))
            )

    def build_alignments(self) -> dict[str, Alignment]:  # pragma: no cover - abstract
        raise NotImplementedError

    def discriminator(self, in_channels: int) -> PatchDiscriminator:
        """A PatchGAN with ``method.d_channels`` widths (last entry: score channels)."""
        return PatchDiscriminator.from_widths(in_channels, self.hp.get("d_channels", (64, 128, 256, 256, 1)))

    def discriminator_nets(self) -> list[nn.Module]:
        return [self.nets[n] for al in self.alignments.values() for n in al.nets]

    def inference_nets(self):  # noqa: ANN201 - iterator of names
        yield "seg"  # prediction needs only the segmenter

    # -- forward passes ---------------------------------------------------------------
    def needs_target(self) -> bool:
        return bool(self.alignments)

    def forward_passes(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, tuple[Tensors, Tensors]]]:  # pragma: no cover
        """``(source_logits, target_logits or None, {alignment: (source_input, target_input)})``."""
        raise NotImplementedError

    def target_losses(self, target_logits: torch.Tensor | None) -> dict[str, tuple[float, torch.Tensor]]:
        """Extra target terms ``{name: (weight, loss)}`` of step 1 (none by default)."""
        return {}

    def critic(self, name: str, x: Tensors, wrapped: bool) -> torch.Tensor:
        """Discriminator scores of alignment ``name`` for input ``x``.

        ``wrapped`` uses the DDP-wrapped networks (step 2, where D's gradients are
        averaged across processes); step 1 uses the plain modules, frozen, since only the
        segmenter is updated there.
        """
        for n in self.alignments[name].nets:
            net = self.net(n) if wrapped else self.nets[n]
            x = net(self.prepare(x) if isinstance(x, torch.Tensor) else x)
        return x

    # -- one training step ----------------------------------------------------------------
    def segmenter_step(self, batch: Batch) -> tuple[dict[str, float], dict[str, tuple[Tensors, Tensors]]]:
        """Step 1: update the segmenter with every discriminator frozen.

        Returns the logged values and the detached discriminator inputs of step 2.
        """
        opt = self.optimizers["seg"]
        opt.zero_grad(set_to_none=True)
        src_logits, tgt_logits, inputs = self.forward_passes(batch)
        total, parts = self.loss(src_logits.float(), batch.source_label)
        values: dict[str, Any] = {"loss_seg": total.detach(), **parts}
        with frozen(*self.discriminator_nets()):
            for name, al in self.alignments.items():
                with self.autocast():
                    scores = self.critic(name, inputs[name][1], wrapped=False)
                adv = g_loss(scores)  # float32: target should look like source (label 1)
                total = total + al.lambda_g * adv
                values[f"adv_{name}"] = adv.detach()
            for name, (weight, loss) in self.target_losses(tgt_logits).items():
                total = total + weight * loss.float()
                values[name] = loss.detach()
            total.backward()
        opt.step()
        values["loss"] = total.detach()
        return _floats(values), {n: (_detach(s), _detach(t)) for n, (s, t) in inputs.items()}

    def discriminator_step(self, inputs: dict[str, tuple[Tensors, Tensors]]) -> dict[str, float]:
        """Step 2: update each discriminator on detached source (label 1) and target (label 0) inputs."""
        values: dict[str, Any] = {}
        for name, al in self.alignments.items():
            opt = self.optimizers[al.optimizer]
            opt.zero_grad(set_to_none=True)
            src, tgt = inputs[name]
            n_src = (src[0] if isinstance(src, list) else src).shape[0]
            with self.autocast():
                scores = self.critic(name, _cat(src, tgt), wrapped=True).float()  # one pass for both domains
            real, fake = scores[:n_src], scores[n_src:]
            loss = d_loss(real, fake)
            (al.lambda_d * loss).backward()
            opt.step()
            values[f"loss_{name}"] = loss.detach()
            # share of patches D gets right: ~0.5 when aligned (or D is lost), ~1 when D wins outright
            values[f"acc_{name}"] = 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean()).detach()
        return _floats(values)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        values, d_inputs = self.segmenter_step(batch)  # Step 1: segmenter, D frozen
        values.update(self.discriminator_step(d_inputs))  # Step 2: D on detached inputs
        return values


def check_non_negative(hp: dict[str, Any], *keys: str) -> None:
    for k in keys:
        v = float(hp[k])
        if not math.isfinite(v) or v < 0:
            raise SegshiftError(f"method.{k} must be a finite number >= 0, got {hp[k]!r}")


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities in float32 (the mask discriminator's input)."""
    return torch.softmax(logits.float(), dim=1)


@register
class AdaptSeg(AdversarialMethod):
    name = "adaptseg"
    paper = "Tsai et al. CVPR 2018 (AdaptSegNet); wang2019 MDA"
    summary = "Output-space adversarial alignment: a PatchGAN on softmax maps makes target predictions look like source ones."
    hparams = {
        "lambda_adv": 0.001,
        "d_lr": 0.0001,
        "d_betas": [0.9, 0.99],
        "d_weight_decay": 0.0,
        "d_channels": [64, 128, 256, 256, 1],
    }

    def build_alignments(self) -> dict[str, Alignment]:
        check_non_negative(self.hp, "lambda_adv", "d_lr")
        self.nets["d"] = self.discriminator(self.num_classes)
        return {"d": Alignment(("d",), lambda_g=float(self.hp["lambda_adv"]))}

    def d_input(self, logits: torch.Tensor) -> torch.Tensor:
        """What D sees of a prediction: softmax maps."""
        return softmax(logits)

    def forward_passes(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, tuple[Tensors, Tensors]]]:
        seg = self.net("seg")
        with self.autocast():
            src_logits = seg(self.prepare(batch.source_image))
            tgt_logits = seg(self.prepare(batch.target_image)) if self.needs_target() else None
        inputs = {n: (self.d_input(src_logits), self.d_input(tgt_logits)) for n in self.alignments}
        return src_logits, tgt_logits, inputs
