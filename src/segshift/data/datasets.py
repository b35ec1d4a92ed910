"""PyTorch datasets of 2D slices served from a :class:`~segshift.data.cache.SliceCache`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from segshift.data.cache import SliceCache

Sample = dict[str, Any]


class SliceDataset(Dataset):
    """Slices of one cache as ``{"image": (1, H, W) float32, "label": (H, W) int64, "case", "slice"}``.

    Args:
        cache: a built slice cache.
        labelled: return labels (the cache must hold them). Use ``False`` for a target
            domain in adaptation: the sample then has no ``"label"`` key at all.
        transform: optional callable applied to the sample dict (augmentation).
        only_foreground: keep only slices whose label has foreground (labelled caches).
    """

    def __init__(
        self,
        cache: SliceCache,
        labelled: bool = True,
        transform: Callable[[Sample], Sample] | None = None,
        only_foreground: bool = False,
    ) -> None:
        if labelled and not cache.has_labels:
            raise ValueError(f"{cache.root}: cache was built without labels")
        self.cache = cache
        self.labelled = labelled
        self.transform = transform
        self.indices = np.arange(len(cache))
        if only_foreground:
            if not cache.has_labels:
                raise ValueError("only_foreground needs a labelled cache")
            labels = cache.labels
            self.indices = np.array([i for i in range(len(cache)) if labels[i].any()], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        row = int(self.indices[i])
        case, k = self.cache.rows[row]
        sample: Sample = {
            "image": torch.from_numpy(np.array(self.cache.images[row], dtype=np.float32))[None],
            "case": case,
            "slice": k,
        }
        if self.labelled:
            sample["label"] = torch.from_numpy(np.array(self.cache.labels[row], dtype=np.int64))
        if self.transform is not None:
            sample = self.transform(sample)
        return sample
