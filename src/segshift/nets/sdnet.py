"""SDNet parts: the spatial decomposition network of Chartsias et al. 2019 as used by Liu et al. 2020.

Chartsias, Joyce, Papanastasiou, Semple, Williams, Newby, Dharmakumar and Tsaftaris,
"Disentangled representation learning in cardiac image analysis", MedIA 58 (2019); Liu,
Thermos, Chartsias, O'Neil and Tsaftaris, "Disentangled Representations for
Domain-generalized Cardiac Segmentation", STACOM 2020, section 2.2 and Fig. 1(a).

* :class:`AnatomyEncoder` ``E_a``: a U-Net (4 down- and 4 up-sampling stages, BN, ReLU)
  whose 8 output channels are a channel softmax binarised by :func:`round_ste`.
* :class:`ModalityEncoder` ``E_m``: two 4x4 stride-2 convolutions, global average pooling,
  an MLP to the mean and log-variance of an 8-d factor, sampled by reparameterisation.
* :class:`Segmentor`: two 3x3 conv + BN + ReLU, then a 1x1 convolution (logits; the softmax
  is in the loss and in prediction).
* :class:`AdaINDecoder` ``D``: three 3x3 convolutions each followed by adaptive instance
  normalisation (Huang and Belongie 2017) driven by the modality factor and ReLU, then a
  7x7 convolution. Output activation: identity (see the class).

Example:
    >>> net = SDNet(num_classes=4, anatomy_features=(8, 16, 32))
    >>> out = net(torch.zeros(2, 1, 32, 32))
    >>> out.anatomy.shape, out.logits.shape, out.reconstruction.shape, out.z.shape
    (torch.Size([2, 8, 32, 32]), torch.Size([2, 4, 32, 32]), torch.Size([2, 1, 32, 32]), torch.Size([2, 8]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from segshift.nets.unet import UNet


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Differentiable rounding (straight-through estimator): ``round(x)`` forward, identity backward.

    The "differentiable rounding operator" that thresholds SDNet's anatomy factor to 0/1
    (Liu et al. 2020, section 2.2; Chartsias et al. 2019, section 3.1).
    """
    return x + (torch.round(x) - x).detach()


