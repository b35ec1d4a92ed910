"""``bigaug``: source-only with a deep stack of nine transforms (Zhang et al., IEEE TMI 2020).

L. Zhang et al., "Generalizing deep learning for medical image segmentation to unseen domains
via deep stacked transformation", IEEE TMI 2020: sharpness, blurriness, noise, brightness,
contrast, intensity perturbation, rotation, scaling and elastic deformation, each with
probability 0.5 (:mod:`segshift.transforms.bigaug`). The control that tells "more
augmentation" apart from GIN-IPA's "causal augmentation" at the same budget.

The engine's ``augment.bigaug`` section, switched on by ``configs/methods/bigaug.yaml``.
Warm start (``--init RUN``): the segmenter ``seg`` comes from the init run.
"""

from __future__ import annotations

from segshift.methods.base import register
from segshift.methods.source_only import SourceOnly


@register
class BigAug(SourceOnly):
    name = "bigaug"
    paper = "Zhang et al. IEEE TMI 2020 (BigAug, deep stacked transformation)"
    summary = "Source-only with nine stacked image-quality, appearance and spatial transforms, each with probability 0.5."
