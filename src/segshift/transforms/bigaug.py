"""BigAug: a deep stack of nine transforms (Zhang et al., IEEE TMI 2020), the "more augmentation" control.

L. Zhang, X. Wang, D. Yang, T. Sanford, S. Harmon, B. Turkbey, B. J. Wood, H. Roth,
A. Myronenko, D. Xu, Z. Xu, "Generalizing deep learning for medical image segmentation to
unseen domains via deep stacked transformation", IEEE TMI 39(7), 2020. Each transform is
applied with probability ``p`` (the paper's 0.5), in the paper's order: image quality
(sharpness, blurriness, noise), image appearance (brightness, contrast, intensity
perturbation), spatial configuration (rotation, scaling, elastic deformation; one warp).

The ranges in :class:`BigAugConfig` are segshift's reading of the paper for z-scored 2D
slices (the paper works on 3D volumes in [0, 1]); each is a config key
(``augment.bigaug``), so a table states what was run. Intensity ranges are in z-score units
of the slice.

Spatial transforms share :func:`segshift.transforms.ops.warp` (bilinear images,
nearest labels); every random number comes from the generator passed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segshift.errors import SegshiftError
from segshift.transforms.ops import affine_theta, blur, pixels_to_grid, uniform, warp


@dataclasses.dataclass(frozen=True)
class BigAugConfig:
    """The ``augment.bigaug`` section (see ``configs/base.yaml``)."""

    enabled: bool = False
    p: float = 0.5
    sharpen_sigma: tuple[float, float] = (0.5, 1.0)
    sharpen_alpha: tuple[float, float] = (10.0, 30.0)
    blur_sigma: tuple[float, float] = (0.25, 1.5)
    noise_std: tuple[float, float] = (0.1, 0.5)
    brightness: float = 0.3
    gamma: tuple[float, float] = (0.5, 4.5)
    perturb_scale: tuple[float, float] = (0.9, 1.1)
    perturb_shift: float = 0.1
    rotate_deg: float = 20.0
    scale: tuple[float, float] = (0.4, 1.6)
    elastic_px: float = 4.0
    elastic_grid: int = 6

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise SegshiftError(f"augment.bigaug.p must be in [0, 1], got {self.p}")
        for key in ("sharpen_sigma", "sharpen_alpha", "blur_sigma", "noise_std", "gamma", "perturb_scale", "scale"):
            lo, hi = getattr(self, key)
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
                raise SegshiftError(f"augment.bigaug.{key} must be [lo, hi] with 0 <= lo <= hi, got {[lo, hi]}")
        if self.scale[0] <= 0 or self.gamma[0] <= 0:
            raise SegshiftError("augment.bigaug: scale and gamma ranges must be > 0")
        if self.elastic_grid < 2 or self.elastic_px < 0:
            raise SegshiftError(
                f"augment.bigaug: elastic_grid must be >= 2 and elastic_px >= 0, got {self.elastic_grid}, {self.elastic_px}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> BigAugConfig:
        kw = dict(d or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(kw) - set(fields)
        if unknown:
            raise SegshiftError(f"augment.bigaug: unknown key(s) {', '.join(sorted(unknown))}")
        for key, value in list(kw.items()):
            if isinstance(value, (list, tuple)):
                if len(value) != 2:
                    raise SegshiftError(f"augment.bigaug.{key} must be [lo, hi], got {value!r}")
                kw[key] = (float(value[0]), float(value[1]))
        return cls(**kw)


def _coin(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def _per_sample(x: torch.Tensor, on: torch.Tensor, fn: Any) -> torch.Tensor:
    out = x.clone()
    for i in torch.nonzero(on).flatten().tolist():
        out[i : i + 1] = fn(i, x[i : i + 1])
    return out


def _sharpen(x: torch.Tensor, sigma: float, alpha: float) -> torch.Tensor:
    """Unsharp masking: ``b + alpha (b - blur(b, 0.5))`` with ``b = blur(x, sigma)`` (MONAI's GaussianSharpen)."""
    b = blur(x, sigma)
    return b + alpha * (b - blur(b, 0.5))


def bigaug_batch(
    image: torch.Tensor, label: torch.Tensor | None, cfg: BigAugConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The nine stacked transforms on a CPU batch ``(B, 1, H, W)`` (labels ``(B, H, W)`` follow the warp)."""
    n, _, h, w = image.shape
    x = image
    # image quality
    on = _coin(n, cfg.p, gen)
    s1, alpha = uniform(n, *cfg.sharpen_sigma, gen), uniform(n, *cfg.sharpen_alpha, gen)
    x = _per_sample(x, on, lambda i, v: _sharpen(v, float(s1[i]), float(alpha[i])))
    on, sig = _coin(n, cfg.p, gen), uniform(n, *cfg.blur_sigma, gen)
    x = _per_sample(x, on, lambda i, v: blur(v, float(sig[i])))
    on, std = _coin(n, cfg.p, gen), uniform(n, *cfg.noise_std, gen)
    noise = torch.randn(x.shape, generator=gen)
    x = torch.where(on.view(n, 1, 1, 1), x + std.view(n, 1, 1, 1) * noise, x)
    # image appearance
    on, shift = _coin(n, cfg.p, gen), uniform(n, -cfg.brightness, cfg.brightness, gen)
    x = torch.where(on.view(n, 1, 1, 1), x + shift.view(n, 1, 1, 1), x)
    on, gamma = _coin(n, cfg.p, gen), uniform(n, *cfg.gamma, gen)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    rng = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
    x = torch.where(on.view(n, 1, 1, 1), ((x - lo) / rng).clamp(0, 1) ** gamma.view(n, 1, 1, 1) * rng + lo, x)
    on, sc, sh = _coin(n, cfg.p, gen), uniform(n, *cfg.perturb_scale, gen), uniform(n, -cfg.perturb_shift, cfg.perturb_shift, gen)
    x = torch.where(on.view(n, 1, 1, 1), x * sc.view(n, 1, 1, 1) + sh.view(n, 1, 1, 1), x)
    # spatial configuration: rotation, scaling and elastic deformation in one warp
    rot_on, sc_on, el_on = _coin(n, cfg.p, gen), _coin(n, cfg.p, gen), _coin(n, cfg.p, gen)
    ang = torch.where(rot_on, uniform(n, -cfg.rotate_deg, cfg.rotate_deg, gen), torch.zeros(n)) * math.pi / 180
    s = torch.where(sc_on, uniform(n, *cfg.scale, gen), torch.ones(n))
    theta = affine_theta(ang, s)
    coarse = torch.randn(n, 2, cfg.elastic_grid, cfg.elastic_grid, generator=gen) * cfg.elastic_px
    if el_on.any() and cfg.elastic_px > 0:
        disp = pixels_to_grid(F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True) * el_on.float().view(n, 1, 1, 1))
    else:
        disp = None
    if not (rot_on | sc_on | el_on).any():
        return x, label
    return warp(x, theta, label, displacement=disp)
