"""GIN + IPA (Ouyang et al. 2022): label geometry kept, fresh draws, smooth blend maps, the config's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from segshift.errors import SegshiftError
from segshift.losses import consistency_kl
from segshift.transforms.augment import AugmentConfig
from segshift.transforms.gin import GinConfig, gin, gin_views, ipa_mask


def _regions(n: int = 4, size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Piecewise-constant images: background, a disc and a ring, with per-image intensities."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    lab = np.zeros((size, size), np.int64)
    lab[r < 34] = 2
    lab[r < 18] = 1
    g = np.random.default_rng(0)
    imgs = np.stack([np.choose(lab, g.normal(0, 1, 3)) for _ in range(n)]).astype(np.float32)
    return torch.from_numpy(imgs)[:, None], torch.from_numpy(lab)


def test_gin_keeps_the_label_geometry():
    """Within each labelled region (away from its edges by the network's receptive field) a GIN rendering is
    constant: the random network re-renders intensities and textures, never moves a boundary."""
    x, lab = _regions()
    cfg = GinConfig(enabled=True, layers=4, kernel_sizes=(1, 3))
    y = gin(x, cfg, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.isfinite(y).all()
    reach = cfg.layers * (max(cfg.kernel_sizes) // 2)
    for k in (0, 1, 2):
        inner = (
            ndi.binary_erosion(lab.numpy() == k, iterations=reach + 1)
            & (np.indices(lab.shape).min(0) > reach)
            & (np.indices(lab.shape).max(0) < lab.shape[0] - reach - 1)
        )
        assert inner.sum() > 20
        vals = y[:, 0][:, torch.from_numpy(inner)]
        assert (vals.std(dim=1) < 1e-4 * (1 + vals.abs().mean(dim=1))).all(), k
    # and the regions still differ from one another in (almost) every rendering
    means = torch.stack([y[:, 0][:, lab == k].mean(1) for k in (0, 1, 2)], 1)
    assert ((means[:, 0] - means[:, 1]).abs() > 1e-3).float().mean() >= 0.75


def test_gin_draws_differ_from_each_other_and_from_the_input_and_keep_the_norm():
    x, _ = _regions(n=6)
    gen = torch.Generator().manual_seed(1)
    cfg = GinConfig(enabled=True)
    a, b = gin(x, cfg, gen), gin(x, cfg, gen)
    assert not torch.allclose(a, b, atol=1e-3)
    assert (a - x).abs().mean() > 0.05 and (a - b).abs().mean() > 0.05
    torch.testing.assert_close(a.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-3, atol=1e-3)
    # the same seed draws the same rendering (runs are reproducible and resumable)
    torch.testing.assert_close(gin(x, cfg, torch.Generator().manual_seed(1)), a)
    # mix = [0, 0] keeps the input
    torch.testing.assert_close(gin(x, GinConfig(enabled=True, mix=(0.0, 0.0)), gen), x, rtol=1e-4, atol=1e-4)


def test_ipa_masks_are_smooth_and_span_zero_to_one():
    cfg = GinConfig(enabled=True)
    m = ipa_mask(8, (96, 96), cfg, torch.Generator().manual_seed(0))
    assert m.shape == (8, 1, 96, 96)
    assert torch.allclose(m.amin(dim=(2, 3)), torch.zeros(8, 1)) and torch.allclose(m.amax(dim=(2, 3)), torch.ones(8, 1))
    step = torch.cat([(m[..., 1:, :] - m[..., :-1, :]).abs().flatten(1), (m[..., 1:] - m[..., :-1]).abs().flatten(1)], 1)
    # control points every quarter of the side: neighbouring pixels differ by a few percent at most
    assert step.max() < 0.1 and step.mean() < 0.02
    noise = torch.rand(8, 1, 96, 96)
    assert (noise[..., 1:] - noise[..., :-1]).abs().mean() > 10 * step.mean()
    # and it varies over the image (a blend, not a constant)
    assert (m.flatten(1).std(1) > 0.1).all()


def test_views_are_ipa_blends_plus_a_gin_view():
    x, _ = _regions(n=3)
    v = gin_views(x, GinConfig(enabled=True), torch.Generator().manual_seed(2))
    assert v.shape == (3, 3, 1, 96, 96)
    assert all(not torch.allclose(v[i], v[j], atol=1e-3) for i in range(3) for j in range(i))
    assert gin_views(x, GinConfig(enabled=True, views=1, consistency=0.0), torch.Generator()).shape == (1, 3, 1, 96, 96)


def test_consistency_is_zero_for_agreeing_views_and_positive_otherwise():
    logits = torch.randn(2, 4, 8, 8)
    assert float(consistency_kl(torch.stack([logits, logits, logits]))) == pytest.approx(0.0, abs=1e-6)
    other = torch.stack([logits, logits.flip(-1), torch.zeros_like(logits)]).requires_grad_(True)
    loss = consistency_kl(other)
    assert float(loss.detach()) > 0.01
    loss.backward()
    assert other.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        consistency_kl(logits[None])


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        ({"layers": 1}, "layers"),
        ({"kernel_sizes": [2]}, "kernel_sizes"),
        ({"mix": [0.5, 0.2]}, "mix"),
        ({"ipa_grid": 0}, "ipa_grid"),
        ({"views": 4}, "views"),
        ({"views": 1}, "consistency > 0 needs views"),
        ({"consistency": -1}, "consistency"),
        ({"colour": 1}, "unknown"),
    ],
)
def test_bad_gin_settings_are_refused(bad, msg):
    with pytest.raises(SegshiftError, match=msg):
        AugmentConfig.from_dict({"gin": {"enabled": True, **bad}})
