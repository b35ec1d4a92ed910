"""``noise-aug``: source-only training on noise-polluted source images.

Yan et al. 2019 ("polluted Unet", Table 1): "LV-Unet trained on the polluted source domain
(i.e. original data added with random noise)", to test whether systematic augmentation can
replace adaptation. The paper gives no noise law; the standard reading used here is
additive zero-mean Gaussian noise whose standard deviation is drawn per image uniformly in
``[0, noise_std]`` (z-score units), applied with probability ``noise_prob``.

Warm start (``--init RUN``): the segmenter ``seg`` comes from the init run.
"""

from __future__ import annotations

import torch

from segshift.methods.base import Batch, register
from segshift.methods.hparams import number
from segshift.methods.source_only import SourceOnly


@register
class NoiseAug(SourceOnly):
    name = "noise-aug"
    paper = "yan2019 (noisy / polluted Unet baseline)"
    summary = "Source-only on images polluted with random Gaussian noise."
    hparams = {
        "noise_std": number(0.5, "each image's noise standard deviation is drawn from U(0, noise_std) (z-scored intensities)"),
        "noise_prob": number(1.0, "probability that an image is polluted", high=1.0),
    }

    def source_input(self, batch: Batch) -> torch.Tensor:
        x = batch.source_image
        n = x.shape[0]
        std = torch.rand(n, 1, 1, 1, device=x.device) * float(self.hp["noise_std"])
        apply = (torch.rand(n, 1, 1, 1, device=x.device) < float(self.hp["noise_prob"])).to(x.dtype)
        return x + apply * std * torch.randn_like(x)
