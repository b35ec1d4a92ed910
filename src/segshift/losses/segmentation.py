"""Supervised segmentation losses and prediction-entropy maps.

Conventions shared by every function and module here:

* ``logits``: raw network outputs (B, C, *spatial), C >= 2 classes, 2D or 3D. Softmax is
  applied inside; computations run in float32 even under bfloat16/float16 autocast.
* ``target``: integer class indices (B, *spatial) in ``[0, C)``; a singleton channel
  (B, 1, *spatial) is accepted and squeezed. Anything else raises ``ValueError``.
* Every loss is differentiable with respect to ``logits`` and returns a scalar.

Classes absent from the batch: the region losses (:class:`SoftDiceLoss`,
:class:`SoftJaccardLoss`) are computed per class over the whole batch (all images and
voxels pooled, "batch Dice", as nnU-Net does), so a class is absent only if it is absent
from every image. With the additive smoothing ``smooth`` (default 1) in numerator and
denominator such a class scores ``smooth / (sum p + smooth)``: about 1 (no loss) when the
network also predicts (almost) nothing of it, and towards 0 (full loss) when it predicts
false positives, so hallucinated structures are still penalised while an absent class
that is correctly left empty costs nothing. With ``smooth=0`` (the plain ratio, used for
hand-checked values) an absent class scores 0 whatever the prediction, because softmax
always leaves some mass on it; use ``smooth > 0`` whenever classes can be absent. (A class
with exactly zero prediction and reference mass is defined as score 1, never NaN.)
Cross-entropy and focal loss are per-voxel and need no special case.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOSSES",
    "CrossEntropyLoss",
    "FocalLoss",
    "HybridLoss",
    "SoftDiceLoss",
    "SoftJaccardLoss",
    "cross_entropy",
    "entropy_map",
    "mean_entropy",
    "one_hot",
    "self_information_map",
]


def _check(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes and values; return float32 logits and (B, *spatial) int64 targets."""
    if logits.ndim < 3:
        raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"logits need at least 2 classes (channels), got {logits.shape[1]}")
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target must be (B, *spatial) = {tuple(logits.shape[:1] + logits.shape[2:])} class indices "
            f"for logits {tuple(logits.shape)}; got shape {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    target = target.long()
    if target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= logits.shape[1]:
            raise ValueError(f"target values must be in [0, {logits.shape[1] - 1}], found [{lo}, {hi}]")
    return logits.float(), target


def _class_weights(weight: Sequence[float] | torch.Tensor | None, n: int, ref: torch.Tensor) -> torch.Tensor | None:
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=torch.float32, device=ref.device)
    if w.shape != (n,):
        raise ValueError(f"class weights need one value per class ({n}), got shape {tuple(w.shape)}")
    return w


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot encode class indices (B, *spatial) to float (B, num_classes, *spatial)."""
    return F.one_hot(target.long(), num_classes).movedim(-1, 1).float()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Mean voxel-wise softmax cross-entropy, eq. (1) of Wang et al. 2019.

    Args:
        logits: (B, C, *spatial).
        target: (B, *spatial) class indices.
        weight: optional per-class weights (C,); the mean is then weighted, i.e. divided by
            the summed weights of the voxels' classes (as :func:`torch.nn.functional.cross_entropy`).

    Returns:
        Scalar loss; ``ln C`` for uniform logits, 0 for infinitely confident correct ones.
    """
    logits, target = _check(logits, target)
    return F.cross_entropy(logits, target, weight=_class_weights(weight, logits.shape[1], logits))


