"""Random draws, Gaussian blur and the spatial warp shared by the augmentation modules.

:mod:`segshift.transforms.augment` (the engine's augmentation) and
:mod:`segshift.transforms.bigaug` both build per-sample affine matrices with
:func:`affine_theta` and resample with :func:`warp`; displacement fields are in
``grid_sample``'s normalised units (:func:`pixels_to_grid`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` draws from U(lo, hi) with ``gen``."""
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)`` with std ``sigma`` px (kernel radius ``ceil(3 sigma)``,
    replicated edges); ``sigma < 0.3`` returns ``x``.
    """
    if sigma < 0.3:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def affine_theta(
    angle: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor | None = None,
    flips: torch.Tensor | None = None,
    shear: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(n, 2, 3)`` matrices for ``affine_grid`` (output -> input coordinates).

    The linear part is ``R(angle) F / scale`` times the shear ``[[1, tan(shear)], [0, 1]]``
    (``F`` the diagonal of ``flips``, +-1); ``shift`` ``(n, 2)`` is the translation in grid
    units (the grid spans 2 across the image). Angles in radians.
    """
    n = angle.shape[0]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    fx, fy = (flips[:, 0], flips[:, 1]) if flips is not None else (1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * fx, -sin * fy
    theta[:, 1, 0], theta[:, 1, 1] = sin * fx, cos * fy
    if shear is not None:
        s = torch.zeros(n, 2, 2)
        s[:, 0, 0], s[:, 0, 1], s[:, 1, 1] = 1.0, torch.tan(shear), 1.0
        theta[:, :, :2] = theta[:, :, :2] @ s
    if shift is not None:
        theta[:, :, 2] = shift
    return theta


def pixels_to_grid(displacement: torch.Tensor) -> torch.Tensor:
    """A displacement ``(n, 2, H, W)`` in pixels (x then y) as ``(n, H, W, 2)`` grid units."""
    h, w = displacement.shape[-2:]
    return displacement.permute(0, 2, 3, 1) * torch.tensor([2.0 / w, 2.0 / h], dtype=displacement.dtype)


def elastic_field(n: int, size: tuple[int, int], alpha: float, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Random elastic displacements ``(n, 2, H, W)`` in pixels (Simard et al., ICDAR 2003, section 2).

    Each component is U(-1, 1) noise per pixel, smoothed by a Gaussian of std ``sigma`` px
    (:func:`blur`) and scaled by ``alpha``. Away from the edges its std is
    ``alpha / sqrt(3) * sum(k**2)`` for the normalised 1D kernel ``k``, about
    ``alpha / (2 sqrt(3 pi) sigma)`` (0.65 px for alpha 20, sigma 5).
    """
    h, w = size
    noise = torch.rand(n * 2, 1, h, w, generator=gen) * 2 - 1
    return (blur(noise, sigma) * alpha).view(n, 2, h, w)


def warp(
    image: torch.Tensor, theta: torch.Tensor, label: torch.Tensor | None = None, displacement: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply per-sample affine warps; outside the image, images take their minimum, labels 0.

    Bilinear for images, nearest for labels. ``displacement`` ``(B, H, W, 2)`` (grid units,
    x then y) is added to the affine grid (an elastic deformation in the same resampling).
    """
    grid = F.affine_grid(theta.to(image.device, image.dtype), list(image.shape), align_corners=False)
    if displacement is not None:
        grid = grid + displacement.to(grid.device, grid.dtype)
    floor = image.amin(dim=(1, 2, 3), keepdim=True)
    out = F.grid_sample(image - floor, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + floor
    lab = None
    if label is not None:
        lab = (
            F.grid_sample(label[:, None].to(image.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
            .round()
            .to(label.dtype)
        )
    return out, lab
