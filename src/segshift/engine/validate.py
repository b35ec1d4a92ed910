"""Validation for model selection: per-volume 3D Dice on the preprocessed grid.

Cheap enough to run every few hundred steps: each validation case's slices are predicted
in batches, and Dice per structure is computed over the case's whole stack (3D, in the
cropped preprocessed space, not the native grid; final figures come from
``segshift predict`` + ``segshift evaluate`` in millimetres). A structure absent from both
prediction and reference counts as Dice 1 (as in :mod:`segshift.metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from segshift.data.cache import SliceCache


def dice_3d(pred: np.ndarray, ref: np.ndarray, structures: Mapping[str, int]) -> dict[str, float]:
    out = {}
    for name, k in structures.items():
        p, r = pred == k, ref == k
        denom = int(p.sum()) + int(r.sum())
        out[name] = 1.0 if denom == 0 else 2.0 * int((p & r).sum()) / denom
    return out


@torch.no_grad()
def validate(method, cache: SliceCache, structures: Mapping[str, int], batch_size: int = 32) -> dict[str, float]:  # noqa: ANN001
    """Mean over cases of per-structure 3D Dice, plus ``"mean"`` over structures."""
    was_training = any(m.training for m in method.nets.values())
    method.train(False)
    per_case = []
    try:
        for case in cache.cases:
            rows = cache.case_rows(case)
            preds = []
            for i in range(0, len(rows), batch_size):
                img, _ = cache.batch(rows[i : i + batch_size])
                logits = method.validation_logits(torch.from_numpy(img)[:, None])
                preds.append(logits.argmax(1).cpu().numpy())
            _, ref = cache.batch(rows)
            per_case.append(dice_3d(np.concatenate(preds), ref, structures))
    finally:
        method.train(was_training)
    out = {name: float(np.mean([d[name] for d in per_case])) for name in structures}
    out["mean"] = float(np.mean(list(out.values())))
    return out
