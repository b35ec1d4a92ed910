"""Segmentation networks, discriminators and their dimension-agnostic blocks.

Segmentation networks (all with ``forward(x) -> logits`` and
``forward_features(x) -> (logits, features deep to shallow)``):

* ``"unet"``: :class:`UNet`, the plain U-Net (Ronneberger et al. 2015).
* ``"resunet"``: :class:`ResidualUNet`, the asymmetric residual LV-Unet (Yan et al. 2019).
* ``"attention_unet"``: :class:`AttentionUNet`, attention U-Net with dilated convolutions
  and pyramid pooling (Wang et al. 2019).

:class:`PatchDiscriminator` is the PatchGAN discriminator of the adversarial methods;
:class:`GroupFeatureRecalibration` is the GFRM of Wang et al. 2019 (multi-level features
fused and recalibrated before the feature discriminator); :class:`ResnetGenerator` is the
CycleGAN generator, with attention-gated skips the AttENT one (Li et al. 2021).
:class:`SDNet` and its parts (:mod:`segshift.nets.sdnet`) are the disentangling network of
Liu et al. 2020; it is not a plain ``image -> logits`` segmenter, so it is not in :data:`NETS`.

Example:
    >>> net = build_net("unet", in_channels=1, out_channels=4, features=(8, 16, 32))
    >>> type(net).__name__
    'UNet'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from segshift.nets.attention_unet import AttentionUNet
from segshift.nets.blocks import (
    AttentionGate,
    ConvNormAct,
    DoubleConv,
    PyramidPooling,
    ResidualBlock,
    act_layer,
    layer_type,
    norm_layer,
)
from segshift.nets.discriminator import PatchDiscriminator
from segshift.nets.generators import ResnetGenerator
from segshift.nets.gfrm import GroupFeatureRecalibration
from segshift.nets.resunet import ResidualUNet
from segshift.nets.sdnet import AdaINDecoder, AnatomyEncoder, ModalityEncoder, SDNet, Segmentor, round_ste
from segshift.nets.unet import UNet

NETS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "resunet": ResidualUNet,
    "attention_unet": AttentionUNet,
}
"""Segmentation networks by name, for :func:`build_net`."""


def build_net(name: str, in_channels: int, out_channels: int, **kwargs: object) -> nn.Module:
    """Build a segmentation network by name.

    Args:
        name: a key of :data:`NETS`.
        in_channels: input image channels.
        out_channels: number of classes.
        **kwargs: further constructor arguments of that network (``features``, ``norm``,
            ``spatial_dims``, ...).

    Returns:
        The network.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
        TypeError: for an argument the network does not take (the message names the
            network and its arguments).
    """
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(sorted(NETS))}")
    factory = NETS[name]
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown and not accepts_any:
        accepted = ", ".join(p for p in params if p not in ("in_channels", "out_channels"))
        raise TypeError(
            f"network {name!r} ({getattr(factory, '__name__', factory)}) got unknown argument(s) "
            f"{', '.join(unknown)}; it accepts {accepted}"
        )
    return factory(in_channels=in_channels, out_channels=out_channels, **kwargs)


__all__ = [
    "NETS",
    "AdaINDecoder",
    "AnatomyEncoder",
    "AttentionGate",
    "AttentionUNet",
    "ConvNormAct",
    "DoubleConv",
    "GroupFeatureRecalibration",
    "ModalityEncoder",
    "PatchDiscriminator",
    "PyramidPooling",
    "ResidualBlock",
    "ResidualUNet",
    "ResnetGenerator",
    "SDNet",
    "Segmentor",
    "UNet",
    "act_layer",
    "build_net",
    "layer_type",
    "norm_layer",
    "round_ste",
]
