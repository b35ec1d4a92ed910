"""Structural similarity (SSIM) and the structure-weighted SSIM loss of Unet-GAN.

Wang, Bovik, Sheikh and Simoncelli, "Image Quality Assessment: From Error Visibility to
Structural Similarity", IEEE TIP 2004; Yan et al. 2019 (Unet-GAN), section 2, eqs. 2-3:
``SSIM = l^alpha * c^beta * s^gamma`` with

* luminance ``l = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)``,
* contrast ``c = (2 sigma_x sigma_y + c2) / (sigma_x^2 + sigma_y^2 + c2)``,
* structure ``s = (sigma_xy + c3) / (sigma_x sigma_y + c3)``,

local statistics under an 11x11 Gaussian window (sigma 1.5), ``c1 = (k1 L)^2``,
``c2 = (k2 L)^2``, ``c3 = c2 / 2`` (k1 0.01, k2 0.03; ``L`` the data range). Unet-GAN weights
structure over luminance and contrast (``alpha = beta = 0.1``, ``gamma = 1``) because a
translation may change brightness and contrast but must keep anatomy.

Readings where the paper is not explicit:

* The paper's eq. 2 writes ``2 sigma_xy`` in ``s``; that is a typo of Wang et al.'s
  ``sigma_xy`` (with it ``s`` of an image with itself would be 2), so ``sigma_xy`` is used.
* segshift images are z-scored, so a local mean can be negative and ``l`` then lies in
  ``[-1, 0)``, where a fractional power is undefined: ``l`` and ``c`` are clamped to
  ``[1e-6, 1]`` before their powers (``c`` is never negative anyway). ``s`` in ``[-1, 1]``
  takes a sign-preserving power (the identity for ``gamma = 1``).
* ``L_SSIM = E ||1 - SSIM(x, y)||_2`` is read per pixel: the mean over pixels (and images)
  of ``(1 - SSIM_map)^2``. The window is applied without padding ("valid"), as in Wang et
  al.'s reference code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-6


def gaussian_window(size: int = 11, sigma: float = 1.5, spatial_dims: int = 2) -> torch.Tensor:
    """A normalised Gaussian kernel, shape ``(1, 1, size, size[, size])``."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    k = g
    for _ in range(spatial_dims - 1):
        k = k[..., None] * g
    return k.float()[None, None]


def ssim_components(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Luminance, contrast and structure maps of single-channel images ``(B, 1, *spatial)``.

    Computed in float32. Returns three maps of shape ``(B, 1, *(spatial - window + 1))``.
    """
    if x.shape != y.shape or x.dim() not in (4, 5) or x.shape[1] != 1:
        raise ValueError(f"SSIM needs two (B, 1, H, W[, D]) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[2:]) < window:
        raise ValueError(f"SSIM window {window} is larger than the image {tuple(x.shape[2:])}")
    x, y = x.float(), y.float()
    nd = x.dim() - 2
    w = gaussian_window(window, sigma, nd).to(x.device)
    conv = F.conv2d if nd == 2 else F.conv3d
    # local moments of the images minus their global means (less cancellation in float32)
    dims = tuple(range(2, x.dim()))
    mx, my = x.mean(dims, keepdim=True), y.mean(dims, keepdim=True)
    xc, yc = x - mx, y - my
    mu_xc, mu_yc = conv(xc, w), conv(yc, w)
    var_x = (conv(xc * xc, w) - mu_xc**2).clamp_min(0)
    var_y = (conv(yc * yc, w) - mu_yc**2).clamp_min(0)
    cov = conv(xc * yc, w) - mu_xc * mu_yc
    mu_x, mu_y = mu_xc + mx, mu_yc + my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    c3 = c2 / 2
    sd_x, sd_y = torch.sqrt(var_x + 1e-12), torch.sqrt(var_y + 1e-12)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    con = (2 * sd_x * sd_y + c2) / (var_x + var_y + c2)
    struct = (cov + c3) / (sd_x * sd_y + c3)
    return lum, con, struct


def _signed_pow(v: torch.Tensor, e: float) -> torch.Tensor:
    return v if e == 1 else torch.sign(v) * v.abs().clamp_min(_EPS) ** e


def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """``l^alpha c^beta s^gamma`` per pixel (see the module docstring for the clamping)."""
    lum, con, struct = ssim_components(x, y, data_range, window, sigma)
    return lum.clamp(_EPS, 1) ** alpha * con.clamp(_EPS, 1) ** beta * _signed_pow(struct, gamma)


def ssim(x: torch.Tensor, y: torch.Tensor, **kwargs: float) -> torch.Tensor:
    """Mean SSIM per image, shape ``(B,)`` (keyword arguments as :func:`ssim_map`)."""
    return ssim_map(x, y, **kwargs).flatten(1).mean(1)


class StructureSSIMLoss(nn.Module):
    """``mean((1 - SSIM_map(x, y))^2)``, structure-weighted by default (Yan et al. 2019).

    Args:
        alpha, beta, gamma: exponents of luminance, contrast and structure (0.1, 0.1, 1).
        data_range: the intensity range ``L`` of ``c1``/``c2`` (z-scored images span about
            6 units between their clipping percentiles; 4 by default).
        window, sigma: the Gaussian window.

    Example:
        >>> x = torch.rand(2, 1, 32, 32)
        >>> float(StructureSSIMLoss()(x, x)) < 1e-6
        True
    """

    def __init__(
        self, alpha: float = 0.1, beta: float = 0.1, gamma: float = 1.0, data_range: float = 4.0, window: int = 11, sigma: float = 1.5
    ) -> None:
        super().__init__()
        for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("data_range", data_range), ("sigma", sigma)):
            if not math.isfinite(v) or v < 0 or (name in ("data_range", "sigma") and v == 0):
                raise ValueError(f"SSIM {name} must be a finite number {'> 0' if name in ('data_range', 'sigma') else '>= 0'}, got {v}")
        self.kw = {"alpha": alpha, "beta": beta, "gamma": gamma, "data_range": data_range, "window": int(window), "sigma": sigma}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((1 - ssim_map(x, y, **self.kw)) ** 2).mean()
