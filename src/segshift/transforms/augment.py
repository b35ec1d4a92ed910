"""Random augmentation of 2D slice batches, on tensors, driven by an explicit generator.

Every random number comes from the ``torch.Generator`` passed in, so a run is reproducible
and a resumed run draws the same numbers as an uninterrupted one (the engine checkpoints
the generator). Spatial transforms (rotation, isotropic scaling, translation, optional
flips) are one affine warp per sample via ``affine_grid``/``grid_sample`` (bilinear for
images, nearest for labels); intensity transforms (gamma on the per-sample min-max range,
contrast, brightness, Gaussian noise, blur) act on images only.

:func:`resolution_augment` (Liu et al. 2020, section 2.1, "Resolution Augmentation") acts in
physical space: it rescales each slice from the preprocessed spacing to a random in-plane
pixel size in ``augment.resolution`` (mm) and centre-crops or pads back to the crop size,
before the other transforms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segshift.errors import SegshiftError
from segshift.transforms.bigaug import BigAugConfig
from segshift.transforms.gin import GinConfig
from segshift.transforms.ops import _blur, _uniform


@dataclasses.dataclass
class AugmentConfig:
    """Ranges of the random transforms (see ``augment:`` in ``configs/base.yaml``)."""

    enabled: bool = True
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.1
    flip: bool = False
    gamma: tuple[float, float] = (0.7, 1.5)
    contrast: tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.1
    noise_std: float = 0.0
    blur_sigma: float = 0.0
    resolution: tuple[float, float] | None = None
    """Resolution augmentation range in mm per pixel (``None``: off)."""
    spacing: float | None = None
    """In-plane pixel size (mm) of the preprocessed slices (``data.preprocess.target_spacing``)."""
    gin: GinConfig = dataclasses.field(default_factory=GinConfig)
    """GIN + IPA views of the source images (:mod:`segshift.transforms.gin`; made by the engine)."""
    bigaug: BigAugConfig = dataclasses.field(default_factory=BigAugConfig)
    """BigAug's stacked transforms (:mod:`segshift.transforms.bigaug`), in place of the warp and intensity ones."""

    def __post_init__(self) -> None:
        if self.resolution is None:
            return
        r = self.resolution
        if len(r) != 2 or not all(math.isfinite(v) and v > 0 for v in r) or r[0] > r[1]:
            raise SegshiftError(f"augment.resolution must be [min_mm, max_mm] with 0 < min <= max (or null), got {list(r)}")
        if self.spacing is None or not self.spacing > 0:
            raise SegshiftError(
                f"augment.resolution needs a fixed preprocessed pixel size: set data.preprocess.target_spacing (got {self.spacing!r})"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], spacing: float | None = None) -> AugmentConfig:
        """From the ``augment:`` section; ``spacing`` is ``data.preprocess.target_spacing``."""
        kw = dict(d)
        kw["gin"] = GinConfig.from_dict(kw.get("gin"))
        kw["bigaug"] = BigAugConfig.from_dict(kw.get("bigaug"))
        for key in ("scale", "gamma", "contrast"):
            if key in kw and kw[key] is not None:
                kw[key] = tuple(float(v) for v in kw[key])
        if kw.get("resolution") is not None:
            try:
                kw["resolution"] = tuple(float(v) for v in kw["resolution"])
            except (TypeError, ValueError) as exc:
                raise SegshiftError(f"augment.resolution must be [min_mm, max_mm] or null, got {kw['resolution']!r}") from exc
        return cls(**kw, spacing=None if spacing is None else float(spacing))


