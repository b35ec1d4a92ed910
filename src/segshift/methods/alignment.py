"""Adversarial alignment, once: a discriminator with its optimiser and its two updates, and their schedule.

Used by ``adaptseg`` (``D`` on softmax maps), ``advent`` (``D`` on self-information maps),
``adanet`` (``D_m`` on softmax maps, ``D_f`` behind GFRM on multi-level features) and
``attent`` (``D_E`` on entropy maps). After TLlib's alignment modules
(``tllib/alignment/advent.py``): the module owns its discriminator, so a method's step
reads as the papers do.

* :class:`AdversarialAlignment` owns a discriminator path (one network, or several applied
  in order, e.g. adanet's ``GFRM -> D_f``), registered into ``method.nets`` (so checkpoints
  and DDP see it), and its Adam optimiser, registered into ``method.optimizers`` under the
  alignment's name (or an optimiser several alignments share: the translator's ``d_img``).
  Its GAN objective is a :class:`~segshift.losses.adversarial.GanObjective` (``L_G``, ``L_D``;
  BCE by default, least squares for the translators). Two calls make a step:

  1. :meth:`~AdversarialAlignment.generator_loss`: the segmenter's adversarial term
     ``lambda_g * w * L_G(D(target))`` (target scored as source), with D frozen (its
     parameters receive no gradient; the gradient flows through D into the segmenter);
  2. :meth:`~AdversarialAlignment.discriminator_step`: D's update on *detached* source
     (label 1) and target (label 0) inputs, ``lambda_d * L_D(D(s), D(t))`` (BCE:
     ``0.5 (BCE(D(s), 1) + BCE(D(t), 0))``); nothing reaches the segmenter.

  Cost: D's weights do not change between the two calls and the target input is the same,
  so D's scores of the target are computed once, in step 1, and serve both losses: each
  loss is back-propagated into its own parameters only
  (:meth:`~segshift.methods.base.Method.backward`, ``backward(inputs=...)``), so "D frozen"
  builds no gradient of D's parameters in step 1, and step 2 forwards only the source. The
  maths is that of two separate passes (D has no batch statistics); under DDP, or for a path
  with batch norm, the two steps keep their own passes (step 2 one pass over both domains,
  or one pass each with ``joint_pass=False``).

* :class:`AlignmentSchedule` gives ``w``, the weight of every alignment term of a step:

  - **discriminator warm-up**: for the first ``d_warmup_steps`` steps of the stage
    ``w = 0``: only the discriminators learn, so that a warm-started segmenter is not
    pushed around by an untrained discriminator's random gradients;
  - **ramp-up**: over the next ``ramp_steps`` steps ``w = exp(-5 (1 - t)^2)``,
    ``t = (step - d_warmup_steps) / ramp_steps``, the sigmoid-shaped ramp of Laine and
    Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017 (section 3.1 and
    appendix A);
  - then ``w = 1``: the papers' full lambda.

  The defaults (:data:`SCHEDULE_HPARAMS`: ``d_warmup_steps`` 50, ``ramp_steps`` 100) are
  segshift's, not from any of the papers (which train segmenter and discriminators
  together from the first step at full weight); set both to 0 for the papers' setting.
  The translation methods apply the same schedule to their generators' adversarial
  weight (:mod:`segshift.methods.translation`, whose image discriminators are two
  alignments). Methods log ``w_adv`` every step.

* :class:`AdversarialMethod`: supervised source loss plus alignments, the base of
  ``adaptseg``, ``advent`` and ``adanet``: **Step 1: update the segmenter with every D
  frozen; Step 2: update each D on detached inputs.** The segmenter's forward passes go
  through :meth:`~segshift.methods.base.Method.segment`, so ``train.norm_stats`` decides
  the batch statistics (``domain``: each domain its own; ``joint``: one pass over both).

Label convention and losses: :mod:`segshift.losses.adversarial` (source = 1, target = 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from segshift.errors import SegshiftError
from segshift.losses.adversarial import GAN_OBJECTIVES, GanObjective, d_accuracy, frozen
from segshift.methods.base import Batch, Method
from segshift.methods.hparams import HParam, integer, ints, number, numbers
from segshift.methods.source_only import SourceOnly
from segshift.nets import PatchDiscriminator
from segshift.nets.blocks import has_batch_norm

Tensors = torch.Tensor | list[torch.Tensor]
"""A discriminator path's input: one tensor, or a list of multi-level features (GFRM)."""

