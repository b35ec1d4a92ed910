"""Dimension-agnostic building blocks for the segmentation networks and discriminators.

Every block takes ``spatial_dims`` (2 or 3) and obtains its PyTorch layer classes from
:func:`layer_type`, a small factory keyed by ``(kind, spatial_dims)`` in the spirit of
MONAI's ``monai.networks.layers.factories``, so one class serves 2D slices and 3D volumes.

Normalisation and activation are chosen by name:

* ``norm``: ``"batch"`` (:class:`torch.nn.BatchNorm2d`/``3d``), ``"instance"`` (affine
  :class:`torch.nn.InstanceNorm2d`/``3d``) or ``"none"``.
* ``act``: ``"relu"``, ``"leaky"`` (LeakyReLU, slope 0.2 unless given, as in the PatchGAN
  discriminators of Isola et al. 2017 and Wang et al. 2019) or ``"none"``.

Example:
    >>> import torch
    >>> block = ConvNormAct(2, 1, 8, kernel_size=3, norm="instance", act="leaky")
    >>> block(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 8, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NORMS: tuple[str, ...] = ("batch", "instance", "none")
"""Accepted values of every ``norm`` argument."""

ACTS: tuple[str, ...] = ("relu", "leaky", "none")
"""Accepted values of every ``act`` argument."""

_LAYER_TYPES: dict[tuple[str, int], type[nn.Module]] = {
    ("conv", 2): nn.Conv2d,
    ("conv", 3): nn.Conv3d,
    ("convtranspose", 2): nn.ConvTranspose2d,
    ("convtranspose", 3): nn.ConvTranspose3d,
    ("batchnorm", 2): nn.BatchNorm2d,
    ("batchnorm", 3): nn.BatchNorm3d,
    ("instancenorm", 2): nn.InstanceNorm2d,
    ("instancenorm", 3): nn.InstanceNorm3d,
    ("maxpool", 2): nn.MaxPool2d,
    ("maxpool", 3): nn.MaxPool3d,
    ("avgpool", 2): nn.AvgPool2d,
    ("avgpool", 3): nn.AvgPool3d,
    ("adaptiveavgpool", 2): nn.AdaptiveAvgPool2d,
    ("adaptiveavgpool", 3): nn.AdaptiveAvgPool3d,
    ("reflectionpad", 2): nn.ReflectionPad2d,
    ("reflectionpad", 3): nn.ReflectionPad3d,
    ("dropout", 2): nn.Dropout2d,
    ("dropout", 3): nn.Dropout3d,
}

_INTERPOLATION: dict[int, str] = {2: "bilinear", 3: "trilinear"}


def check_spatial_dims(spatial_dims: int) -> int:
    """Validate ``spatial_dims``.

    Args:
        spatial_dims: number of spatial dimensions.

    Returns:
        ``spatial_dims``, unchanged.

    Raises:
        ValueError: unless it is 2 or 3.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def layer_type(kind: str, spatial_dims: int) -> type[nn.Module]:
    """The PyTorch layer class of a kind for a number of spatial dimensions.

    Args:
        kind: one of ``"conv"``, ``"convtranspose"``, ``"batchnorm"``, ``"instancenorm"``,
            ``"maxpool"``, ``"avgpool"``, ``"adaptiveavgpool"``, ``"reflectionpad"``, ``"dropout"``.
        spatial_dims: 2 or 3.

    Returns:
        The class, e.g. ``layer_type("conv", 3) is torch.nn.Conv3d``.

    Raises:
        ValueError: for an unknown kind or an unsupported ``spatial_dims``.
    """
    check_spatial_dims(spatial_dims)
    try:
        return _LAYER_TYPES[(kind, spatial_dims)]
    except KeyError:
        kinds = sorted({k for k, _ in _LAYER_TYPES})
        raise ValueError(f"unknown layer kind {kind!r}; known kinds: {', '.join(kinds)}") from None


def interpolation_mode(spatial_dims: int) -> str:
    """The linear interpolation mode of :func:`torch.nn.functional.interpolate` for ``spatial_dims``."""
    return _INTERPOLATION[check_spatial_dims(spatial_dims)]


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linearly resample ``x`` (B, C, *spatial) to ``size`` (no-op when already that size)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode=interpolation_mode(x.ndim - 2), align_corners=False)


