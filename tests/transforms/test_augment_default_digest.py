"""The default augmentation draws pinned values: presets, shear and elastic deformation add no draws.

The literal values are those of the pipeline without presets, shear and elastic deformation
(same inputs, same seed); the config goes through ``resolve`` (the preset machinery) as a
run's does.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from segshift.engine.config import resolve
from segshift.transforms.augment import AugmentConfig, augment_batch

# (sha256 of image and label bytes, float64 sum of the image, sum of the labels) of augment_batch
# on _batch() with torch.Generator().manual_seed(7), of the pipeline without presets; the digests
# on an AVX2 CPU (torch 2.13), the sums (to 1e-6) on any CPU.
PINNED = {
    "default": ("e67b4758ed9e9c2ab262b904806d6be58a1a82e9ca5298c58d4a0fd9a5100bbc", -7921.4621553123, 3868),
    "switches": ("008bd2c946029c49f4dab234fed95963f16b85176b29505b16811df51a133d7b", -1501.42797610478, 3868),
    "bigaug": ("cfa65831aaf7f8be723b4a09dd6568759bbb296d1cde766f03c9f2ec464ccc2c", -17960.25671684742, 3370),
    "resolution": ("fd633e213d0c5b43565779790266d3cae6cb3cdce19228757dc69ae2ccc55f77", -23895.45835929364, 2961),
}
DIGEST_CPU = "AVX2"


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    img = torch.randn(6, 1, 40, 48, generator=g) * 2 + 0.5
    yy, xx = torch.meshgrid(torch.arange(40), torch.arange(48), indexing="ij")
    lab = ((yy - 18) ** 2 + (xx - 26) ** 2 < 120).long() + 2 * ((yy - 28) ** 2 + (xx - 14) ** 2 < 40).long()
    return img, lab.expand(6, -1, -1).clone()


@pytest.mark.parametrize(
    ("case", "sets"),
    [
        ("default", []),
        ("switches", ["augment.flip=true", "augment.noise_std=0.2", "augment.blur_sigma=1.0"]),
        ("bigaug", ["augment.bigaug.enabled=true"]),
        ("resolution", ["augment.resolution=[1.0, 2.5]"]),
    ],
)
def test_default_preset_draws_the_pinned_values(case, sets):
    cfg = AugmentConfig.from_dict(resolve("source-only", sets=sets)["augment"], spacing=1.5)
    img, lab = _batch()
    out, olab = augment_batch(img, lab, cfg, torch.Generator().manual_seed(7))
    digest, total, label_total = PINNED[case]
    assert float(out.double().sum()) == pytest.approx(total, rel=1e-6) and int(olab.sum()) == label_total
    if torch.backends.cpu.get_cpu_capability() == DIGEST_CPU:
        assert hashlib.sha256(out.numpy().tobytes() + olab.numpy().tobytes()).hexdigest() == digest
