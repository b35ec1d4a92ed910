"""Paired statistics for comparing methods on the same test cases.

Researchers compare methods case by case: every method predicts the same test volumes, so
per-case scores are paired. This module gives the tests the papers report (li2021 uses a
paired t-test; the Wilcoxon signed-rank test is the usual non-parametric choice for small,
skewed samples such as Dice), a percentile bootstrap confidence interval of the mean
difference, Holm's step-down correction for several comparisons, and the share of the
domain gap a method recovers.

Nothing here reads files or imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """``a`` against ``b`` on paired per-case scores (difference = a - b).

    Attributes:
        n: number of pairs (cases where both scores are finite).
        mean_a, mean_b: means over those pairs.
        mean_diff: mean of ``a - b``.
        ci_low, ci_high: percentile bootstrap interval of ``mean_diff`` (``level``, ``n_boot`` resamples).
        t_p: two-sided paired t-test p-value (NaN when undefined: n < 2 or all differences equal).
        wilcoxon_p: two-sided Wilcoxon signed-rank p-value (exact for small n without ties;
            1.0 when every difference is zero; NaN when n < 1).
        level: the confidence level of the interval.
    """

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    t_p: float
    wilcoxon_p: float
    level: float

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def bootstrap_ci(diff: np.ndarray, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diff`` (cases resampled with replacement)."""
    diff = np.asarray(diff, dtype=float)
    if diff.size == 0:
        return math.nan, math.nan
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(int(n_boot), diff.size))].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def paired_comparison(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> PairedComparison:
    """Compare paired per-case scores ``a`` and ``b`` (same cases, same order).

    Pairs where either score is NaN (e.g. an undefined distance) are dropped, so ``n`` says
    how many pairs were compared.
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape or xa.ndim != 1:
        raise ValueError(f"paired scores must be two 1-D sequences of one length, got shapes {xa.shape} and {xb.shape}")
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    d = xa - xb
    n = int(d.size)
    if n == 0:
        return PairedComparison(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, level)
    t_p = math.nan
    if n >= 2 and np.ptp(d) > 0:
        t_p = float(_st.ttest_rel(xa, xb).pvalue)
    if np.all(d == 0):
        w_p = 1.0
    else:
        w_p = float(_st.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    lo, hi = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
    return PairedComparison(n, float(xa.mean()), float(xb.mean()), float(d.mean()), lo, hi, t_p, w_p, level)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control over ``len(pvalues)`` tests).

    NaN p-values are left NaN and not counted as tests.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return [float(v) for v in out]
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]


def gap_recovered(method: float, source_only: float, oracle: float) -> float:
    """``(method - source_only) / (oracle - source_only)``: 0 = no better than source-only, 1 = oracle.

    NaN when the oracle is not better than source-only (no gap to recover) or a value is missing.
    """
    if not all(math.isfinite(v) for v in (method, source_only, oracle)) or oracle <= source_only:
        return math.nan
    return (method - source_only) / (oracle - source_only)
