"""``histmatch``: source-only with histogram matching of every image to a reference domain.

The "+HM" row of Wang et al. 2019 (Table 1): "we perform histogram match operation on both
source and target data". Matching is part of the preprocessing
(:mod:`segshift.transforms.intensity`), fitted on the reference domain's training images
(``data.histmatch_reference``: ``source`` by default, so target images take on the source
look) and saved with the model, so prediction applies exactly the same mapping.

Warm start (``--init RUN``): the segmenter ``seg`` comes from the init run (whose
preprocessing, histogram matching included, the run reuses).
"""

from __future__ import annotations

from segshift.methods.base import register
from segshift.methods.source_only import SourceOnly


@register
class HistMatch(SourceOnly):
    name = "histmatch"
    paper = "wang2019 (+HM row)"
    summary = "Source-only with histogram matching to a reference domain (preprocessing)."