def norm_layer(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer by name.

    Args:
        norm: ``"batch"``, ``"instance"`` (with learnable affine parameters) or ``"none"``
            (identity).
        spatial_dims: 2 or 3.
        channels: number of channels normalised.

    Returns:
        The layer.

    Raises:
        ValueError: for an unknown ``norm``.
    """
    if norm == "batch":
        return layer_type("batchnorm", spatial_dims)(channels)
    if norm == "instance":
        return layer_type("instancenorm", spatial_dims)(channels, affine=True)
    if norm == "none":
        check_spatial_dims(spatial_dims)
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def act_layer(act: str, negative_slope: float = 0.2) -> nn.Module:
    """An activation layer by name.

    Args:
        act: ``"relu"``, ``"leaky"`` or ``"none"`` (identity).
        negative_slope: slope of ``"leaky"`` for negative inputs.

    Returns:
        The layer.

    Raises:
        ValueError: for an unknown ``act``.
    """
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "leaky":
        return nn.LeakyReLU(negative_slope, inplace=True)
    if act == "none":
        return nn.Identity()
    raise ValueError(f"unknown act {act!r}; choose one of {', '.join(ACTS)}")


def has_batch_norm(*nets: nn.Module) -> bool:
    """Whether any of ``nets`` holds a batch-norm layer (its output then depends on the batch it runs on)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for net in nets for m in net.modules())


def check_input(x: torch.Tensor, spatial_dims: int, multiple: int, net: str) -> None:
    """Check that ``x`` is (B, C, *spatial) with every spatial size a multiple of ``multiple``.

    Args:
        x: the network input.
        spatial_dims: the network's number of spatial dimensions.
        multiple: the required divisor of every spatial size (``2 ** poolings``).
        net: the network's name, for the message.

    Raises:
        ValueError: on a wrong number of dimensions or an indivisible spatial size.
    """
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{net} with spatial_dims={spatial_dims} expects a {spatial_dims + 2}-dimensional input "
            f"(B, C, *spatial); got shape {tuple(x.shape)}"
        )
    spatial = tuple(x.shape[2:])
    if any(s % multiple for s in spatial):
        raise ValueError(
            f"{net} needs every spatial size to be a multiple of {multiple} "
            f"({int(math.log2(multiple))} poolings); got spatial size {spatial}. "
            f"Pad or crop the input (e.g. to {tuple(-(-s // multiple) * multiple for s in spatial)})."
        )


