"""Random augmentation of 2D slice batches, on tensors, driven by an explicit generator.

Every random number comes from the ``torch.Generator`` passed in, so a run is reproducible
and a resumed run draws the same numbers as an uninterrupted one (the engine checkpoints
the generator). Spatial transforms (rotation, isotropic scaling, translation, optional
shear and flips, optional elastic deformation) are one warp per sample via
``affine_grid``/``grid_sample`` (bilinear for images, nearest for labels;
:mod:`segshift.transforms.ops`); intensity transforms (gamma on the per-sample min-max
range, contrast, brightness, Gaussian noise, blur) act on images only.

:func:`resolution_augment` (Liu et al. 2020, section 2.1, "Resolution Augmentation") acts in
physical space: it rescales each slice from the preprocessed spacing to a random in-plane
pixel size in ``augment.resolution`` (mm) and centre-crops or pads back to the crop size,
before the other transforms.

A named preset (``augment.preset``, :data:`AUGMENT_PRESETS`) fills the section's values
when the config is resolved (:func:`segshift.engine.config.resolve`); explicit keys override
it, and the run's ``config.yaml`` records the values used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segshift.errors import SegshiftError
from segshift.transforms.bigaug import BigAugConfig, bigaug_batch
from segshift.transforms.gin import GinConfig
from segshift.transforms.ops import affine_theta, blur, elastic_field, pixels_to_grid, uniform, warp

AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "gin-authors": {
        "rotate_deg": 20.0,
        "translate": 15 / 192,
        "shear_deg": 20.0,
        "scale": [0.5, 1.5],
        "flip": False,
        "elastic_alpha": 20.0,
        "elastic_sigma": 5.0,
        "gamma": [0.2, 1.8],
        "contrast": [0.6, 1.5],
        "brightness": 10.0,
        "noise_std_min": 0.15,
        "noise_std": 0.15,
        "blur_sigma": 0.0,
    },
}
"""Named values of the ``augment:`` section; keys a preset leaves out keep ``base.yaml``'s.

