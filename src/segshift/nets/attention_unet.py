"""The attention U-Net with dilated convolutions and pyramid pooling of Wang et al. 2019.

Wang, Huang, Chen, Ma, Huang and Ding, "Multi-sequence Cardiac MR Segmentation with
Adversarial Domain Adaptation Network", STACOM (MS-CMRSeg) 2019, section 2.1, Fig. 2 and
Fig. 3(a); after Oktay et al., "Attention U-Net", MIDL 2018, and Zhao et al., "Pyramid Scene
Parsing Network", CVPR 2017.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segshift.nets.blocks import (
    AttentionGate,
    DoubleConv,
    PyramidPooling,
    UNetBase,
    check_input,
    layer_type,
)


class AttentionUNet(UNetBase):
    """Attention U-Net with a dilated, pyramid-pooled bottleneck (Wang et al. 2019).

    Architecture (section 2.1; defaults in brackets):

    * Encoder: a block of two conv3x3-BN-ReLU per level (``features[:-1]``), separated by
      2x2 max pooling; ``len(features) - 1`` poolings [3, as in the paper].
    * After the last pooling: two dilated conv3x3-BN-ReLU with ``dilations`` [(2, 4)] to
      ``features[-1]`` channels, then a :class:`PyramidPooling` module with ``bins``
      [(1, 2, 3, 6)] (PSPNet) that keeps ``features[-1]`` channels.
    * Decoder: per level a 2x2 transposed convolution ("deconvolution"), an
      :class:`AttentionGate` on the skip feature gated by the upsampled decoder feature,
      concatenation and two conv3x3-BN-ReLU.
    * A 1x1 convolution to ``out_channels`` logits. The paper applies a sigmoid to four
      output channels; this network returns logits and the losses apply softmax.

    The paper does not give channel widths; widths here are ``features``. Default
    ``(16, 32, 64, 128)`` (about 0.58 M parameters in 2D) for CPU training; use e.g.
    ``(32, 64, 128, 256)`` or ``(64, 128, 256, 512)`` on a GPU.

    :meth:`forward_features` returns the multi-level decoder features (bottleneck and each
    decoder stage) that the group-wise feature recalibration module (GFRM) of the paper
    upsamples, concatenates and recalibrates before the feature discriminator.

    Args:
        in_channels: input image channels.
        out_channels: number of classes (logit channels).
        features: channel widths per level, shallow to deep; the last is the bottleneck.
        dilations: dilations of the two bottleneck convolutions.
        bins: pyramid pooling output sizes.
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        act: ``"relu"``, ``"leaky"`` or ``"none"``.
        spatial_dims: 2 or 3.
        dropout: channel dropout after the bottleneck convolutions.

    Example:
        >>> net = AttentionUNet(1, 4, features=(8, 16, 32, 64))
        >>> logits, feats = net.forward_features(torch.zeros(2, 1, 64, 64))
        >>> logits.shape, [tuple(f.shape[1:]) for f in feats]
        (torch.Size([2, 4, 64, 64]), [(64, 8, 8), (32, 16, 16), (16, 32, 32), (8, 64, 64)])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        features: Sequence[int] = (16, 32, 64, 128),
        dilations: tuple[int, int] = (2, 4),
        bins: Sequence[int] = (1, 2, 3, 6),
        norm: str = "batch",
        act: str = "relu",
        spatial_dims: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(spatial_dims, features)
        f = self.features
        self.encoders = nn.ModuleList(
            DoubleConv(spatial_dims, in_channels if i == 0 else f[i - 1], f[i], norm=norm, act=act) for i in range(self.depth)
        )
        self.pool = layer_type("maxpool", spatial_dims)(2)
        self.bottleneck = nn.Sequential(
            DoubleConv(spatial_dims, f[-2], f[-1], norm=norm, act=act, dilations=tuple(dilations), dropout=dropout),
            PyramidPooling(spatial_dims, f[-1], bins=bins, norm=norm, act=act),
        )
        up = layer_type("convtranspose", spatial_dims)
        levels = list(reversed(range(self.depth)))
        self.ups = nn.ModuleList(up(f[i + 1], f[i], kernel_size=2, stride=2) for i in levels)
        self.gates = nn.ModuleList(AttentionGate(spatial_dims, f[i], f[i]) for i in levels)
        self.decoders = nn.ModuleList(DoubleConv(spatial_dims, 2 * f[i], f[i], norm=norm, act=act) for i in levels)
        self.head = layer_type("conv", spatial_dims)(f[0], out_channels, kernel_size=1)

    def _run(self, x: torch.Tensor, keep_attention: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        check_input(x, self.spatial_dims, 2**self.depth, "AttentionUNet")
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        feats = [x]
        alphas: list[torch.Tensor] = []
        for k, (up, gate, decoder) in enumerate(zip(self.ups, self.gates, self.decoders)):
            g = up(x)
            skip, alpha = gate(skips[self.depth - 1 - k], g, return_attention=True)
            if keep_attention:
                alphas.append(alpha)
            x = decoder(torch.cat([skip, g], dim=1))
            feats.append(x)
        return self.head(x), feats, alphas

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the multi-level decoder features (for GFRM).

        Args:
            x: input (B, in_channels, *spatial), spatial sizes multiples of ``2 ** depth``.

        Returns:
            ``(logits, features)``: logits (B, out_channels, *spatial) and ``depth + 1``
            features from deep to shallow: the pyramid-pooled bottleneck
            (``features[-1]`` channels at ``1 / 2 ** depth``), then the output of every
            decoder stage, the last at full resolution with ``features[0]`` channels.

        Raises:
            ValueError: for an input of the wrong dimensionality or size.
        """
        logits, feats, _ = self._run(x, keep_attention=False)
        return logits, feats

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Attention coefficients (B, 1, *spatial of the level) of every gate, deep to shallow."""
        return self._run(x, keep_attention=True)[2]
