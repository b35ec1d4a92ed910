"""Image-to-image generators of the translation methods (CycleGAN, Unet-GAN, AttENT), 2D or 3D.

:class:`ResnetGenerator` is the CycleGAN generator (Zhu et al., ICCV 2017; Johnson et al.
2016): a 7x7 stem, ``n_down`` stride-2 convolutions, ``n_blocks`` residual blocks, as many
up-sampling stages and a 7x7 output convolution, instance norm and ReLU throughout.

With ``attention=True`` it is the AttENT generator (Li et al. 2021, "Attention-aware Image
Alignment in the Pixel Space"): skip connections join each encoder stage to the decoder
stage of the same size, and an attention gate filters each skip,
``AG = f * sigma_2(W_theta^T sigma_1(W_f^T f + b_f + W_g^T g + b_g) + b_theta)`` with ``f``
the encoder feature, ``g`` the up-sampled decoder signal, ``sigma_1`` ReLU and ``sigma_2``
the sigmoid. The paper gives no kernel sizes; the ``W`` are read as 1x1 convolutions
(Oktay et al.'s additive gate, which the formula is) via
:class:`~segshift.nets.blocks.AttentionGate` with ``kernel_size=1``. The gated skip is
concatenated with the decoder feature and fused by a 3x3 convolution. ``attention=False``
with ``skips=True`` gives the same generator with plain (ungated) skips, for ablation.

Output: segshift images are z-scored (mean 0, sd 1, unbounded), not scaled to [-1, 1], so
the default output is linear rather than CycleGAN's tanh; ``residual=True`` adds the input
to the output and zero-initialises the output convolution, so the generator starts as the
identity and learns a change of appearance.
"""

from __future__ import annotations

import torch
from torch import nn

from segshift.nets.blocks import AttentionGate, ConvNormAct, check_input, check_spatial_dims, layer_type, norm_layer


class _ResBlock(nn.Module):
    """CycleGAN residual block: two 3x3 conv + norm (ReLU between), reflection padding, identity skip."""

    def __init__(self, spatial_dims: int, channels: int, norm: str) -> None:
        super().__init__()
        pad, conv = layer_type("reflectionpad", spatial_dims), layer_type("conv", spatial_dims)
        self.body = nn.Sequential(
            pad(1),
            conv(channels, channels, 3, bias=norm == "none"),
            norm_layer(norm, spatial_dims, channels),
            nn.ReLU(inplace=True),
            pad(1),
            conv(channels, channels, 3, bias=norm == "none"),
            norm_layer(norm, spatial_dims, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator, optionally with (attention-gated) skip connections (AttENT).

    Args:
        in_channels: input image channels.
        out_channels: output image channels.
        ngf: channels of the first stage (doubled at every down-sampling).
        n_down: stride-2 down-sampling stages (inputs must be multiples of ``2 ** n_down``).
        n_blocks: residual blocks at the lowest resolution (CycleGAN: 9 at 256 px, 6 at 128 px).
        norm: ``"instance"`` (CycleGAN), ``"batch"`` or ``"none"``.
        skips: join encoder and decoder stages of the same size.
        attention: gate each skip with an attention gate (implies ``skips``).
        residual: add the input to the output.
        spatial_dims: 2 or 3.

    Example:
        >>> g = ResnetGenerator(1, 1, ngf=8, n_blocks=2, attention=True)
        >>> g(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 32,
        n_down: int = 2,
        n_blocks: int = 6,
        norm: str = "instance",
        skips: bool = False,
        attention: bool = False,
        residual: bool = False,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if n_down < 0 or n_blocks < 0 or ngf < 1:
            raise ValueError(f"ResnetGenerator: ngf >= 1, n_down >= 0, n_blocks >= 0 needed, got {ngf}, {n_down}, {n_blocks}")
        self.n_down, self.residual = int(n_down), bool(residual)
        self.skips = bool(skips or attention)
        self.attention = bool(attention)
        conv, tconv = layer_type("conv", spatial_dims), layer_type("convtranspose", spatial_dims)
        chans = [ngf * 2**i for i in range(n_down + 1)]
        self.stem = ConvNormAct(spatial_dims, in_channels, ngf, kernel_size=7, norm=norm, act="relu")
        self.downs = nn.ModuleList(
            ConvNormAct(spatial_dims, chans[i], chans[i + 1], kernel_size=3, stride=2, padding=1, norm=norm, act="relu")
            for i in range(n_down)
        )
        self.blocks = nn.Sequential(*(_ResBlock(spatial_dims, chans[-1], norm) for _ in range(n_blocks)))
        self.ups = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in reversed(range(n_down)):
            self.ups.append(
                nn.Sequential(
                    tconv(chans[i + 1], chans[i], 3, stride=2, padding=1, output_padding=1, bias=norm == "none"),
                    norm_layer(norm, spatial_dims, chans[i]),
                    nn.ReLU(inplace=True),
                )
            )
            if self.attention:
                self.gates.append(AttentionGate(spatial_dims, chans[i], chans[i], kernel_size=1))
            if self.skips:
                self.fuse.append(ConvNormAct(spatial_dims, 2 * chans[i], chans[i], kernel_size=3, norm=norm, act="relu"))
        self.head = conv(ngf, out_channels, kernel_size=7, padding=3)
        if self.residual:  # start as the identity: the generator learns a change of appearance
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The translated image, same shape as ``x`` (B, in_channels, *spatial)."""
        check_input(x, self.spatial_dims, 2**self.n_down, "ResnetGenerator")
        inp = x
        x = self.stem(x)
        enc = [x]
        for down in self.downs:
            x = down(x)
            enc.append(x)
        x = self.blocks(x)
        for k, up in enumerate(self.ups):
            x = up(x)
            if self.skips:
                skip = enc[self.n_down - 1 - k]
                if self.attention:
                    skip = self.gates[k](skip, x)
                x = self.fuse[k](torch.cat([skip, x], dim=1))
        out = self.head(x)
        return out + inp if self.residual else out