``default``: ``base.yaml`` as it is. ``gin-authors``: the base augmentation of the GIN-IPA
authors' code (Ouyang et al., IEEE TMI 2022; ``dataloaders/transform_utils.py`` with their
``aug_mode = "strongbright"``) on every sample: rotation +-20 deg, shift +-15 px of their
192 px crop (``translate`` 15/192 = 0.078125 of the crop side), shear +-20 deg, isotropic
scale 0.5-1.5, Simard elastic deformation (alpha 20, sigma 5 px), no flips; contrast
0.6-1.5 about the mean, brightness +-10 (z-score units: their MR volumes are z-scored, as
segshift's are), gamma 0.2-1.8 on the min-max range, Gaussian noise of std 0.15.
"""


def augment_preset(name: Any) -> dict[str, Any]:
    """The values of preset ``name`` (see :data:`AUGMENT_PRESETS`)."""
    if not isinstance(name, str) or name not in AUGMENT_PRESETS:
        raise SegshiftError(f"config augment.preset: unknown preset {name!r} (known: {', '.join(AUGMENT_PRESETS)})")
    return dict(AUGMENT_PRESETS[name])


@dataclasses.dataclass
class AugmentConfig:
    """Ranges of the random transforms (see ``augment:`` in ``configs/base.yaml``)."""

    enabled: bool = True
    preset: str = "default"
    """The preset the values were filled from (:data:`AUGMENT_PRESETS`; a record, applied by the config)."""
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.1
    shear_deg: float = 0.0
    flip: bool = False
    elastic_alpha: float = 0.0
    """Elastic deformation strength in px (:func:`segshift.transforms.ops.elastic_field`; 0: off)."""
    elastic_sigma: float = 5.0
    """Smoothing of the elastic displacement field (Gaussian std, px)."""
    gamma: tuple[float, float] = (0.7, 1.5)
    contrast: tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.1
    noise_std: float = 0.0
    """Upper end of each image's noise std, drawn from U(noise_std_min, noise_std)."""
    noise_std_min: float = 0.0
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
        augment_preset(self.preset)
        if not 0 <= self.noise_std_min <= self.noise_std:
            raise SegshiftError(
                f"augment.noise_std_min must be in [0, augment.noise_std], got {self.noise_std_min} (noise_std {self.noise_std})"
            )
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
    """Random ``(n, 2, 3)`` affine matrices for ``affine_grid`` (output -> input coordinates).

    Draws, in this order: angle, scale, shift (x, y), flips (if ``cfg.flip``), shear (if
    ``cfg.shear_deg > 0``). Every range is symmetric (scale: ``1/s`` is drawn where the
    image is magnified by ``s``), so drawing the inverse map draws the transforms' distribution.
    """
    angle = uniform(n, -cfg.rotate_deg, cfg.rotate_deg, gen) * math.pi / 180
    scale = uniform(n, *cfg.scale, gen)
    shift = uniform(2 * n, -2 * cfg.translate, 2 * cfg.translate, gen).view(n, 2)  # grid units span 2
    flips = torch.ones(n, 2)
    if cfg.flip:
        flips = torch.where(torch.rand(n, 2, generator=gen) < 0.5, -1.0, 1.0)
    shear = uniform(n, -cfg.shear_deg, cfg.shear_deg, gen) * math.pi / 180 if cfg.shear_deg > 0 else None
    return affine_theta(angle, scale, shift, flips, shear)


def elastic_displacement(theta: torch.Tensor, size: tuple[int, int], cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """The elastic field (:func:`~segshift.transforms.ops.elastic_field`) for :func:`warp`, ``(n, H, W, 2)`` grid units.

    The field displaces the output pixels before the affine map (the output is
    ``image(A (u + d(u)) + t)``: the elastic deformation follows the affine one), so it is
    mapped by each sample's linear part ``A``.
    """
    field = pixels_to_grid(elastic_field(theta.shape[0], size, cfg.elastic_alpha, cfg.elastic_sigma, gen))
    return torch.einsum("nij,nhwj->nhwi", theta[:, :, :2], field)


def intensity(image: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Gamma, contrast, brightness, blur and noise, per sample."""
    n = image.shape[0]
    lo = image.amin(dim=(1, 2, 3), keepdim=True)
    hi = image.amax(dim=(1, 2, 3), keepdim=True)
    rng = (hi - lo).clamp_min(1e-6)
    gamma = uniform(n, *cfg.gamma, gen).view(n, 1, 1, 1)
    x = ((image - lo) / rng).clamp(0, 1) ** gamma * rng + lo
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * uniform(n, *cfg.contrast, gen).view(n, 1, 1, 1) + mean
    x = x + uniform(n, -cfg.brightness, cfg.brightness, gen).view(n, 1, 1, 1)
    if cfg.blur_sigma > 0:
        x = torch.stack([blur(x[i : i + 1], float(s))[0] for i, s in enumerate(uniform(n, 0, cfg.blur_sigma, gen))])
    if cfg.noise_std > 0:
        std = uniform(n, cfg.noise_std_min, cfg.noise_std, gen).view(n, 1, 1, 1)
        x = x + std * torch.randn(x.shape, generator=gen)
    return x


def resolution_params(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random pixel sizes (mm), uniform in ``cfg.resolution`` (Liu et al. 2020, section 2.1)."""
    assert cfg.resolution is not None
    return uniform(n, *cfg.resolution, gen).double()


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

    Order: resolution augmentation (when ``cfg.resolution`` is set), the affine warp (with
    the elastic field when ``cfg.elastic_alpha > 0``, in the same resampling), then the
    intensity transforms; with ``augment.bigaug.enabled`` BigAug's stack replaces the last
    two. (GIN views are the engine's, after this.)
    """
    if not cfg.enabled:
        return image, label
    image, label = resolution_augment(image, label, cfg, gen)
    if cfg.bigaug.enabled:
        return bigaug_batch(image, label, cfg.bigaug, gen)
    theta = spatial_params(image.shape[0], cfg, gen)
    disp = elastic_displacement(theta, (image.shape[-2], image.shape[-1]), cfg, gen) if cfg.elastic_alpha > 0 else None
    image, label = warp(image, theta, label, displacement=disp)
    return intensity(image, cfg, gen), label
