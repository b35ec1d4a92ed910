"""Fully convolutional PatchGAN discriminator, 2D or 3D.

After Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks"
(pix2pix), CVPR 2017, as used by CycleGAN (Zhu et al., ICCV 2017), the feature- and
mask-level discriminators of Wang et al. 2019 (section 2.1, "Discriminator") and the
discriminators of AttENT (Li et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segshift.nets.blocks import ConvNormAct, check_spatial_dims


class PatchDiscriminator(nn.Module):
    """PatchGAN: a stack of 4x4 convolutions that scores overlapping patches.

    Wang et al. 2019: "3 convolution layers with stride of 2 and 2 convolution layers with
    stride of 1. The kernel size of all convolution layers is 4x4 and the corresponding
    channel number is 64, 128, 256, 256, 1. Except for the last layer, each convolution
    layer is followed by a leaky ReLU parameterized by 0.2." These are the defaults; the
    padding is 1 (as in pix2pix/CycleGAN), so a stride-2 layer halves an even size and a
    stride-1 layer shrinks a size by one: a 128x128 input gives a 14x14 map
    (128 -> 64 -> 32 -> 16 -> 15 -> 14).

    The output is one raw score (logit) per patch: use it with
    ``binary_cross_entropy_with_logits`` or a least-squares GAN loss.

    Widths: ``channels`` (64, 128, 256, 256, 1) follow the paper (about 1.7 M parameters in
    2D with 4 input channels); halve them for faster CPU training.

    Args:
        in_channels: input channels (class probabilities for a mask discriminator,
            feature channels for a feature discriminator, image channels for CycleGAN).
        channels: output channels of each convolution; the last is the score channels.
        strides: stride of each convolution (same length as ``channels``).
        kernel_size: kernel of every convolution.
        padding: padding of every convolution.
        negative_slope: LeakyReLU slope.
        norm: normalisation after every convolution but the first and the last
            (``"none"`` as in Wang et al. 2019; ``"instance"`` as in CycleGAN).
        spatial_dims: 2 or 3.

    Example:
        >>> PatchDiscriminator(4)(torch.zeros(2, 4, 128, 128)).shape
        torch.Size([2, 1, 14, 14])
    """

    @classmethod
    def from_widths(cls, in_channels: int, channels: Sequence[int], norm: str = "none") -> PatchDiscriminator:
        """A PatchGAN with the given widths and the paper's stride pattern: 2 everywhere but the last two layers (1)."""
        chans = tuple(int(c) for c in channels)
        strides = (2,) * (len(chans) - 2) + (1, 1) if len(chans) >= 3 else (2,) * (len(chans) - 1) + (1,)
        return cls(in_channels, channels=chans, strides=strides, norm=norm)

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (64, 128, 256, 256, 1),
        strides: Sequence[int] = (2, 2, 2, 1, 1),
        kernel_size: int = 4,
        padding: int = 1,
        negative_slope: float = 0.2,
        norm: str = "none",
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        channels = tuple(int(c) for c in channels)
        strides = tuple(int(s) for s in strides)
        if not channels or len(channels) != len(strides):
            raise ValueError(f"PatchDiscriminator: channels and strides need the same non-zero length, got {channels} and {strides}")
        layers: list[nn.Module] = []
        cin = in_channels
        last = len(channels) - 1
        for i, (cout, stride) in enumerate(zip(channels, strides)):
            layers.append(
                ConvNormAct(
                    spatial_dims,
                    cin,
                    cout,
                    kernel_size=kernel_size,
                    stride=stride,
                    padding=padding,
                    norm=norm if 0 < i < last else "none",
                    act="leaky" if i < last else "none",
                    negative_slope=negative_slope,
                    bias=True if i in (0, last) or norm == "none" else None,
                )
            )
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.spatial_dims = spatial_dims
        self.kernel_size = kernel_size
        self.padding = padding
        self.strides = strides

    def output_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """Spatial size of the score map for an input of spatial size ``size``."""
        out = []
        for s in size:
            for stride in self.strides:
                s = (s + 2 * self.padding - self.kernel_size) // stride + 1
            out.append(s)
        return tuple(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch scores (B, channels[-1], *patch grid) of ``x`` (B, in_channels, *spatial).

        Raises:
            ValueError: when the input is too small to leave a non-empty score map.
        """
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"PatchDiscriminator with spatial_dims={self.spatial_dims} expects a "
                f"{self.spatial_dims + 2}-dimensional input; got shape {tuple(x.shape)}"
            )
        if any(s < 1 for s in self.output_size(x.shape[2:])):
            raise ValueError(
                f"PatchDiscriminator: input spatial size {tuple(x.shape[2:])} is too small for "
                f"{len(self.strides)} layers with strides {self.strides}"
            )
        return self.layers(x)
