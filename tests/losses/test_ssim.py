"""SSIM and the structure-weighted SSIM loss of Unet-GAN (yan2019 eqs. 2-3), against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from segshift.losses import StructureSSIMLoss, ssim, ssim_map
from segshift.losses.ssim import gaussian_window, ssim_components


def test_constant_images_give_the_hand_computed_luminance_term():
    # constant 1 vs constant 2, L = 1: c1 = 1e-4; sigma = 0, so c = s = 1 and SSIM = l^alpha
    x, y = torch.ones(1, 1, 16, 16), torch.full((1, 1, 16, 16), 2.0)
    l_expected = (2 * 1 * 2 + 1e-4) / (1 + 4 + 1e-4)
    lum, con, struct = ssim_components(x, y, data_range=1.0)
    assert torch.allclose(lum, torch.full_like(lum, l_expected), atol=1e-6)
    assert torch.allclose(con, torch.ones_like(con), atol=1e-5)
    assert torch.allclose(struct, torch.ones_like(struct), atol=1e-5)
    got = float(StructureSSIMLoss(0.1, 0.1, 1.0, data_range=1.0)(x, y))
    assert math.isclose(got, (1 - l_expected**0.1) ** 2, rel_tol=1e-3)  # 4.87e-4
    assert math.isclose(float(ssim(x, y, data_range=1.0)[0]), l_expected, rel_tol=1e-5)


def test_a_contrast_and_brightness_change_keeps_structure():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 40, 40, generator=g)
    y = 2 * x + 3  # same structure, new luminance and contrast
    _lum, con, struct = ssim_components(x, y, data_range=4.0)
    assert torch.allclose(struct, torch.ones_like(struct), atol=1e-3)  # s = (2 var + c3) / (2 var + c3)
    assert abs(float(con.mean()) - 0.8) < 0.01  # c = (4 var + c2) / (5 var + c2) -> 0.8
    weighted = float(StructureSSIMLoss()(x, y))
    plain = float(StructureSSIMLoss(1.0, 1.0, 1.0)(x, y))
    shuffled = float(StructureSSIMLoss()(x, x.flip(-1).flip(-2)))
    # l = 4 / 16.25 and c = 0.8: (1 - l^0.1 c^0.1)^2 = 0.022 weighted, (1 - l c)^2 = 0.64 plain
    assert weighted < 0.03 and plain > 0.5  # the structure-weighted loss barely penalises an appearance change
    assert shuffled > 10 * weighted  # but it does penalise a change of structure


def test_identical_images_and_bad_input():
    x = torch.randn(1, 1, 24, 24)
    assert float(StructureSSIMLoss()(x, x)) < 1e-8
    assert ssim_map(x, x).shape == (1, 1, 14, 14)  # "valid" 11x11 window
    assert math.isclose(float(gaussian_window().sum()), 1.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="larger than the image"):
        ssim_map(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="data_range"):
        StructureSSIMLoss(data_range=0)


def test_negative_means_of_z_scored_images_stay_finite_and_differentiable():
    x = (torch.randn(1, 1, 32, 32) - 2).requires_grad_(True)
    y = torch.randn(1, 1, 32, 32) + 2  # local means of opposite sign: l < 0 is clamped
    loss = StructureSSIMLoss()(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
