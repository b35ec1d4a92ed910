"""Intensity steps: percentile clipping, z-score, and histogram matching.

Histogram matching (the "HM" step of Wang et al., 2019, *Unsupervised domain adaptation
for multi-sequence cardiac MR*) maps each volume's intensity quantiles onto a reference
quantile function by piecewise-linear interpolation. The reference is fitted once on a
reference domain: each reference volume is clipped and min-max scaled to [0, 1] (so
volumes stored at different scales, such as ACDC's raw and 0-255 cases, contribute
equally) and the per-volume quantile functions are averaged. The reference (a list of
numbers) is serialised with the preprocessing, so prediction repeats it exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

DEFAULT_LEVELS = 256


def clip_percentiles(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to the volume's own ``low``/``high`` percentiles (float32 out)."""
    lo, hi = np.percentile(x, [low, high])
    return np.clip(x.astype(np.float32, copy=False), lo, hi)


def zscore(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole volume (a constant volume becomes zeros)."""
    x = x.astype(np.float32, copy=False)
    std = float(x.std())
    return (x - float(x.mean())) / (std if std > 1e-8 else 1.0)


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (a constant volume becomes zeros)."""
    x = x.astype(np.float32, copy=False)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo if hi - lo > 1e-8 else 1.0)


def quantile_levels(n: int = DEFAULT_LEVELS) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def fit_reference(volumes: Iterable[np.ndarray], n_levels: int = DEFAULT_LEVELS) -> np.ndarray:
    """Average quantile function of already clipped volumes, each min-max scaled first."""
    levels = quantile_levels(n_levels)
    qs = [np.quantile(minmax(v), levels) for v in volumes]
    if not qs:
        raise ValueError("histogram reference needs at least one volume")
    return np.maximum.accumulate(np.mean(qs, axis=0)).astype(np.float64)


def match_histogram(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map ``x``'s quantiles onto ``reference`` (a monotone quantile function on uniform levels).

    Tied source quantiles (e.g. a large zero background) are merged and mapped to the mean
    of the reference values they span, so the mapping stays a function.
    """
    levels = quantile_levels(len(reference))
    src = np.quantile(x, levels)
    uniq, inverse = np.unique(src, return_inverse=True)
    ref = np.bincount(inverse, weights=reference) / np.bincount(inverse)
    if len(uniq) == 1:
        return np.full(x.shape, ref[0], dtype=np.float32)
    return np.interp(x, uniq, ref).astype(np.float32)