SCHEDULE_HPARAMS: dict[str, HParam] = {
    "d_warmup_steps": integer(
        50,
        "alignment schedule (segshift's, not the papers'): the first steps of the stage train only "
        "the discriminator(s) (adversarial weight 0)",
        low=0,
    ),
    "ramp_steps": integer(
        100,
        "then the adversarial weight ramps up as exp(-5 (1-t)^2) (Laine & Aila 2017) over this many "
        "steps to its full value (0 and 0: the papers' full weight from step 1)",
        low=0,
    ),
}
"""Hyper-parameters of :class:`AlignmentSchedule`, part of every adversarial and translation method's ``hparams``."""


def discriminator_hparams(
    lr: float = 0.0001, weight_decay: float = 0.0, channels: Sequence[int] = (64, 128, 256, 256, 1)
) -> dict[str, HParam]:
    """The discriminator keys of an :class:`AdversarialMethod` (``d_lr``, ``d_betas``, ``d_weight_decay``, ``d_channels``)."""
    return {
        "d_lr": number(lr, "discriminator Adam learning rate (constant)"),
        "d_betas": numbers([0.9, 0.99], "discriminator Adam betas", length=2, low=0.0, high=0.9999),
        "d_weight_decay": number(weight_decay, "discriminator weight decay"),
        "d_channels": ints(channels, "PatchGAN widths, strides 2,2,2,1,1 (last: score channels); halve them for CPU runs"),
    }


@dataclasses.dataclass(frozen=True)
class AlignmentSchedule:
    """Weight ``w`` in [0, 1] of the alignment terms at each step of a stage (see the module docstring).

    Args:
        d_warmup_steps: steps at the start of the stage with ``w = 0`` (only D learns).
        ramp_steps: steps of the sigmoid ramp-up after the warm-up (0: jump to 1).

    Example:
        >>> s = AlignmentSchedule(d_warmup_steps=2, ramp_steps=4)
        >>> [round(s(k), 3) for k in range(1, 8)]
        [0.0, 0.0, 0.06, 0.287, 0.732, 1.0, 1.0]
    """

    d_warmup_steps: int = SCHEDULE_HPARAMS["d_warmup_steps"].default
    ramp_steps: int = SCHEDULE_HPARAMS["ramp_steps"].default

    @classmethod
    def from_hparams(cls, hp: Mapping[str, Any]) -> AlignmentSchedule:
        """The schedule of a checked ``method:`` section."""
        return cls(int(hp["d_warmup_steps"]), int(hp["ramp_steps"]))

    def __call__(self, step: int) -> float:
        """``w`` at ``step`` (1-based, counted from the start of the stage)."""
        k = step - self.d_warmup_steps
        if k <= 0:
            return 0.0
        if k >= self.ramp_steps:
            return 1.0
        t = k / self.ramp_steps
        return math.exp(-5.0 * (1.0 - t) ** 2)


def _detach(x: Tensors) -> Tensors:
    return [t.detach() for t in x] if isinstance(x, (list, tuple)) else x.detach()


def _cat(a: Tensors, b: Tensors) -> Tensors:
    if isinstance(a, (list, tuple)):
        return [torch.cat([u, v]) for u, v in zip(a, b)]
    return torch.cat([a, b])


def _rows(x: Tensors) -> int:
    return (x[0] if isinstance(x, (list, tuple)) else x).shape[0]


