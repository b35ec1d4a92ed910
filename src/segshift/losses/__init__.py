"""Segmentation losses and prediction-entropy maps.

All losses take logits (B, C, *spatial) and integer targets (B, *spatial); see
:mod:`segshift.losses.segmentation` for the conventions (and absent classes).

Example:
    >>> import torch
    >>> total, parts = HybridLoss({"ce": 0.5, "jaccard": 0.5})(torch.zeros(1, 4, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))
    >>> sorted(parts)
    ['ce', 'jaccard']
"""

from __future__ import annotations

from segshift.losses.adversarial import d_loss, frozen, g_loss, gan_objective
from segshift.losses.segmentation import (
    LOSSES,
    CrossEntropyLoss,
    FocalLoss,
    HybridLoss,
    SoftDiceLoss,
    SoftJaccardLoss,
    consistency_kl,
    cross_entropy,
    entropy_map,
    mean_entropy,
    one_hot,
    self_information_map,
)
from segshift.losses.ssim import StructureSSIMLoss, ssim, ssim_map

__all__ = [
    "LOSSES",
    "CrossEntropyLoss",
    "FocalLoss",
    "HybridLoss",
    "SoftDiceLoss",
    "SoftJaccardLoss",
    "StructureSSIMLoss",
    "consistency_kl",
    "cross_entropy",
    "d_loss",
    "entropy_map",
    "frozen",
    "g_loss",
    "gan_objective",
    "mean_entropy",
    "one_hot",
    "self_information_map",
    "ssim",
    "ssim_map",
]
