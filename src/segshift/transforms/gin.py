"""GIN + IPA: causality-inspired intensity randomisation (Ouyang et al., IEEE TMI 2022).

C. Ouyang, C. Chen, S. Li, Z. Li, C. Qin, W. Bai, D. Rueckert, "Causality-inspired
single-source domain generalization for medical image segmentation", IEEE TMI 42(4), 2023
(early access 2022); the authors' code (``models/imagefilter.py``, ``models/exp_trainer.py``)
gives the defaults the paper leaves out. Nothing here has learnable parameters.

* **GIN** (global intensity non-linear augmentation, section III-B): a shallow network of
  ``layers`` convolutions whose weights and biases are drawn afresh from N(0, 1) for every
  image (one grouped convolution per layer; each layer's kernel size drawn from
  ``kernel_sizes`` per batch), leaky-ReLU between layers, ``channels`` intermediate
  channels, one output channel. The output is blended with the input, ``a g(x) + (1 - a)
  x`` with ``a ~ U(mix)`` per image, and rescaled to the input's Frobenius norm.
* **IPA** (interventional pseudo-correlation augmentation, section III-C): two GIN
  renderings ``g1``, ``g2`` are blended with a smooth random map ``b`` in [0, 1]:
  ``b g1 + (1 - b) g2`` and its mirror ``(1 - b) g1 + b g2``, so neighbouring structures
  change appearance independently. ``b`` comes from Gaussian control points
  (std ``ipa_epsilon``) every ``ipa_grid`` of the crop side, interpolated smoothly (bicubic,
  for the authors' second-order B-spline), exponentiated (their log space) and min-max
  rescaled per image.
* **Views** (:func:`gin_views`): the authors train on three views of each image, the two IPA
  blends and a third plain GIN rendering; the supervised loss reads the first, and a
  consistency loss (:func:`segshift.losses.consistency_kl`) ties the three predictions to
  their mean (``consistency``, their ``lambda_consist`` = 10).

Every random number comes from the ``torch.Generator`` passed in (the engine's source
augmentation stream), so runs are reproducible and resumable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segshift.errors import SegshiftError


@dataclasses.dataclass(frozen=True)
class GinConfig:
    """The ``augment.gin`` section (see ``configs/base.yaml``); defaults are the authors'."""

    enabled: bool = False
    layers: int = 4
    kernel_sizes: tuple[int, ...] = (1, 3)
    channels: int = 2
    mix: tuple[float, float] = (0.0, 1.0)
    ipa: bool = True
    ipa_grid: float = 0.25
    ipa_epsilon: float = 0.3
    views: int = 3
    consistency: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if self.layers < 2:
            problems.append(f"layers must be >= 2, got {self.layers}")
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            problems.append(f"kernel_sizes must be odd and >= 1, got {list(self.kernel_sizes)}")
        if self.channels < 1:
            problems.append(f"channels must be >= 1, got {self.channels}")
        lo, hi = self.mix
        if not (0.0 <= lo <= hi <= 1.0):
            problems.append(f"mix must be [lo, hi] with 0 <= lo <= hi <= 1, got {list(self.mix)}")
        if not (0.0 < self.ipa_grid <= 1.0):
            problems.append(f"ipa_grid must be in (0, 1] (a fraction of the crop side), got {self.ipa_grid}")
        if not (self.ipa_epsilon > 0 and math.isfinite(self.ipa_epsilon)):
            problems.append(f"ipa_epsilon must be > 0, got {self.ipa_epsilon}")
        if self.views not in (1, 2, 3):
            problems.append(f"views must be 1, 2 or 3, got {self.views}")
        if not (self.consistency >= 0 and math.isfinite(self.consistency)):
            problems.append(f"consistency must be >= 0, got {self.consistency}")
        if self.consistency > 0 and self.views < 2:
            problems.append("consistency > 0 needs views >= 2 (or set consistency: 0)")
        if problems:
            raise SegshiftError("augment.gin: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> GinConfig:
        kw = dict(d or {})
        unknown = set(kw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SegshiftError(f"augment.gin: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            if "kernel_sizes" in kw:
                kw["kernel_sizes"] = tuple(int(k) for k in kw["kernel_sizes"])
            if "mix" in kw:
                kw["mix"] = tuple(float(v) for v in kw["mix"])
                if len(kw["mix"]) != 2:
                    raise ValueError
        except (TypeError, ValueError) as exc:
            raise SegshiftError(f"augment.gin: kernel_sizes must be a list of odd ints and mix [lo, hi], got {d!r}") from exc
        return cls(**kw)

    @property
    def uses_consistency(self) -> bool:
        return self.enabled and self.consistency > 0 and self.views >= 2


def gin(x: torch.Tensor, cfg: GinConfig, gen: torch.Generator) -> torch.Tensor:
    """One GIN rendering of ``x`` ``(B, 1, H, W)``: fresh random weights per image (see the module docstring)."""
    n, c, h, w = x.shape
    widths = [c] + [cfg.channels] * (cfg.layers - 1) + [c]
    y = x.reshape(1, n * c, h, w)
    for i in range(cfg.layers):
        k = cfg.kernel_sizes[int(torch.randint(len(cfg.kernel_sizes), (1,), generator=gen))]
        cin, cout = widths[i], widths[i + 1]
        weight = torch.randn(n * cout, cin, k, k, generator=gen).to(x.device, x.dtype)
        bias = torch.randn(n * cout, generator=gen).to(x.device, x.dtype)
        y = F.conv2d(y, weight, bias, padding=k // 2, groups=n)
        if i < cfg.layers - 1:
            y = F.leaky_relu(y)  # the authors' slope (PyTorch's default, 0.01)
    y = y.reshape(n, c, h, w)
    a = (cfg.mix[0] + (cfg.mix[1] - cfg.mix[0]) * torch.rand(n, generator=gen)).to(x.device, x.dtype).view(n, 1, 1, 1)
    mixed = a * y + (1 - a) * x
    norm_in = x.flatten(1).norm(dim=1).view(n, 1, 1, 1)
    norm_out = mixed.flatten(1).norm(dim=1).view(n, 1, 1, 1)
    return mixed * (norm_in / (norm_out + 1e-5))


def ipa_mask(n: int, size: tuple[int, int], cfg: GinConfig, gen: torch.Generator) -> torch.Tensor:
    """Smooth random blend maps ``(n, 1, H, W)`` in [0, 1] (each spans exactly 0 to 1)."""
    h, w = size
    gh = max(2, round(1 / cfg.ipa_grid) + 1)
    gw = max(2, round(1 / cfg.ipa_grid) + 1)
    points = cfg.ipa_epsilon * torch.randn(n, 1, gh, gw, generator=gen)
    field = torch.exp(F.interpolate(points, size=(h, w), mode="bicubic", align_corners=True))
    lo = field.amin(dim=(2, 3), keepdim=True)
    hi = field.amax(dim=(2, 3), keepdim=True)
    return ((field - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


def gin_views(x: torch.Tensor, cfg: GinConfig, gen: torch.Generator) -> torch.Tensor:
    """``cfg.views`` randomised views of ``x`` ``(B, 1, H, W)``, stacked ``(V, B, 1, H, W)``.

    With IPA: view 0 is ``b g1 + (1 - b) g2``, view 1 its mirror, view 2 a third GIN
    rendering (the authors' three views); without IPA every view is a GIN rendering.
    """
    n_gin = max(cfg.views, 2) if cfg.ipa else cfg.views
    renders = [gin(x, cfg, gen) for _ in range(n_gin)]
    if cfg.ipa:
        b = ipa_mask(x.shape[0], tuple(x.shape[-2:]), cfg, gen).to(x.device, x.dtype)
        g1, g2 = renders[0], renders[1]
        renders[0], renders[1] = b * g1 + (1 - b) * g2, (1 - b) * g1 + b * g2
    return torch.stack(renders[: cfg.views])
