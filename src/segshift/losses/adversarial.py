"""GAN losses of the adversarial domain-adaptation methods, and freezing a discriminator.

Label convention (used by every adversarial method in segshift): **source = 1 ("real"),
target = 0 ("fake")**. The discriminator learns to tell source (1) from target (0) inputs;
the segmenter is trained to make *target* inputs score as *source* (label 1), i.e. "target
should look like source". This is the convention of Wang et al. 2019 (eqs. 3-6: ``log D``
on source, ``log(1 - D)`` on target, ``log D`` on target for the generator) and of AttENT
(Li et al. 2021, ``L_D(E_xs, 1) + L_D(E_xt, 0)``, ``L_adv = L_D(E_xt, 1)``); AdaptSegNet's
code uses the opposite labels, which is the same game with the sign of D flipped.

:func:`d_loss` and :func:`g_loss` take raw discriminator scores (logits, any shape, e.g.
PatchGAN maps) and use ``binary_cross_entropy_with_logits``, computed in float32 (numerically
stable for large scores, also under bf16 autocast), averaged over patches and batch.

A :class:`GanObjective` bundles a discriminator loss, a generator loss and the score halfway
between the labels; :data:`GAN_OBJECTIVES` names them (``bce``, ``lsgan``), and every
adversarial update (:class:`~segshift.methods.alignment.AdversarialAlignment`) takes one, so
a new GAN loss is one entry there.

Example:
    >>> import torch
    >>> round(float(g_loss(torch.zeros(2, 1, 4, 4))), 4)  # ln 2: D undecided
    0.6931
    >>> round(float(d_loss(torch.full((1,), 20.0), torch.full((1,), -20.0))), 4)  # D certain and right
    0.0
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GAN_OBJECTIVES",
    "GAN_THRESHOLDS",
    "SOURCE_LABEL",
    "TARGET_LABEL",
    "GanObjective",
    "bce_with_logits",
    "d_accuracy",
    "d_loss",
    "frozen",
    "g_loss",
    "gan_objective",
    "lsgan_d_loss",
    "lsgan_g_loss",
    "set_requires_grad",
]

SOURCE_LABEL = 1.0
"""Discriminator label of source inputs ("real")."""
TARGET_LABEL = 0.0
"""Discriminator label of target inputs ("fake")."""


def bce_with_logits(logits: torch.Tensor, label: float) -> torch.Tensor:
    """Mean binary cross-entropy of raw scores against a constant label, in float32."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(label)))


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: source scores towards 1, target scores towards 0.

    ``0.5 * (BCE(D(source), 1) + BCE(D(target), 0))``: the average of the two halves (as
    AdaptSegNet and ADVENT do), so an undecided discriminator scores ``ln 2`` like
    :func:`g_loss`. Pass *detached* inputs' scores: the discriminator step must not reach
    the segmenter.

    Args:
        real_logits: discriminator scores of source inputs (label 1).
        fake_logits: discriminator scores of target inputs (label 0).
    """
    return 0.5 * (bce_with_logits(real_logits, SOURCE_LABEL) + bce_with_logits(fake_logits, TARGET_LABEL))


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Adversarial loss of the segmenter: target scores towards the *source* label 1.

    ``BCE(D(target), 1)`` (the non-saturating GAN loss, eq. 4 and eq. 6 of Wang et al.
    2019). Compute ``fake_logits`` with the discriminator frozen (:func:`frozen`), so only
    the segmenter receives gradients.
    """
    return bce_with_logits(fake_logits, SOURCE_LABEL)


def d_accuracy(real_scores: torch.Tensor, fake_scores: torch.Tensor, threshold: float = 0.0) -> float:
    """A discriminator's balanced accuracy: ``0.5 (share of real patches scored above threshold
    + share of fake patches scored below it)``, in [0, 1].

    ``threshold`` is the score halfway between the two labels: 0 for raw BCE logits, 0.5 for
    least-squares scores. 0.5 is chance (aligned domains, or a lost discriminator), 1 a
    discriminator that tells every patch apart.

    Example:
        >>> d_accuracy(torch.tensor([2.0, -1.0]), torch.tensor([-3.0, -0.5, -2.0, 1.0]))
        0.625
    """
    real = (real_scores.detach().float() > threshold).float().mean()
    fake = (fake_scores.detach().float() < threshold).float().mean()
    return float(0.5 * (real + fake))


def lsgan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss (Mao et al. 2017, as CycleGAN): ``0.5 (E(D(real)-1)^2 + E D(fake)^2)``."""
    return 0.5 * ((real_logits.float() - 1) ** 2).mean() + 0.5 * (fake_logits.float() ** 2).mean()


def lsgan_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss: ``E (D(G(x)) - 1)^2``."""
    return ((fake_logits.float() - 1) ** 2).mean()


@dataclasses.dataclass(frozen=True)
class GanObjective:
    """A GAN objective: what a discriminator and the network it judges each minimise.

    Attributes:
        d_loss: ``d_loss(real_scores, fake_scores)``, the discriminator's loss (real, i.e.
            source, towards the real label; fake, i.e. target or translated, towards the other).
        g_loss: ``g_loss(fake_scores)``, the loss of the network that makes the fake inputs
            (segmenter or generator): fake scores towards the real label.
        threshold: the score halfway between the two labels (:func:`d_accuracy`).

    Example:
        >>> o = GAN_OBJECTIVES["lsgan"]
        >>> float(o.g_loss(torch.ones(3))), o.threshold
        (0.0, 0.5)
    """

    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g_loss: Callable[[torch.Tensor], torch.Tensor]
    threshold: float


GAN_OBJECTIVES: dict[str, GanObjective] = {
    "lsgan": GanObjective(lsgan_d_loss, lsgan_g_loss, 0.5),
    "bce": GanObjective(d_loss, g_loss, 0.0),
}
"""The GAN objectives by name: ``bce`` (non-saturating, on logits) and ``lsgan`` (least squares)."""

GAN_THRESHOLDS = {name: o.threshold for name, o in GAN_OBJECTIVES.items()}
"""The discriminator score halfway between the labels, per GAN objective (:func:`d_accuracy`)."""


def gan_objective(mode: str) -> GanObjective:
    """The :class:`GanObjective` named ``mode`` (a key of :data:`GAN_OBJECTIVES`)."""
    if mode not in GAN_OBJECTIVES:
        raise ValueError(f"GAN loss must be one of {', '.join(GAN_OBJECTIVES)}, got {mode!r}")
    return GAN_OBJECTIVES[mode]


def set_requires_grad(modules: nn.Module | list[nn.Module] | tuple[nn.Module, ...], flag: bool) -> None:
    """``requires_grad_(flag)`` on every parameter of ``modules``."""
    for m in modules if isinstance(modules, (list, tuple)) else [modules]:
        m.requires_grad_(flag)


@contextlib.contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Freeze the parameters of ``modules`` inside the block (``requires_grad_(False)``).

    Gradients still flow *through* a frozen module to its inputs, but none accumulate in
    its parameters: the "update the segmenter with D frozen" step. On exit every parameter
    gets back its own previous ``requires_grad`` flag (also when the block raises), so
    parameters frozen on purpose elsewhere stay frozen. ``None`` entries are ignored.

    Example:
        >>> d = nn.Linear(2, 1)
        >>> with frozen(d):
        ...     d.weight.requires_grad
        False
        >>> d.weight.requires_grad
        True
    """
    params = [p for m in modules if m is not None for p in m.parameters()]
    saved = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)