def onehot_ste(p: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Straight-through one-hot of the argmax along ``dim``: the rounding of a channel softmax
    where every pixel keeps exactly one active channel (``round`` leaves a pixel all-zero
    when no channel exceeds 0.5, as at initialisation, where the softmax is near uniform).
    """
    hard = torch.zeros_like(p).scatter_(dim, p.argmax(dim, keepdim=True), 1.0)
    return p + (hard - p).detach()


BINARISE = ("round", "onehot", "none")


class AnatomyEncoder(nn.Module):
    """``E_a``: U-Net -> channel softmax -> binary anatomy factor ``(B, anatomy_channels, H, W)``.

    Args:
        in_channels: image channels.
        anatomy_channels: channels of the anatomy factor (8 in the paper).
        features: U-Net widths, shallow to deep (5 levels: 4 down/up-sampling stages).
        binarise: ``"round"`` (:func:`round_ste` of the softmax, the paper's literal operator),
            ``"onehot"`` (:func:`onehot_ste`) or ``"none"`` (the soft factor, for ablations).
    """

    def __init__(
        self, in_channels: int = 1, anatomy_channels: int = 8, features: Sequence[int] = (16, 32, 64, 128, 256), binarise: str = "onehot"
    ) -> None:
        super().__init__()
        if binarise not in BINARISE:
            raise ValueError(f"binarise must be one of {', '.join(BINARISE)}, got {binarise!r}")
        self.unet = UNet(in_channels, anatomy_channels, features=features, norm="batch", act="relu")
        self.binarise = binarise
        self.multiple = 2**self.unet.depth

    def soft(self, x: torch.Tensor) -> torch.Tensor:
        """The channel softmax before rounding."""
        return torch.softmax(self.unet(x).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.soft(x)
        if self.binarise == "round":
            return round_ste(s)
        return onehot_ste(s) if self.binarise == "onehot" else s


class ModalityEncoder(nn.Module):
    """``E_m``: image (+ anatomy factor) -> modality factor ``z`` (mean, log-variance, sample).

    Two 4x4 stride-2 convolutions (BN, LeakyReLU 0.2), global average pooling, then an MLP
    (one hidden layer) to ``mu`` and ``logvar`` of a ``z_dim``-d Gaussian; ``z = mu + eps *
    exp(logvar / 2)`` while training (reparameterisation trick), ``z = mu`` in eval mode.

    As in the original SDNet (Chartsias et al. 2019, Fig. 2), the encoder sees the image
    concatenated with the anatomy factor (``anatomy_channels`` 0: the image alone, as drawn
    in Liu et al. 2020, Fig. 1(a)).
    """

    def __init__(
        self, in_channels: int = 1, anatomy_channels: int = 8, z_dim: int = 8, channels: Sequence[int] = (16, 32), hidden: int = 32
    ) -> None:
        super().__init__()
        c1, c2 = (int(c) for c in channels)
        self.anatomy_channels = anatomy_channels
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels + anatomy_channels, c1, 4, stride=2, padding=1),
            nn.BatchNorm2d(c1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.BatchNorm2d(c2),
            nn.LeakyReLU(0.2),
        )
        self.mlp = nn.Sequential(nn.Linear(c2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 2 * z_dim))
        self.z_dim = z_dim

    def forward(self, image: torch.Tensor, anatomy: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, mu, logvar)``, each ``(B, z_dim)``."""
        x = image if not self.anatomy_channels else torch.cat([image, anatomy.to(image.dtype)], dim=1)
        h = self.convs(x).mean(dim=(2, 3))
        mu, logvar = self.mlp(h).float().chunk(2, dim=1)
        logvar = logvar.clamp(-10, 10)
        if not self.training:
            return mu, mu, logvar
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar), mu, logvar


class Segmentor(nn.Module):
    """Two 3x3 conv + BN + ReLU and a 1x1 convolution: anatomy factor -> class logits."""

    def __init__(self, anatomy_channels: int = 8, num_classes: int = 4, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(anatomy_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, anatomy: torch.Tensor) -> torch.Tensor:
        return self.net(anatomy)


class AdaIN(nn.Module):
    """Adaptive instance normalisation (Huang and Belongie, ICCV 2017): ``(1 + gamma(z)) * IN(x) + beta(z)``."""

    def __init__(self, channels: int, z_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(z_dim, 2 * channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(z.to(x.dtype)).chunk(2, dim=1)
        return (1 + gamma[:, :, None, None]) * self.norm(x) + beta[:, :, None, None]


class AdaINDecoder(nn.Module):
    """``D(AdaIN)``: anatomy factor and modality factor -> image.

    Three 3x3 convolutions, each followed by :class:`AdaIN` (driven by ``z``) and ReLU, then a
    7x7 convolution. The paper ends with tanh for images in [0, 1]; segshift's slices are
    z-scored (unbounded, mean 0, std 1), so the output activation is the identity and the
    reconstruction is compared to the z-scored slice directly (``output="tanh"`` keeps the
    paper's activation, for images scaled to [-1, 1]).
    """

    def __init__(self, anatomy_channels: int = 8, z_dim: int = 8, width: int = 32, out_channels: int = 1, output: str = "identity") -> None:
        super().__init__()
        if output not in ("identity", "tanh"):
            raise ValueError(f"output activation must be identity or tanh, got {output!r}")
        self.convs = nn.ModuleList(nn.Conv2d(anatomy_channels if i == 0 else width, width, 3, padding=1) for i in range(3))
        self.adains = nn.ModuleList(AdaIN(width, z_dim) for _ in range(3))
        self.out = nn.Conv2d(width, out_channels, 7, padding=3)
        self.output = output

    def forward(self, anatomy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = anatomy
        for conv, adain in zip(self.convs, self.adains):
            x = torch.relu(adain(conv(x), z))
        x = self.out(x)
        return torch.tanh(x) if self.output == "tanh" else x


@dataclasses.dataclass
class SDNetOutput:
    """One SDNet forward pass: binary anatomy factor, segmentation logits, reconstruction, modality factor."""

    anatomy: torch.Tensor
    logits: torch.Tensor
    reconstruction: torch.Tensor
    z: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z_prior: torch.Tensor | None = None
    mu_prior_rec: torch.Tensor | None = None


class SDNet(nn.Module):
    """The four SDNet modules together (Liu et al. 2020, Fig. 1(a)).

    Args:
        in_channels: image channels.
        num_classes: segmentation classes including background.
        anatomy_channels: anatomy factor channels (8).
        z_dim: modality factor size (8).
        anatomy_features: U-Net widths of ``E_a``.
        modality_channels: the two convolution widths of ``E_m``.
        segmentor_width: width of the segmentor's 3x3 convolutions.
        decoder_width: width of the decoder's 3x3 convolutions.
        decoder_output: ``"identity"`` (z-scored images) or ``"tanh"``.
        modality_sees_anatomy: ``E_m`` input is image + anatomy factor (SDNet) or the image only.
        binarise: the anatomy factor's binarisation (see :class:`AnatomyEncoder`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        anatomy_channels: int = 8,
        z_dim: int = 8,
        anatomy_features: Sequence[int] = (16, 32, 64, 128, 256),
        modality_channels: Sequence[int] = (16, 32),
        segmentor_width: int = 64,
        decoder_width: int = 32,
        decoder_output: str = "identity",
        modality_sees_anatomy: bool = True,
        binarise: str = "onehot",
    ) -> None:
        super().__init__()
        self.anatomy = AnatomyEncoder(in_channels, anatomy_channels, anatomy_features, binarise=binarise)
        self.modality = ModalityEncoder(in_channels, anatomy_channels if modality_sees_anatomy else 0, z_dim, modality_channels)
        self.segmentor = Segmentor(anatomy_channels, num_classes, segmentor_width)
        self.decoder = AdaINDecoder(anatomy_channels, z_dim, decoder_width, in_channels, decoder_output)
        self.z_dim = z_dim

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(anatomy, z, mu, logvar)`` of ``image``."""
        a = self.anatomy(image)
        z, mu, logvar = self.modality(image, a)
        return a, z, mu, logvar

    def forward(self, image: torch.Tensor, z_prior: torch.Tensor | None = None) -> SDNetOutput:
        """All outputs of ``image``; with ``z_prior`` also the latent regression pass.

        ``z_prior`` ``(B, z_dim)`` (samples of N(0, I)) is decoded with the anatomy factor and
        re-encoded; ``mu_prior_rec`` is the re-encoded mean (SDNet's latent regression), all
        in one forward call (so DistributedDataParallel sees every parameter use).
        """
        a, z, mu, logvar = self.encode(image)
        out = SDNetOutput(a, self.segmentor(a), self.decoder(a, z), z, mu, logvar)
        if z_prior is not None:
            fake = self.decoder(a, z_prior)
            out.z_prior, out.mu_prior_rec = z_prior, self.modality(fake, a)[1]
        return out