def _tensors(x: Tensors) -> list[torch.Tensor]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _requires_grad(x: Tensors) -> bool:
    return any(t.requires_grad for t in _tensors(x))


def same_input(a: Tensors, b: Tensors) -> bool:
    """Whether two (detached) inputs are views of the same memory, element for element."""
    ta, tb = _tensors(a), _tensors(b)
    return len(ta) == len(tb) and all(
        x.data_ptr() == y.data_ptr() and x.shape == y.shape and x.stride() == y.stride() and x.dtype == y.dtype for x, y in zip(ta, tb)
    )


class AdversarialAlignment:
    """One discriminator path, its optimiser, and the two updates of an adversarial alignment.

    Args:
        method: the method whose ``nets`` and ``optimizers`` receive the path and its optimiser.
        name: the alignment's name: the key of its optimiser and of its logged values
            (``adv_<name>``, ``loss_<name>``, ``d_acc_<name>``, ``grad_ratio_<name>``); by convention the name of
            the path's last network (the discriminator).
        nets: the path's networks by name, in the order they are applied (the first one
            receives the alignment input); registered into ``method.nets``.
        lambda_g: weight of the segmenter's adversarial loss (before the schedule's ``w``).
        lambda_d: weight of the discriminator loss.
        lr, betas, weight_decay: the path's own Adam optimiser (constant lr).
        objective: the GAN objective (default BCE, :data:`~segshift.losses.adversarial.GAN_OBJECTIVES`).
        optimizer: instead of an optimiser of its own, the key of an optimiser of
            ``method.optimizers`` that holds the path's parameters and that several
            alignments share; their owner steps it around :meth:`discriminator_loss`
            (:class:`~segshift.methods.translation.CycleTranslator`).
        joint_pass: where step 2 does not reuse step 1's scores, one pass of the path over
            source and target together (True), or one pass each in one call
            (:meth:`~segshift.methods.base.Method.call_each`; False: each pass has its own batch
            statistics, as CycleGAN's image discriminators).

    Example:
        >>> m = Method.__new__(Method); m.nets, m.optimizers = nn.ModuleDict(), {}
        >>> al = AdversarialAlignment(m, "d", {"d": nn.Conv2d(4, 1, 1)}, lambda_g=0.001, lr=1e-4)
        >>> sorted(m.nets), sorted(m.optimizers)
        (['d'], ['d'])
    """

    def __init__(
        self,
        method: Method,
        name: str,
        nets: Mapping[str, nn.Module],
        *,
        lambda_g: float,
        lambda_d: float = 1.0,
        lr: float | None = None,
        betas: Sequence[float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        objective: GanObjective = GAN_OBJECTIVES["bce"],
        optimizer: str | None = None,
        joint_pass: bool = True,
    ) -> None:
        if not nets:
            raise ValueError("an alignment needs at least one network")
        self.method = method
        self.name = name
        self.net_names = tuple(nets)
        self.lambda_g = float(lambda_g)
        self.lambda_d = float(lambda_d)
        self.objective = objective
        self.joint_pass = joint_pass
        for n, module in nets.items():
            method.nets[n] = module
        if optimizer is None:
            if lr is None:
                raise ValueError(f"alignment {name!r}: give lr for its own optimiser, or the key of a shared one")
            params = [p for module in nets.values() for p in module.parameters()]
            method.optimizers[name] = torch.optim.Adam(
                params, lr=float(lr), betas=tuple(float(b) for b in betas), weight_decay=float(weight_decay)
            )
            optimizer = name
        elif optimizer not in method.optimizers:
            raise ValueError(f"alignment {name!r}: no optimiser {optimizer!r} to share")
        self.optimizer = optimizer
        """The key of the optimiser of ``method.optimizers`` that updates the path."""
        self._shared: tuple[torch.Tensor, Tensors, bool] | None = None  # step 1's target scores (D live), their input, linked

    def shares_target_pass(self) -> bool:
        """Whether step 2 reuses step 1's target scores: not under DDP (step 2 goes through the
        wrapped networks, step 1 through the plain ones) nor with batch norm in the path.
        """
        m = self.method
        return not any(n in m._wrapped for n in self.net_names) and not has_batch_norm(*self.modules)

    @property
    def holds_graph(self) -> bool:
        """Whether step 1's shared target scores hang on the segmenter's graph: the segmenter's
        backward must then keep the graph for step 2 (``retain_graph``).
        """
        return self._shared is not None and self._shared[2]

    @property
    def modules(self) -> list[nn.Module]:
        """The path's networks (unwrapped), in order."""
        return [self.method.nets[n] for n in self.net_names]

    def critic(self, x: Tensors, wrapped: bool) -> torch.Tensor:
        """Raw discriminator scores of ``x`` (each network through :meth:`~segshift.methods.base.Method.call`).

        ``wrapped`` uses the DDP-wrapped networks (the discriminator update, whose gradients
        are averaged across processes); the generator side uses the plain modules (frozen, or
        live with its backward restricted to the segmenter when step 2 shares the pass).
        """
        m = self.method
        for n in self.net_names:
            x = m.call(n if wrapped else m.nets[n], x)
        return x

    def _critic_each(self, *inputs: Tensors) -> list[torch.Tensor]:
        """The wrapped path's scores of each input in its own pass, in one :meth:`~segshift.methods.base.Method.call_each`."""
        m = self.method
        nets = [m.net(n) for n in self.net_names]

        def path(x: Tensors) -> torch.Tensor:
            for net in nets:
                x = net(x)
            return x

        return m.call_each(nets[0] if len(nets) == 1 else path, *inputs)

    def adversarial_loss(self, target: Tensors, linked: bool = True) -> torch.Tensor:
        """``L_G(D(target))``, unweighted, with D frozen: the loss of step 1 before its weights.

        With ``linked`` the gradient flows through D into ``target``; otherwise the loss
        carries no gradient at all (a weight of 0). Where step 2 may share the pass
        (:meth:`shares_target_pass`), D runs live and its scores are kept for step 2; the
        loss's backward must then reach the segmenter's (generators') parameters only
        (:meth:`~segshift.methods.base.Method.backward`).
        """
        self._shared = None
        if self.shares_target_pass():  # one pass, D live: the segmenter's backward reaches only its own parameters
            linked = linked and _requires_grad(target)
            scores = self.critic(target if linked else _detach(target), wrapped=False)
            self._shared = (scores, _detach(target), linked)
            return self.objective.g_loss(scores)  # float32: target should look like source
        grad = contextlib.nullcontext() if linked else torch.no_grad()
        with frozen(*self.modules), grad:
            return self.objective.g_loss(self.critic(target, wrapped=False))  # float32: target should look like source

    def generator_loss(self, target: Tensors, weight: float = 1.0) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Step 1 (the segmenter's side): ``lambda_g * weight * L_G(D(target))`` with D frozen.

        Returns ``(term, adv)``: the weighted term to add to the segmenter's loss (``None``
        when the weight is 0, e.g. during the discriminator warm-up: then no adversarial
        gradient exists at all) and the unweighted loss, detached, for the log.
        """
        w = self.lambda_g * float(weight)
        adv = self.adversarial_loss(target, linked=w > 0)
        return (w * adv if w > 0 else None), adv.detach()

    def discriminator_loss(self, source: Tensors, target: Tensors) -> tuple[torch.Tensor, dict[str, float], bool]:
        """Step 2's loss ``lambda_d * L_D(D(source), D(target))`` on detached inputs, without the update.

        Returns the loss, the logged values (``loss_<name>``, and ``d_acc_<name>``: D's
        accuracy before its update, ~0.5 when aligned or when D is lost, ~1 when D wins
        outright) and whether the loss reuses step 1's scores: its backward must then be
        restricted to the path's parameters (:meth:`~segshift.methods.base.Method.backward`).
        """
        source, target = _detach(source), _detach(target)
        shared, self._shared = self._shared, None
        reused = shared is not None and same_input(shared[1], target)
        if reused:  # D(target) of step 1: same weights, same input
            real, fake = self.critic(source, wrapped=True).float(), shared[0].float()
        elif self.joint_pass:
            n = _rows(source)
            scores = self.critic(_cat(source, target), wrapped=True).float()  # one pass for both domains
            real, fake = scores[:n], scores[n:]
        else:
            real, fake = (s.float() for s in self._critic_each(source, target))
        loss = self.objective.d_loss(real, fake)
        values = {f"loss_{self.name}": float(loss.detach()), f"d_acc_{self.name}": d_accuracy(real, fake, self.objective.threshold)}
        return self.lambda_d * loss, values, reused

    def discriminator_step(self, source: Tensors, target: Tensors) -> dict[str, float]:
        """Step 2: one update of the path on detached source (label 1) and target (label 0) inputs."""
        opt = self.method.optimizers[self.optimizer]
        opt.zero_grad(set_to_none=True)
        loss, values, reused = self.discriminator_loss(source, target)
        backward_discriminators(self.method, self.optimizer, loss, reused)
        opt.step()
        return values


def backward_discriminators(method: Method, optimizer: str, loss: torch.Tensor, reused: bool) -> None:
    """Back-propagate a discriminator loss: into the parameters of ``method.optimizers[optimizer]``
    only where it reuses step 1's scores (whose graph reaches the segmenter or generators), a
    plain backward otherwise (its inputs are detached).
    """
    if reused:
        method.backward(loss, optimizer)
    else:
        loss.backward()


def fitted(d: PatchDiscriminator, method: Method, what: str, downsample: int = 1, hint: str = "") -> PatchDiscriminator:
    """``d`` if the crop (``data.preprocess.crop_size``, divided by ``downsample``) leaves it a
    non-empty score map; otherwise a :class:`SegshiftError` naming the sizes, when the method is
    built, not at its first step.
    """
    crop = [int(c) for c in method.cfg["data"]["preprocess"]["crop_size"]]
    size = [max(1, c // downsample) for c in crop]
    if any(s < 1 for s in d.output_size(size)):
        seen = (
            f"{'x'.join(map(str, size))} (crop {'x'.join(map(str, crop))} / {downsample})" if downsample > 1 else "x".join(map(str, size))
        )
        raise SegshiftError(
            f"{method.name}: {what} sees {seen}, too small for its PatchGAN ({len(d.strides)} layers, strides "
            f"{', '.join(map(str, d.strides))}, kernel {d.kernel_size}): use a larger data.preprocess.crop_size"
            f"{hint} or fewer layers"
        )
    return d


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities in float32 (the mask discriminator's input)."""
    return torch.softmax(logits.float(), dim=1)


class AdversarialMethod(SourceOnly):
    """Supervised source loss plus adversarial alignments, in two plainly separated steps.

    Subclasses implement :meth:`build_alignments` (create the :class:`AdversarialAlignment`
    objects, usually with :meth:`align`) and :meth:`forward_passes` (the segmenter's outputs
    via :meth:`segment` and, for each alignment, its source and target inputs). Optional
    :meth:`target_losses` adds non-adversarial target terms (ADVENT's MinEnt), weighted by
    the schedule like the adversarial ones.

    Hyper-parameters every subclass declares: :func:`discriminator_hparams` and
    :data:`SCHEDULE_HPARAMS`. The discriminators are training-only networks: they are built
    with the optimisers (:meth:`build_optimizers`), never for prediction.
    """

    uses_target = True
    hparams = {**discriminator_hparams(), **SCHEDULE_HPARAMS}

    def build_optimizers(self) -> None:
        super().build_optimizers()  # supervised loss, segmenter optimiser and schedule
        self.schedule = AlignmentSchedule.from_hparams(self.hp)
        self.alignments: dict[str, AdversarialAlignment] = self.build_alignments()

    def build_alignments(self) -> dict[str, AdversarialAlignment]:  # pragma: no cover - abstract
        raise NotImplementedError

    def align(self, name: str, nets: Mapping[str, nn.Module], lambda_g: float, lambda_d: float = 1.0) -> AdversarialAlignment:
        """An alignment with this method's discriminator optimiser settings (``d_lr``, ``d_betas``, ``d_weight_decay``)."""
        return AdversarialAlignment(
            self,
            name,
            nets,
            lambda_g=lambda_g,
            lambda_d=lambda_d,
            lr=float(self.hp["d_lr"]),
            betas=self.hp["d_betas"],
            weight_decay=float(self.hp["d_weight_decay"]),
        )

    def discriminator(self, in_channels: int, what: str = "the discriminator", downsample: int = 1, hint: str = "") -> PatchDiscriminator:
        """A PatchGAN with ``method.d_channels`` widths (last entry: score channels), checked to fit
        its input (the crop, divided by ``downsample``; :func:`fitted`).
        """
        return fitted(PatchDiscriminator.from_widths(in_channels, self.hp["d_channels"]), self, what, downsample, hint)

    def discriminator_nets(self) -> list[nn.Module]:
        return [m for al in self.alignments.values() for m in al.modules]

    def inference_nets(self):  # noqa: ANN201 - iterator of names
        yield "seg"  # prediction needs only the segmenter

    # -- forward passes ---------------------------------------------------------------
    def needs_target(self) -> bool:
        return bool(self.alignments)

    def forward_passes(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, tuple[Tensors, Tensors]]]:  # pragma: no cover
        """``(source_logits, target_logits or None, {alignment: (source_input, target_input)})``."""
        raise NotImplementedError

    def target_losses(self, target_logits: torch.Tensor | None) -> dict[str, tuple[float, torch.Tensor]]:
        """Extra target terms ``{name: (weight, loss)}`` of step 1 (none by default)."""
        return {}

    # -- one training step ----------------------------------------------------------------
    def segmenter_step(self, batch: Batch, step: int) -> tuple[dict[str, float], dict[str, tuple[Tensors, Tensors]]]:
        """Step 1: update the segmenter with every discriminator frozen.

        Returns the logged values and the detached (source, target) inputs of step 2.
        """
        src_logits, tgt_logits, inputs = self.forward_passes(batch)
        w = self.schedule(step)
        terms: dict[str, tuple[torch.Tensor | None, Any]] = {}
        for name, al in self.alignments.items():
            terms[f"adv_{name}"] = al.generator_loss(inputs[name][1], w)
        for name, (weight, loss) in self.target_losses(tgt_logits).items():
            terms[name] = (weight * w * loss.float() if weight * w > 0 else None, loss)
        values = self.segmenter_update(src_logits, batch.source_label, batch, terms)
        if tgt_logits is not None:
            values["w_adv"] = w
        return values, {n: (_detach(s), _detach(t)) for n, (s, t) in inputs.items()}

    def segmenter_keeps_graph(self) -> bool:
        """A discriminator's step-1 target pass is shared with its step 2."""
        return any(al.holds_graph for al in self.alignments.values())

    def discriminator_step(self, inputs: dict[str, tuple[Tensors, Tensors]]) -> dict[str, float]:
        """Step 2: update each discriminator on detached source (label 1) and target (label 0) inputs."""
        values: dict[str, float] = {}
        for name, al in self.alignments.items():
            values.update(al.discriminator_step(*inputs[name]))
        return values

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        values, d_inputs = self.segmenter_step(batch, step)  # Step 1: segmenter, D frozen
        values.update(self.discriminator_step(d_inputs))  # Step 2: D on detached inputs
        return values