def spatial_params(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random ``(n, 2, 3)`` affine matrices for ``affine_grid`` (output -> input coordinates)."""
    angle = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, gen) * math.pi / 180
    scale = _uniform(n, *cfg.scale, gen)
    shift = _uniform(2 * n, -2 * cfg.translate, 2 * cfg.translate, gen).view(n, 2)  # grid units span 2
    flips = torch.ones(n, 2)
    if cfg.flip:
        flips = torch.where(torch.rand(n, 2, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flips[:, 0], -sin * flips[:, 1]
    theta[:, 1, 0], theta[:, 1, 1] = sin * flips[:, 0], cos * flips[:, 1]
    theta[:, :, 2] = shift
    return theta


def warp(
    image: torch.Tensor, theta: torch.Tensor, label: torch.Tensor | None = None, displacement: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply per-sample affine warps; outside the image, images take their minimum, labels 0.

    ``displacement`` ``(B, H, W, 2)`` (grid units, x then y) is added to the affine grid
    (an elastic deformation in the same resampling).
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


def intensity(image: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Gamma, contrast, brightness, blur and noise, per sample."""
    n = image.shape[0]
    lo = image.amin(dim=(1, 2, 3), keepdim=True)
    hi = image.amax(dim=(1, 2, 3), keepdim=True)
    rng = (hi - lo).clamp_min(1e-6)
    gamma = _uniform(n, *cfg.gamma, gen).view(n, 1, 1, 1)
    x = ((image - lo) / rng).clamp(0, 1) ** gamma * rng + lo
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform(n, *cfg.contrast, gen).view(n, 1, 1, 1) + mean
    x = x + _uniform(n, -cfg.brightness, cfg.brightness, gen).view(n, 1, 1, 1)
    if cfg.blur_sigma > 0:
        x = torch.stack([_blur(x[i : i + 1], float(s))[0] for i, s in enumerate(_uniform(n, 0, cfg.blur_sigma, gen))])
    if cfg.noise_std > 0:
        std = _uniform(n, 0, cfg.noise_std, gen).view(n, 1, 1, 1)
        x = x + std * torch.randn(x.shape, generator=gen)
    return x


def resolution_params(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random pixel sizes (mm), uniform in ``cfg.resolution`` (Liu et al. 2020, section 2.1)."""
    assert cfg.resolution is not None
    return _uniform(n, *cfg.resolution, gen).double()


def _centre_fit(x: torch.Tensor, size: tuple[int, int], fill: torch.Tensor | float) -> torch.Tensor:
    """Centre-crop or pad ``x`` (C, h, w) to ``size`` (padding with ``fill``)."""
    h, w = x.shape[-2:]
    H, W = size
    out = torch.empty((x.shape[0], H, W), dtype=x.dtype)
    out[...] = fill
    # overlap of the centred boxes, in source and destination coordinates
    sh, dh = (max(0, (h - H) // 2), max(0, (H - h) // 2))
    sw, dw = (max(0, (w - W) // 2), max(0, (W - w) // 2))
    ch, cw = min(h, H), min(w, W)
    out[:, dh : dh + ch, dw : dw + cw] = x[:, sh : sh + ch, sw : sw + cw]
    return out


def resample_to_spacing(
    image: torch.Tensor, label: torch.Tensor | None, spacing: float, new_spacing: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rescale each slice from ``spacing`` mm to ``new_spacing[i]`` mm per pixel, then centre-crop/pad.

    Liu et al. 2020, section 2.1: "rescaling the original image to a random resolution in
    this range. Finally we center-crop the rescaled image to uniform dimensions". A slice of
    ``H`` pixels at ``spacing`` becomes ``round(H * spacing / new_spacing)`` pixels (bilinear,
    antialiased when shrinking; labels nearest), and is centre-cropped (or padded with the
    slice minimum, labels with 0) back to ``H x W``, so one output pixel spans
    ``new_spacing`` mm and the field of view changes accordingly.

    Args:
        image: ``(B, 1, H, W)`` float slices at ``spacing`` mm.
        label: ``(B, H, W)`` integer labels or ``None``.
        spacing: the input pixel size in mm.
        new_spacing: ``(B,)`` output pixel sizes in mm.
    """
    H, W = image.shape[-2:]
    imgs, labs = [], []
    for i in range(image.shape[0]):
        f = float(spacing) / float(new_spacing[i])
        size = (max(1, round(H * f)), max(1, round(W * f)))
        x = image[i : i + 1]
        floor = x.amin()
        r = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=f < 1)[0]
        imgs.append(_centre_fit(r, (H, W), floor))
        if label is not None:
            lb = F.interpolate(label[i : i + 1, None].float(), size=size, mode="nearest-exact")[0]
            labs.append(_centre_fit(lb, (H, W), 0.0)[0].round().to(label.dtype))
    return torch.stack(imgs), (torch.stack(labs) if label is not None else None)


def resolution_augment(
    image: torch.Tensor, label: torch.Tensor | None, cfg: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resolution augmentation (RA): each slice to a random pixel size in ``cfg.resolution`` mm."""
    if cfg.resolution is None:
        return image, label
    assert cfg.spacing is not None
    return resample_to_spacing(image, label, cfg.spacing, resolution_params(image.shape[0], cfg, gen))


def augment_batch(
    image: torch.Tensor, label: torch.Tensor | None, cfg: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augment a CPU batch ``(B, 1, H, W)`` (and labels ``(B, H, W)``) with ``gen``'s randomness.

    Order: resolution augmentation (when ``cfg.resolution`` is set), the affine warp, then
    the intensity transforms; with ``augment.bigaug.enabled`` BigAug's stack replaces the
    last two. (GIN views are the engine's, after this.)
    """
    if not cfg.enabled:
        return image, label
    image, label = resolution_augment(image, label, cfg, gen)
    if cfg.bigaug.enabled:
        from segshift.transforms.bigaug import bigaug_batch

        return bigaug_batch(image, label, cfg.bigaug, gen)
    theta = spatial_params(image.shape[0], cfg, gen)
    image, label = warp(image, theta, label)
    return intensity(image, cfg, gen), label