class ConvNormAct(nn.Sequential):
    """Convolution, normalisation, activation (and optional dropout).

    The padding defaults to ``dilation * (kernel_size - 1) // 2`` ("same" size for odd
    kernels at stride 1). The convolution has a bias only when there is no normalisation,
    since a following norm layer cancels it.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: convolution kernel size.
        stride: convolution stride.
        dilation: convolution dilation.
        padding: explicit padding; ``None`` for the default above.
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        act: ``"relu"``, ``"leaky"`` or ``"none"``.
        negative_slope: slope of ``"leaky"``.
        dropout: channel dropout probability after the activation (0 disables it).
        bias: force the convolution bias on or off; ``None`` for the rule above.

    Example:
        >>> ConvNormAct(3, 4, 8, dilation=2)(torch.zeros(1, 4, 8, 8, 8)).shape
        torch.Size([1, 8, 8, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        padding: int | None = None,
        norm: str = "batch",
        act: str = "relu",
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        bias: bool | None = None,
    ) -> None:
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        if bias is None:
            bias = norm == "none"
        layers: list[nn.Module] = [
            layer_type("conv", spatial_dims)(
                in_channels,
                out_channels,
                kernel_size=kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=bias,
            ),
            norm_layer(norm, spatial_dims, out_channels),
            act_layer(act, negative_slope),
        ]
        if dropout > 0:
            layers.append(layer_type("dropout", spatial_dims)(dropout))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-norm-act layers, the block of U-Net (Ronneberger et al., MICCAI 2015).

    With ``dilations=(2, 4)`` it is the dilated bottleneck block of Wang et al. 2019
    ("Multi-sequence Cardiac MR Segmentation with Adversarial Domain Adaptation Network",
    STACOM 2019, section 2.1).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels of both convolutions.
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        act: ``"relu"``, ``"leaky"`` or ``"none"``.
        dilations: dilation of the first and of the second convolution.
        dropout: channel dropout after the second activation.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: str = "batch",
        act: str = "relu",
        dilations: tuple[int, int] = (1, 1),
        dropout: float = 0.0,
    ) -> None:
        if len(dilations) != 2:
            raise ValueError(f"dilations must have two values, got {dilations!r}")
        super().__init__(
            ConvNormAct(spatial_dims, in_channels, out_channels, dilation=dilations[0], norm=norm, act=act),
            ConvNormAct(spatial_dims, out_channels, out_channels, dilation=dilations[1], norm=norm, act=act, dropout=dropout),
        )


class ResidualBlock(nn.Module):
    """Residual block of two 3x3 convolutions (He et al., "Deep Residual Learning", CVPR 2016).

    ``act(norm(conv(act(norm(conv(x))))) + shortcut(x))``: the shortcut is the identity when
    shape is preserved, otherwise a 1x1 (strided) convolution and norm ("projection
    shortcut"). It is the block of the LV-Unet of Yan et al. 2019.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (and of the projection).
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        act: ``"relu"``, ``"leaky"`` or ``"none"``.
        dilation: dilation of both convolutions.

    Example:
        >>> ResidualBlock(2, 8, 16, stride=2)(torch.zeros(1, 8, 16, 16)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        norm: str = "batch",
        act: str = "relu",
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, stride=stride, dilation=dilation, norm=norm, act=act)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, dilation=dilation, norm=norm, act="none")
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size=1, stride=stride, norm=norm, act="none")
        self.act = act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` (B, in_channels, *spatial)."""
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class AttentionGate(nn.Module):
    """Attention gate on a skip connection (Wang et al. 2019, section 2.1 and Fig. 3(a)).

    Following Wang et al. 2019 (a variant of the additive gate of Oktay et al., "Attention
    U-Net", MIDL 2018): the encoder (skip) feature ``x`` and the decoder (gating) feature
    ``g`` are each squeezed along the channel direction by a 3x3 convolution to
    ``inter_channels``, added, passed through ReLU, squeezed to a single channel by a 1x1
    convolution and a sigmoid, giving attention coefficients ``alpha`` in [0, 1] that
    multiply ``x``. When ``g`` is coarser than ``x`` its squeezed map is linearly upsampled
    to the size of ``x`` before the addition (squeezing first is the cheaper, equivalent
    order for a linear convolution followed by upsampling up to border effects).

    Args:
        spatial_dims: 2 or 3.
        skip_channels: channels of the encoder feature ``x``.
        gate_channels: channels of the decoder feature ``g``.
        inter_channels: channels after squeezing; default ``max(skip_channels // 2, 1)``.
        kernel_size: kernel of the two squeezing convolutions (3 in the paper).
        norm: normalisation after each squeezing convolution (the paper has none).

    Example:
        >>> gate = AttentionGate(2, skip_channels=16, gate_channels=32)
        >>> out, alpha = gate(torch.zeros(1, 16, 32, 32), torch.zeros(1, 32, 16, 16), return_attention=True)
        >>> out.shape, alpha.shape
        (torch.Size([1, 16, 32, 32]), torch.Size([1, 1, 32, 32]))
    """

    def __init__(
        self,
        spatial_dims: int,
        skip_channels: int,
        gate_channels: int,
        inter_channels: int | None = None,
        kernel_size: int = 3,
        norm: str = "none",
    ) -> None:
        super().__init__()
        inter = inter_channels if inter_channels is not None else max(skip_channels // 2, 1)
        self.theta = ConvNormAct(spatial_dims, skip_channels, inter, kernel_size=kernel_size, norm=norm, act="none")
        self.phi = ConvNormAct(spatial_dims, gate_channels, inter, kernel_size=kernel_size, norm=norm, act="none")
        self.psi = ConvNormAct(spatial_dims, inter, 1, kernel_size=1, norm="none", act="none")

    def attention(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients (B, 1, *spatial of x), in [0, 1]."""
        gated = resize_to(self.phi(g), x.shape[2:])
        return torch.sigmoid(self.psi(F.relu(self.theta(x) + gated)))

    def forward(self, x: torch.Tensor, g: torch.Tensor, return_attention: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Gate the skip feature.

        Args:
            x: encoder (skip) feature (B, skip_channels, *spatial).
            g: decoder (gating) feature (B, gate_channels, *spatial'), any spatial size.
            return_attention: also return the coefficients.

        Returns:
            ``x * alpha`` (same shape as ``x``), or ``(x * alpha, alpha)``.
        """
        alpha = self.attention(x, g)
        out = x * alpha
        return (out, alpha) if return_attention else out


class PyramidPooling(nn.Module):
    """Pyramid pooling module of PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017).

    The input is average-pooled adaptively to each of ``bins`` (1, 2, 3, 6 by default, per
    spatial axis), each pooled map goes through a 1x1 conv(-norm)-act to
    ``branch_channels`` (``in_channels // len(bins)`` as in PSPNet), is linearly upsampled
    back, concatenated with the input, and a 1x1 conv-norm-act fuses the result to
    ``out_channels`` (the input channels by default). Wang et al. 2019 use it at the
    bottleneck to cope with the variable heart size.

    The branches have no normalisation by default (``branch_norm="none"``): batch norm over
    a 1x1 pooled map fails in training for a batch of one and instance norm over a single
    pixel is undefined; the fusing layer uses ``norm``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        bins: output sizes of the adaptive pooling, one branch each.
        branch_channels: channels of each branch; default ``max(in_channels // len(bins), 1)``.
        out_channels: output channels; default ``in_channels``.
        norm: normalisation of the fusing layer.
        branch_norm: normalisation of the branches.
        act: activation of branches and fusing layer.

    Example:
        >>> PyramidPooling(2, 64)(torch.zeros(2, 64, 16, 16)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        bins: Sequence[int] = (1, 2, 3, 6),
        branch_channels: int | None = None,
        out_channels: int | None = None,
        norm: str = "batch",
        branch_norm: str = "none",
        act: str = "relu",
    ) -> None:
        super().__init__()
        if not bins or any(int(b) < 1 for b in bins):
            raise ValueError(f"bins must be a non-empty sequence of positive sizes, got {bins!r}")
        branch = branch_channels if branch_channels is not None else max(in_channels // len(bins), 1)
        pool = layer_type("adaptiveavgpool", spatial_dims)
        self.branches = nn.ModuleList(
            nn.Sequential(
                pool(int(b)),
                ConvNormAct(spatial_dims, in_channels, branch, kernel_size=1, norm=branch_norm, act=act),
            )
            for b in bins
        )
        out = out_channels if out_channels is not None else in_channels
        self.fuse = ConvNormAct(spatial_dims, in_channels + branch * len(bins), out, kernel_size=1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module to ``x`` (B, in_channels, *spatial); the spatial size is kept."""
        size = x.shape[2:]
        pooled = [resize_to(branch(x), size) for branch in self.branches]
        return self.fuse(torch.cat([x, *pooled], dim=1))


def check_features(features: Sequence[int], net: str, min_levels: int = 2) -> tuple[int, ...]:
    """Validate a tuple of channel widths, one per resolution level.

    Args:
        features: channel widths, shallow to deep.
        net: the network's name, for the message.
        min_levels: the least number of levels.

    Returns:
        The widths as a tuple of ints.

    Raises:
        ValueError: for fewer than ``min_levels`` widths or a non-positive width.
    """
    widths = tuple(int(f) for f in features)
    if len(widths) < min_levels or any(f < 1 for f in widths):
        raise ValueError(f"{net}: features must be at least {min_levels} positive channel widths, got {features!r}")
    return widths


class UNetBase(nn.Module):
    """What the U-shaped segmenters share: one channel width per level, features, logits.

    A subclass calls ``super().__init__(spatial_dims, features)``, which checks both (naming
    the subclass in the message) and sets ``spatial_dims``, ``features`` (shallow to deep) and
    ``depth`` (``len(features) - 1`` poolings); it then builds ``encoders`` (one per level),
    ``pool``, ``ups`` and ``decoders`` (deep to shallow) and the 1x1 ``head``.
    :meth:`forward_features` is the U-shaped pass over them (a subclass with another pass
    overrides it); :meth:`forward` returns its logits.
    """

    encoders: nn.ModuleList
    pool: nn.Module
    ups: nn.ModuleList
    decoders: nn.ModuleList
    head: nn.Module

    def __init__(self, spatial_dims: int, features: Sequence[int]) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.features = check_features(features, type(self).__name__)
        self.depth = len(self.features) - 1

    @property
    def feature_channels(self) -> list[int]:
        """Channels of the :meth:`forward_features` features, deep to shallow."""
        return list(reversed(self.features))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the multi-level decoder features.

        Encoders run with ``pool`` between levels; each decoder takes the concatenation of the
        matching skip and the up-sampled deeper feature.

        Args:
            x: input (B, in_channels, *spatial), spatial sizes multiples of ``2 ** depth``.

        Returns:
            ``(logits, features)``: logits (B, out_channels, *spatial) and ``depth + 1``
            features from deep to shallow: the bottleneck (``features[-1]`` channels at
            ``1 / 2 ** depth`` resolution), then the output of every decoder stage
            (``features[depth - k]`` channels at ``1 / 2 ** (depth - k)``), the last at full
            resolution.

        Raises:
            ValueError: for an input of the wrong dimensionality or size.
        """
        check_input(x, self.spatial_dims, 2**self.depth, type(self).__name__)
        skips: list[torch.Tensor] = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        feats = [x]
        for k, (up, decoder) in enumerate(zip(self.ups, self.decoders)):
            x = decoder(torch.cat([skips[self.depth - 1 - k], up(x)], dim=1))
            feats.append(x)
        return self.head(x), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, out_channels, *spatial) of ``x`` (B, in_channels, *spatial)."""
        return self.forward_features(x)[0]
