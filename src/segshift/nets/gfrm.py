"""Group-wise feature recalibration module (GFRM) of Wang et al. 2019.

Wang, Huang, Chen, Ma, Huang and Ding, "Multi-sequence Cardiac MR Segmentation with
Adversarial Domain Adaptation Network", STACOM 2019, section 2.1 and Fig. 3(b); after the
concurrent spatial and channel squeeze-and-excitation (scSE) of Roy, Navab and Wachinger,
MICCAI 2018.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segshift.nets.blocks import check_spatial_dims, layer_type, resize_to


class GroupFeatureRecalibration(nn.Module):
    """Fuse multi-level features and recalibrate them group by group (GFRM).

    What the paper says, and how it is read here:

    1. "Each feature scale generates one output feature map in the same dimension via
       convolution and upsampling operations": every input level gets its own 1x1
       convolution to ``channels`` channels and is then bilinearly (trilinearly in 3D)
       resized to one common size, by default the largest input size (the finest level;
       full resolution for the decoder features of the U-Nets). The 1x1 convolution comes
       before the resize (same result as after it, up to interpolation, at a fraction of
       the cost).
    2. "We divide features into four groups corresponding to the segmentation categories":
       ``groups`` groups (the number of classes, 4 for background/LV/MYO/RV). The paper does
       not say how channels are assigned to groups. If the concatenation were cut into
       contiguous blocks, with 4 levels and 4 groups each group would be one level, not one
       category; here every level's ``channels`` are cut into ``groups`` slices and group
       ``g`` takes slice ``g`` of *every* level, so each group sees all scales (and nothing
       forces a group to a class: the grouping gives the module the capacity to recalibrate
       per category, as in the paper's motivation).
    3. In each group, a channel-attention branch (global average pooling, a fully
       connected bottleneck ``C_g -> max(1, C_g // reduction) -> C_g`` with ReLU, sigmoid;
       the features multiplied channel-wise) and a spatial-attention branch (1x1
       convolution of the group to one channel, sigmoid; the features multiplied
       pixel-wise); the two products are **added** ("element-wise sum" in Fig. 3), as in
       scSE. The paper says "fully connection layer"; two FC layers with a bottleneck
       follow squeeze-and-excitation (and scSE, which the paper cites); ``reduction=1``
       removes the bottleneck.
    4. The recalibrated groups are concatenated (group-major) to the output.

    The groups are computed together with grouped 1x1 convolutions (one FC/conv per group,
    no mixing between groups).

    Args:
        in_channels: channels of each input level (any order; e.g. the
            ``forward_features`` levels of a U-Net, deep to shallow).
        channels: channels of each level after its 1x1 convolution; a multiple of
            ``groups``. The output has ``len(in_channels) * channels`` channels.
        groups: number of groups (the number of segmentation classes in the paper).
        reduction: channel-attention bottleneck ratio (hidden = group channels // reduction).
        spatial_dims: 2 or 3.

    Example:
        >>> gfrm = GroupFeatureRecalibration([64, 32, 16, 8], channels=8, groups=4)
        >>> feats = [torch.zeros(2, c, s, s) for c, s in [(64, 8), (32, 16), (16, 32), (8, 64)]]
        >>> gfrm(feats).shape
        torch.Size([2, 32, 64, 64])
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 16,
        groups: int = 4,
        reduction: int = 2,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = [int(c) for c in in_channels]
        if not in_channels or any(c < 1 for c in in_channels):
            raise ValueError(f"GFRM needs at least one input level with >= 1 channel, got {in_channels}")
        if groups < 1 or channels < groups or channels % groups:
            raise ValueError(f"GFRM: channels per level ({channels}) must be a positive multiple of groups ({groups})")
        if reduction < 1:
            raise ValueError(f"GFRM: reduction must be >= 1, got {reduction}")
        conv = layer_type("conv", spatial_dims)
        self.in_channels = in_channels
        self.levels = len(in_channels)
        self.channels = int(channels)
        self.groups = int(groups)
        self.out_channels = self.levels * self.channels
        self.group_channels = self.out_channels // self.groups
        hidden = max(1, self.group_channels // int(reduction))
        self.project = nn.ModuleList(conv(c, self.channels, kernel_size=1) for c in in_channels)
        # channel attention: per-group FC -> ReLU -> FC -> sigmoid on the pooled features
        self.channel_fc = nn.Sequential(
            conv(self.out_channels, self.groups * hidden, kernel_size=1, groups=self.groups),
            nn.ReLU(inplace=True),
            conv(self.groups * hidden, self.out_channels, kernel_size=1, groups=self.groups),
        )
        # spatial attention: per-group 1x1 conv to one map
        self.spatial_conv = conv(self.out_channels, self.groups, kernel_size=1, groups=self.groups)

    def fuse(self, features: Sequence[torch.Tensor], size: Sequence[int] | None = None) -> torch.Tensor:
        """Project, resize and regroup the levels: (B, levels * channels, *size), group-major."""
        if len(features) != self.levels:
            raise ValueError(f"GFRM was built for {self.levels} feature levels, got {len(features)}")
        if size is None:
            size = max((tuple(f.shape[2:]) for f in features), key=lambda s: torch.Size(s).numel())
        projected = [resize_to(proj(f), size) for proj, f in zip(self.project, features)]
        x = torch.stack(projected, dim=1)  # (B, L, channels, *size)
        b = x.shape[0]
        per = self.channels // self.groups
        x = x.reshape(b, self.levels, self.groups, per, *size).transpose(1, 2)  # (B, G, L, per, *size)
        return x.reshape(b, self.out_channels, *size)

    def forward(
        self, features: Sequence[torch.Tensor], size: Sequence[int] | None = None, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Recalibrated features (B, ``out_channels``, *size).

        Args:
            features: one tensor (B, in_channels[i], *spatial_i) per level.
            size: common spatial size; default the largest input size.
            return_attention: also return the channel attention (B, out_channels, 1, ...)
                and the spatial attention (B, groups, *size), both in [0, 1].
        """
        x = self.fuse(features, size)
        pooled = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
        channel_att = torch.sigmoid(self.channel_fc(pooled))
        spatial_att = torch.sigmoid(self.spatial_conv(x))
        b, size = x.shape[0], x.shape[2:]
        grouped = x.reshape(b, self.groups, self.group_channels, *size)
        ca = channel_att.reshape(b, self.groups, self.group_channels, *([1] * len(size)))
        sa = spatial_att.unsqueeze(2)  # one map per group, broadcast over the group's channels
        out = (grouped * ca + grouped * sa).reshape(b, self.out_channels, *size)
        if return_attention:
            return out, channel_att, spatial_att
        return out
