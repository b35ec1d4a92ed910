"""``gin-ipa``: single-source domain generalisation by causal intensity randomisation (Ouyang et al. 2022).

C. Ouyang et al., "Causality-inspired single-source domain generalization for medical image
segmentation", IEEE TMI 2022 (evaluated on bSSFP -> LGE cardiac MR, among others). Source-only
training in which every source image is seen through three random re-renderings
(:mod:`segshift.transforms.gin`: GIN's random shallow convolutional networks, IPA's blend of
two of them with a smooth random map), with the supervised loss on the first view and a
consistency loss (KL to the views' mean, weight 10) over all three. No target image is used.

Everything is the engine's ``augment.gin`` section, switched on by ``configs/methods/gin-ipa.yaml``,
so any other method can use it too (``--set augment.gin.enabled=true``; the consistency term
is added by source-only, adabn and the adversarial methods; translation and SDNet methods take
GIN's appearance randomisation alone, with ``augment.gin.consistency=0``).

Cost: a step segments 3 views of the batch (about 2-3x a source-only step).
Warm start (``--init RUN``): the segmenter ``seg`` comes from the init run.
"""

from __future__ import annotations

from segshift.methods.base import register
from segshift.methods.source_only import SourceOnly


@register
class GinIpa(SourceOnly):
    name = "gin-ipa"
    paper = "Ouyang et al. IEEE TMI 2022 (GIN + IPA, causality-inspired single-source DG)"
    summary = "Source-only on random-convolution re-renderings (GIN) blended by smooth random maps (IPA), with a consistency loss."
