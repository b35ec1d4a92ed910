"""BigAug (Zhang et al. 2020): labels follow the spatial transforms, each transform is a coin flip, reproducible."""

from __future__ import annotations

import pytest
import torch

from segshift.errors import SegshiftError
from segshift.transforms.augment import AugmentConfig, augment_batch
from segshift.transforms.bigaug import BigAugConfig, bigaug_batch


def _batch(n: int = 8, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    lab = ((yy - 24) ** 2 + (xx - 36) ** 2 < 100).long() + 2 * ((yy - 44) ** 2 + (xx - 20) ** 2 < 49).long()
    img = torch.stack([lab.float() * (1 + i) for i in range(n)])[:, None] + 0.01 * torch.randn(n, 1, size, size)
    return img, lab.expand(n, -1, -1).clone()


def test_labels_follow_the_image_through_rotation_scaling_and_elastic_deformation():
    img, lab = _batch()
    cfg = BigAugConfig(
        enabled=True,
        p=1.0,
        noise_std=(0.0, 0.0),
        gamma=(1.0, 1.0),
        brightness=0.0,
        perturb_scale=(1.0, 1.0),
        perturb_shift=0.0,
        sharpen_alpha=(0.0, 0.0),
        blur_sigma=(0.0, 0.0),
        sharpen_sigma=(0.0, 0.0),
    )
    out, olab = bigaug_batch(img, lab, cfg, torch.Generator().manual_seed(0))
    assert out.shape == img.shape and olab.shape == lab.shape and olab.dtype == lab.dtype
    assert set(olab.unique().tolist()) <= {0, 1, 2}
    assert not torch.equal(olab, lab)  # the geometry changed ...
    for i in range(len(img)):  # ... and the image's bright structures moved with their labels
        inside = out[i, 0][olab[i] > 0].mean()
        outside = out[i, 0][olab[i] == 0].mean()
        assert inside > outside + 0.5 * (1 + i) * 0.5, i


def test_bigaug_is_reproducible_and_p0_changes_nothing():
    img, lab = _batch()
    cfg = BigAugConfig(enabled=True)
    a = bigaug_batch(img, lab, cfg, torch.Generator().manual_seed(3))
    b = bigaug_batch(img, lab, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.isfinite(a[0]).all()
    assert not torch.allclose(a[0], img)
    same = bigaug_batch(img, lab, BigAugConfig(enabled=True, p=0.0), torch.Generator().manual_seed(3))
    assert torch.equal(same[0], img) and torch.equal(same[1], lab)


def test_augment_batch_uses_bigaug_when_enabled():
    img, lab = _batch()
    on = AugmentConfig.from_dict({"bigaug": {"enabled": True}})
    off = AugmentConfig.from_dict({})
    a = augment_batch(img, lab, on, torch.Generator().manual_seed(0))
    b = augment_batch(img, lab, off, torch.Generator().manual_seed(0))
    c = bigaug_batch(img, lab, on.bigaug, torch.Generator().manual_seed(0))
    assert torch.equal(a[0], c[0]) and not torch.allclose(a[0], b[0])


@pytest.mark.parametrize("bad", [{"p": 2}, {"gamma": [0, 1]}, {"scale": [1.2, 0.8]}, {"elastic_grid": 1}, {"wobble": 1}])
def test_bad_bigaug_settings_are_refused(bad):
    with pytest.raises(SegshiftError, match="bigaug"):
        AugmentConfig.from_dict({"bigaug": {"enabled": True, **bad}})
