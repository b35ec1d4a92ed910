"""Resolution augmentation (Liu et al. 2020, section 2.1): slices end up at the requested pixel size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segshift.errors import SegshiftError
from segshift.transforms.augment import AugmentConfig, augment_batch, resample_to_spacing, resolution_params

SPACING = 1.0  # mm per pixel of the "preprocessed" slices below
RADIUS_MM = 20.0


def _disc(n=3, size=96, radius_mm=RADIUS_MM, spacing=SPACING):
    """A disc of ``radius_mm`` (label 1, intensity 5) on a background of 0, at ``spacing`` mm."""
    c = (size - 1) / 2
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    inside = np.hypot(i - c, j - c) * spacing < radius_mm
    lab = torch.from_numpy(np.repeat(inside[None], n, 0).astype(np.int64))
    return lab[:, None].float() * 5.0, lab


def _radius_mm(label: torch.Tensor, spacing: float) -> np.ndarray:
    """Radius in mm of each slice's disc, from its area in pixels."""
    return np.sqrt(label.flatten(1).sum(1).double().numpy() / math.pi) * spacing


@pytest.mark.parametrize("new", [0.954, 1.6, 2.692])
def test_rescaled_disc_has_its_physical_size_at_the_new_spacing(new):
    img, lab = _disc()
    out, olab = resample_to_spacing(img, lab, SPACING, torch.full((3,), new, dtype=torch.float64))
    assert out.shape == img.shape and olab.shape == lab.shape and olab.dtype == lab.dtype
    # measured in mm at the new pixel size, the disc keeps its 20 mm radius (within half a pixel)
    r = _radius_mm(olab, new)
    assert np.all(np.abs(r - RADIUS_MM) < 0.5 * new), r
    # in pixels it shrank by spacing / new: 20 px -> 20 / new px
    assert np.allclose(_radius_mm(olab, 1.0), RADIUS_MM / new, atol=0.5)
    # the image follows the label: the bright pixels are the disc's
    bright = out[:, 0] > 2.5
    assert (bright == olab.bool()).float().mean() > 0.99
    assert out.min() >= -1e-4  # padding (coarser spacing) uses the slice minimum


def test_random_spacings_come_from_the_range_and_are_what_the_batch_shows():
    cfg = AugmentConfig.from_dict({"enabled": True, "resolution": [0.954, 2.692]}, spacing=SPACING)
    img, lab = _disc(n=16)
    drawn = resolution_params(16, cfg, torch.Generator().manual_seed(4))
    assert drawn.min() >= 0.954 and drawn.max() <= 2.692 and drawn.max() - drawn.min() > 0.8
    # augment_batch with every other transform at identity draws the same spacings first
    ident = {
        "enabled": True,
        "resolution": [0.954, 2.692],
        "rotate_deg": 0.0,
        "scale": [1, 1],
        "translate": 0.0,
        "gamma": [1, 1],
        "contrast": [1, 1],
        "brightness": 0.0,
    }
    _, olab = augment_batch(img, lab, AugmentConfig.from_dict(ident, spacing=SPACING), torch.Generator().manual_seed(4))
    measured = RADIUS_MM / _radius_mm(olab, 1.0)  # the spacing implied by the disc's size in pixels
    assert np.allclose(measured, drawn.numpy(), rtol=0.04), (measured, drawn)


def test_ra_off_by_default_and_bad_values_name_the_key():
    img, lab = _disc()
    cfg = AugmentConfig.from_dict(
        {"enabled": True, "rotate_deg": 0.0, "scale": [1, 1], "translate": 0.0, "gamma": [1, 1], "contrast": [1, 1], "brightness": 0.0}
    )
    _out, olab = augment_batch(img, lab, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(olab, lab)
    for bad in ([2.0, 1.0], [0.0, 1.0], [1.0], "fine"):
        with pytest.raises(SegshiftError, match="augment.resolution"):
            AugmentConfig.from_dict({"resolution": bad}, spacing=1.5)
    with pytest.raises(SegshiftError, match="data.preprocess.target_spacing"):
        AugmentConfig.from_dict({"resolution": [1.0, 2.0]}, spacing=None)