class CrossEntropyLoss(nn.Module):
    """Module form of :func:`cross_entropy`.

    Args:
        weight: optional per-class weights (C,).
    """

    def __init__(self, weight: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = None if weight is None else tuple(float(w) for w in weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` (B, C, *spatial) against ``target`` (B, *spatial)."""
        return cross_entropy(logits, target, self.weight)


class _RegionLoss(nn.Module):
    """Shared machinery of the soft Dice and soft Jaccard losses."""

    def __init__(self, include_background: bool = False, smooth: float = 1.0, batch: bool = True) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.include_background = include_background
        self.smooth = float(smooth)
        self.batch = batch

    def _sums(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, target = _check(logits, target)
        probs = torch.softmax(logits, dim=1)
        onehot = one_hot(target, logits.shape[1])
        if not self.include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        dims = (0, *range(2, probs.ndim)) if self.batch else tuple(range(2, probs.ndim))
        return (probs * onehot).sum(dims), probs.sum(dims), onehot.sum(dims)

    def _ratio(self, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        num, den = num + self.smooth, den + self.smooth
        # Guard against 0/0 (smooth=0, no prediction and no reference mass): perfect score, not NaN.
        empty = den <= 0
        return torch.where(empty, torch.ones_like(num), num / torch.where(empty, torch.ones_like(den), den))


class SoftDiceLoss(_RegionLoss):
    """Soft Dice loss (Milletari et al., "V-Net", 3DV 2016): ``1 - mean_c Dice_c``.

    ``Dice_c = (2 sum(p_c y_c) + smooth) / (sum p_c + sum y_c + smooth)`` with softmax
    probabilities ``p`` and one-hot targets ``y``, sums over the batch and all voxels
    (``batch=True``) or per image (``batch=False``, then also averaged over images). The
    mean runs over the foreground classes (1..C-1) unless ``include_background``. Absent
    classes: see the module docstring.

    Args:
        include_background: also score class 0.
        smooth: additive smoothing of numerator and denominator (>= 0).
        batch: pool the batch before the ratio (True) or average per-image ratios.

    Example:
        >>> logits = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])  # (1, 2, 1, 2)
        >>> round(float(SoftDiceLoss(smooth=0)(logits, torch.tensor([[[0, 1]]]))), 4)
        0.0
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` (B, C, *spatial) against ``target`` (B, *spatial)."""
        inter, psum, ysum = self._sums(logits, target)
        return 1.0 - self._ratio(2.0 * inter, psum + ysum).mean()


class SoftJaccardLoss(_RegionLoss):
    """Soft Jaccard (IoU) loss, eq. (2) of Wang et al. 2019 after Rahman and Wang, ISVC 2016.

    ``1 - mean_c J_c`` with ``J_c = (sum(y p) + smooth) / (sum(y + p - y p) + smooth)``
    (sums over the batch and voxels of class ``c``; soft intersection over soft union).

    Relation to the paper: eq. (2) of Wang et al. writes ``-sum_i sum_c y p / (y + p - y p)``
    with the fraction inside the voxel sum. Read literally, voxel by voxel, it reduces to
    ``-sum over voxels of class c of p`` (the fraction is ``p`` where ``y = 1`` and 0 where
    ``y = 0``), which never penalises false positives. Its cited source, Rahman and Wang,
    "Optimizing Intersection-Over-Union in Deep Neural Networks for Image Segmentation", and
    the authors' stated intent (scale invariance) use the set form above, with the sums in
    numerator and denominator separately; this is implemented, shifted by 1 so that a
    perfect prediction gives 0. Options as :class:`SoftDiceLoss`.

    Args:
        include_background: also score class 0.
        smooth: additive smoothing of numerator and denominator (>= 0).
        batch: pool the batch before the ratio (True) or average per-image ratios.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` (B, C, *spatial) against ``target`` (B, *spatial)."""
        inter, psum, ysum = self._sums(logits, target)
        return 1.0 - self._ratio(inter, psum + ysum - inter).mean()


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    ``-alpha_y (1 - p_y) ** gamma * log p_y`` per voxel (``p_y`` the softmax probability of
    the true class), averaged; with ``alpha`` the average is weighted by ``alpha_y`` (divided
    by the summed ``alpha_y``), so that ``gamma=0`` equals :func:`cross_entropy` with
    ``weight=alpha`` exactly.

    Args:
        gamma: focusing parameter (>= 0); 0 gives cross-entropy.
        alpha: optional per-class weights (C,).
    """

    def __init__(self, gamma: float = 2.0, alpha: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else tuple(float(a) for a in alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` (B, C, *spatial) against ``target`` (B, *spatial)."""
        logits, target = _check(logits, target)
        logp = torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        loss = -logp if self.gamma == 0 else -((1.0 - logp.exp()).clamp_min(0) ** self.gamma) * logp
        alpha = _class_weights(self.alpha, logits.shape[1], logits)
        if alpha is None:
            return loss.mean()
        w = alpha[target]
        return (w * loss).sum() / w.sum().clamp_min(torch.finfo(torch.float32).tiny)


LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "dice": SoftDiceLoss,
    "jaccard": SoftJaccardLoss,
    "focal": FocalLoss,
}
"""Loss components of :class:`HybridLoss` by name."""


class HybridLoss(nn.Module):
    """Weighted sum of named segmentation losses.

    Wang et al. 2019 (section 2.2 and eq. 7) train on the source domain with
    ``0.5 * cross-entropy + 0.5 * Jaccard``: ``HybridLoss({"ce": 0.5, "jaccard": 0.5})``.

    Args:
        weights: component name (a key of :data:`LOSSES`: ``"ce"``, ``"dice"``,
            ``"jaccard"``, ``"focal"``) to its weight (>= 0).
        options: optional constructor arguments per component, e.g.
            ``{"dice": {"include_background": True}, "ce": {"weight": [0.1, 1, 1, 1]}}``.

    Raises:
        ValueError: for no components, an unknown name, a negative weight, or options for a
            component not in ``weights``.

    Example:
        >>> loss = HybridLoss({"ce": 0.5, "jaccard": 0.5})
        >>> total, parts = loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
        >>> sorted(parts)
        ['ce', 'jaccard']
    """

    def __init__(self, weights: Mapping[str, float], options: Mapping[str, Mapping[str, object]] | None = None) -> None:
        super().__init__()
        if not weights:
            raise ValueError(f"HybridLoss needs at least one component; choose from {', '.join(LOSSES)}")
        unknown = [n for n in weights if n not in LOSSES]
        if unknown:
            raise ValueError(f"unknown loss component(s) {', '.join(unknown)}; choose from {', '.join(LOSSES)}")
        negative = [n for n, w in weights.items() if w < 0]
        if negative:
            raise ValueError(f"loss weights must be >= 0; negative for {', '.join(negative)}")
        options = dict(options or {})
        stray = [n for n in options if n not in weights]
        if stray:
            raise ValueError(f"options given for component(s) not in weights: {', '.join(stray)}")
        self.weights = {n: float(w) for n, w in weights.items()}
        self.parts = nn.ModuleDict({n: LOSSES[n](**dict(options.get(n, {}))) for n in self.weights})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its unweighted parts.

        Args:
            logits: (B, C, *spatial).
            target: (B, *spatial) class indices.

        Returns:
            ``(total, parts)``: the differentiable weighted sum, and each component's
            unweighted value by name (detached, for logging).
        """
        total = logits.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        for name, loss in self.parts.items():
            value = loss(logits, target)
            parts[name] = value.detach()
            total = total + self.weights[name] * value
        return total, parts


def entropy_map(logits: torch.Tensor) -> torch.Tensor:
    """Normalised prediction entropy per voxel (ADVENT, Vu et al. CVPR 2019; AttENT, Li et al. 2021).

    ``E = -sum_c p_c log p_c / log C`` with ``p = softmax(logits)``: 1 for uniform
    predictions, 0 for one-hot ones. Computed from ``log_softmax`` in float32, so it is
    finite and differentiable even for saturated logits.

    Args:
        logits: (B, C, *spatial), C >= 2.

    Returns:
        (B, 1, *spatial) values in [0, 1].

    Raises:
        ValueError: for fewer than 2 classes or a tensor without a channel axis.
    """
    return self_information_map(logits, what="entropy_map").sum(dim=1, keepdim=True).clamp(0.0, 1.0)


def self_information_map(logits: torch.Tensor, what: str = "self_information_map") -> torch.Tensor:
    """Normalised weighted self-information maps, one per class (ADVENT, Vu et al. CVPR 2019).

    ``I_c = -p_c log p_c / log C`` with ``p = softmax(logits)``: the per-class terms whose
    channel sum is :func:`entropy_map`. ADVENT's entropy discriminator sees these ``C``
    maps (its ``prob_2_entropy``); AttENT's "entropy space" alignment is the same idea.
    Computed from ``log_softmax`` in float32 (finite and differentiable when saturated).

    Args:
        logits: (B, C, *spatial), C >= 2.

    Returns:
        (B, C, *spatial) values in [0, 1/(e log C)] (each term peaks at ``p = 1/e``).
    """
    if logits.ndim < 2 or logits.shape[1] < 2:
        raise ValueError(f"{what} needs logits (B, C, *spatial) with C >= 2, got shape {tuple(logits.shape)}")
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp) / math.log(logits.shape[1])


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean of :func:`entropy_map` over batch and voxels: the entropy-minimisation loss of ADVENT."""
    return entropy_map(logits).mean()


def consistency_kl(logits: torch.Tensor) -> torch.Tensor:
    """GIN-IPA's consistency loss (Ouyang et al. 2022, eq. 7): KL of each view's prediction to the views' mean.

    ``KL(mean_v p_v || p_v)`` with the authors' reduction (PyTorch ``KLDivLoss``, mean over
    views, classes and pixels; their weight ``lambda_consist`` = 10 is for this reduction).
    The mean is not detached, as in their code.

    Args:
        logits: ``(V, B, C, *spatial)``, the segmenter's logits of ``V`` views of the same images.
    """
    if logits.dim() < 4 or logits.shape[0] < 2:
        raise ValueError(f"consistency_kl needs (V >= 2, B, C, ...) logits, got shape {tuple(logits.shape)}")
    logp = torch.log_softmax(logits.float(), dim=2)
    mean = logp.exp().mean(0, keepdim=True)
    return (mean * (torch.log(mean.clamp_min(1e-12)) - logp)).mean()
