"""The asymmetric residual U-Net ("LV-Unet") of Yan et al. 2019, 2D or 3D.

Yan, Wang, Gu, Huang, Yan, Xia and Tao, "The Domain Shift Problem of Medical Image
Segmentation and Vendor-Adaptation by Unet-GAN", MICCAI 2019, section 2 and Fig. 2(a).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segshift.nets.blocks import ResidualBlock, UNetBase, check_input, layer_type


class ResidualUNet(UNetBase):
    """Asymmetric residual U-Net: more residual blocks per level in the encoder than the decoder.

    Yan et al. 2019 describe LV-Unet only as "an asymmetric encoder-decoder structure" of
    residual blocks (their Fig. 2(a)) and select "the 7th and 9th residual blocks", which lie
    in "the layers after three max-pooling operations", as the encoder features of the
    Unet-GAN feature loss. This implementation reads that as follows:

    * Level ``i`` of the encoder is ``encoder_blocks[i]`` :class:`ResidualBlock` s with
      ``features[i]`` channels (the first one projects the channels), levels separated by
      2x2 max pooling. Encoder blocks are numbered 1, 2, ... from the input.
    * With the defaults ``encoder_blocks=(1, 2, 3, 3, 2)`` the numbering is
      ``#1 | #2 #3 | #4 #5 #6 | #7 #8 #9 | #10 #11``: blocks 7 and 9 are the first and the
      last block after the third pooling (1/8 resolution, ``features[3]`` = 128 channels),
      the paper's choice, which ``feature_blocks=(7, 9)`` selects. Any blocks can be
      selected (:meth:`encoder_features`).
    * Each decoder level upsamples by a 2x2 transposed convolution, concatenates the skip
      and applies ``decoder_blocks`` residual blocks (1 per level by default); a 1x1
      convolution gives the logits.

    Widths: the default ``(16, 32, 64, 128, 256)`` (about 4.0 M parameters in 2D, most in
    the two deepest levels) keeps CPU training practical; widen on a GPU.

    Args:
        in_channels: input image channels.
        out_channels: number of classes (logit channels).
        features: channel widths per level, shallow to deep (at least 2).
        encoder_blocks: residual blocks per encoder level (one entry per level).
        decoder_blocks: residual blocks per decoder level: an int for every level, or one
            entry per decoder stage from deep to shallow (``len(features) - 1``).
        feature_blocks: 1-based encoder block numbers returned by :meth:`encoder_features`.
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        act: ``"relu"``, ``"leaky"`` or ``"none"``.
        spatial_dims: 2 or 3.

    Example:
        >>> net = ResidualUNet(1, 3, features=(8, 16, 32, 64), encoder_blocks=(1, 2, 3, 3))
        >>> [f.shape[1] for f in net.encoder_features(torch.zeros(1, 1, 32, 32))]
        [64, 64]
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        encoder_blocks: Sequence[int] = (1, 2, 3, 3, 2),
        decoder_blocks: int | Sequence[int] = 1,
        feature_blocks: Sequence[int] = (7, 9),
        norm: str = "batch",
        act: str = "relu",
        spatial_dims: int = 2,
    ) -> None:
        super().__init__(spatial_dims, features)
        f = self.features
        enc = tuple(int(n) for n in encoder_blocks)
        if len(enc) != len(f) or any(n < 1 for n in enc):
            raise ValueError(f"ResidualUNet: encoder_blocks needs one positive count per level ({len(f)}), got {encoder_blocks!r}")
        dec = (int(decoder_blocks),) * self.depth if isinstance(decoder_blocks, int) else tuple(decoder_blocks)
        if len(dec) != self.depth or any(int(n) < 1 for n in dec):
            raise ValueError(
                f"ResidualUNet: decoder_blocks must be a positive int or one positive count per decoder "
                f"stage ({self.depth}), got {decoder_blocks!r}"
            )
        self.encoder_blocks = enc
        self.decoder_blocks = tuple(int(n) for n in dec)
        n_blocks = sum(enc)
        sel = tuple(sorted({int(b) for b in feature_blocks}))
        if not sel or sel[0] < 1 or sel[-1] > n_blocks:
            raise ValueError(f"ResidualUNet: feature_blocks must be encoder block numbers in 1..{n_blocks}, got {feature_blocks!r}")
        self.feature_blocks = sel

        self.encoders = nn.ModuleList()
        for i, (width, n) in enumerate(zip(f, enc)):
            cin = in_channels if i == 0 else f[i - 1]
            self.encoders.append(
                nn.Sequential(*(ResidualBlock(spatial_dims, cin if j == 0 else width, width, norm=norm, act=act) for j in range(n)))
            )
        self.pool = layer_type("maxpool", spatial_dims)(2)
        up = layer_type("convtranspose", spatial_dims)
        levels = list(reversed(range(self.depth)))  # decoder stage k works at level depth-1-k
        self.ups = nn.ModuleList(up(f[i + 1], f[i], kernel_size=2, stride=2) for i in levels)
        self.decoders = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(spatial_dims, 2 * f[i] if j == 0 else f[i], f[i], norm=norm, act=act) for j in range(n)))
            for i, n in zip(levels, self.decoder_blocks)
        )
        self.head = layer_type("conv", spatial_dims)(f[0], out_channels, kernel_size=1)

    def block_location(self, block: int) -> tuple[int, int]:
        """``(level, index within level)`` (both 0-based) of the 1-based encoder block number.

        The level is also the number of poolings before the block, e.g. with the defaults
        ``block_location(7) == (3, 0)`` and ``block_location(9) == (3, 2)``.
        """
        if 1 <= block <= sum(self.encoder_blocks):
            start = 0
            for level, n in enumerate(self.encoder_blocks):
                if block <= start + n:
                    return level, block - start - 1
                start += n
        raise ValueError(f"encoder block number must be in 1..{sum(self.encoder_blocks)}, got {block}")

    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the encoder blocks in ``feature_blocks`` (ascending block number).

        Only the encoder up to the deepest selected block is run. These are the
        segmentation-specific features ``f`` of the Unet-GAN feature loss (Yan et al. 2019,
        eq. 4).

        Args:
            x: input (B, in_channels, *spatial), spatial sizes multiples of ``2 ** depth``.

        Returns:
            One tensor per selected block, (B, features[level], *spatial / 2 ** level).
        """
        check_input(x, self.spatial_dims, 2**self.depth, "ResidualUNet")
        wanted = set(self.feature_blocks)
        last = self.feature_blocks[-1]
        out: list[torch.Tensor] = []
        number = 0
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = self.pool(x)
            for block in encoder:
                x = block(x)
                number += 1
                if number in wanted:
                    out.append(x)
                if number == last:
                    return out
        return out  # pragma: no cover - the last selected block is always reached
