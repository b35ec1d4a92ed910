"""The plain U-Net (Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for
Biomedical Image Segmentation", MICCAI 2015), 2D or 3D.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from segshift.nets.blocks import DoubleConv, UNetBase, layer_type


class UNet(UNetBase):
    """Plain U-Net: DoubleConv blocks, max-pool down, transposed-conv up, concatenated skips.

    ``len(features) - 1`` poolings; every spatial size of the input must be a multiple of
    ``2 ** (len(features) - 1)`` (16 with the defaults), otherwise :meth:`forward` raises a
    ``ValueError`` that says which multiple. Level ``i`` has ``features[i]`` channels in the
    encoder and the decoder; a 1x1 convolution maps the last decoder stage to
    ``out_channels`` logits (no softmax).

    Widths: the default ``(16, 32, 64, 128, 256)`` (about 1.9 M parameters in 2D) is a
    quarter of the original 64-1024 and is sized for training on a few CPU cores; pass
    ``features=(32, 64, 128, 256, 512)`` or wider on a GPU.

    Args:
        in_channels: input image channels.
        out_channels: number of classes (logit channels).
        features: channel widths per level, shallow to deep (at least 2).
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        act: ``"relu"``, ``"leaky"`` or ``"none"``.
        spatial_dims: 2 or 3.
        dropout: channel dropout after the bottleneck block.

    Example:
        >>> net = UNet(in_channels=1, out_channels=4, features=(8, 16, 32))
        >>> net(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 4, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        norm: str = "batch",
        act: str = "relu",
        spatial_dims: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(spatial_dims, features)
        f = self.features
        self.encoders = nn.ModuleList()
        for i, width in enumerate(f):
            self.encoders.append(
                DoubleConv(
                    spatial_dims,
                    in_channels if i == 0 else f[i - 1],
                    width,
                    norm=norm,
                    act=act,
                    dropout=dropout if i == self.depth else 0.0,
                )
            )
        self.pool = layer_type("maxpool", spatial_dims)(2)
        up = layer_type("convtranspose", spatial_dims)
        # Decoder stages from deep to shallow: stage k maps level depth-k to level depth-k-1.
        self.ups = nn.ModuleList(up(f[i + 1], f[i], kernel_size=2, stride=2) for i in reversed(range(self.depth)))
        self.decoders = nn.ModuleList(DoubleConv(spatial_dims, 2 * f[i], f[i], norm=norm, act=act) for i in reversed(range(self.depth)))
        self.head = layer_type("conv", spatial_dims)(f[0], out_channels, kernel_size=1)
