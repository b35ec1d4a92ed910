"""Statistics of per-case scores: the one place for descriptive statistics, undefined values and paired tests.

**Undefined values, one rule.** A score that is not a finite number (NaN, or +-inf) is
*undefined*: it is left out of every statistic here and *counted* (``n_nan``), never dropped
silently. Where segshift's metrics produce one: a structure present in only one of
prediction and reference has Dice 0 and, by default, ASSD = HD95 = the volume's diagonal in
mm (a finite worst-case penalty, so a missed structure weighs on the mean); under
``--empty-distance nan`` its distances are NaN, i.e. undefined. segshift never writes an
infinite distance; one read from elsewhere counts as undefined too (an infinite mean says
nothing). A mean over *parts* of one score (a case's structures, a case's seeds) is
undefined when any part is (:func:`mean_of_all`): a mean over fewer structures would not be
comparable with the others. In JSON an undefined value is ``null`` (:func:`nan_to_none`,
:func:`none_to_nan`), in CSV ``nan`` (:func:`csv_value`).

**Descriptive statistics** (:func:`describe`, :func:`finite_mean`, :func:`finite_median`,
:func:`mean_ci`) of the finite values; standard deviations are population ones (``ddof=0``),
across test cases, as the papers' "mean +- std" tables.

**Paired tests.** Researchers compare methods case by case: every method predicts the same
test volumes, so per-case scores are paired. This module gives the tests the papers report
(li2021 uses a paired t-test; the Wilcoxon signed-rank test is the usual non-parametric
choice for small, skewed samples such as Dice), a percentile bootstrap confidence interval of
the mean difference, Holm's step-down correction for several comparisons, and the share of
the domain gap a method recovers.

**Rank statistics** of a score against an outcome, as the QC validation of the benchmark uses
them (:mod:`segshift.bench.qc`): Spearman's rank correlation (:func:`spearman`) and the area
under the ROC curve of a score flagging positive cases (:func:`roc_auc`, the Mann-Whitney
form). Both use average ranks for ties and leave out pairs with an undefined value.

Nothing here reads files or imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def is_defined(v: Any) -> bool:
    """Whether ``v`` is a finite number (``None``, NaN and +-inf are undefined)."""
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def finite(values: Iterable[float]) -> np.ndarray:
    """The finite values of ``values`` as a float array (undefined ones left out)."""
    a = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def describe(values: Iterable[float]) -> dict[str, Any]:
    """``{"mean", "std", "n", "n_nan"}`` of the finite values: population std (``ddof=0``), ``n`` values used,
    ``n_nan`` undefined values left out (so ``n + n_nan`` is the number of values). NaN statistics without values.

    Example:
        >>> describe([0.5, 1.0, float("nan"), float("inf")])
        {'mean': 0.75, 'std': 0.25, 'n': 2, 'n_nan': 2}
    """
    vals = list(values)
    ok = finite(vals)
    return {
        "mean": float(ok.mean()) if ok.size else math.nan,
        "std": float(ok.std(ddof=0)) if ok.size else math.nan,
        "n": int(ok.size),
        "n_nan": int(len(vals) - ok.size),
    }


def finite_mean(values: Iterable[float]) -> float:
    """Mean of the finite values (NaN without any)."""
    ok = finite(values)
    return float(ok.mean()) if ok.size else math.nan


def finite_median(values: Iterable[float]) -> float:
    """Median of the finite values (NaN without any)."""
    ok = finite(values)
    return float(np.median(ok)) if ok.size else math.nan


def mean_of_all(values: Iterable[float]) -> float:
    """Mean of parts of one score (a case's structures or seeds): NaN when there are none or any is undefined."""
    a = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64).ravel()
    return float(a.mean()) if a.size and np.isfinite(a).all() else math.nan


def mean_ci(values: Iterable[float], n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the finite values (:func:`bootstrap_ci`)."""
    return bootstrap_ci(finite(values), n_boot=n_boot, level=level, seed=seed)


def nan_to_none(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with undefined floats (NaN, +-inf) as ``None`` (JSON ``null``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


def none_to_nan(obj: Any, keys: Iterable[str]) -> Any:
    """The inverse of :func:`nan_to_none` for the float fields named ``keys``: their ``None`` becomes NaN."""
    keys = frozenset(keys)
    if isinstance(obj, Mapping):
        return {k: (math.nan if v is None and k in keys else none_to_nan(v, keys)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [none_to_nan(v, keys) for v in obj]
    return obj


def csv_value(v: Any) -> Any:
    """A CSV cell: floats at full precision (``repr``), undefined ones as ``nan``; anything else unchanged."""
    if isinstance(v, float):
        return repr(float(v)) if math.isfinite(v) else "nan"
    return v


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
        from scipy import stats as _st

        t_p = float(_st.ttest_rel(xa, xb).pvalue)
    if np.all(d == 0):
        w_p = 1.0
    else:
        from scipy import stats as _st  # (imported here: scipy.stats is slow to import, the rest needs numpy only)

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


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values`` (ties share the mean of their ranks), as floats.

    Example:
        >>> average_ranks([10.0, 20.0, 10.0, 5.0]).tolist()
        [2.5, 4.0, 2.5, 1.0]
    """
    a = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(a, kind="stable")
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.arange(1, a.size + 1, dtype=np.float64)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    if np.any(counts > 1):  # replace each tied group's ranks by their mean
        sums = np.bincount(inverse.ravel(), weights=ranks)
        ranks = sums[inverse.ravel()] / counts[inverse.ravel()]
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation of paired values: the Pearson correlation of their average ranks.

    Pairs where either value is undefined (NaN, +-inf, ``None``) are left out. NaN when fewer
    than 3 pairs remain or either variable is constant (no ranking to correlate).

    Example:
        >>> spearman([1.0, 2.0, 3.0, 4.0], [0.9, 0.8, 0.3, 0.1])
        -1.0
    """
    xa = np.asarray([math.nan if v is None else v for v in x], dtype=np.float64).ravel()
    ya = np.asarray([math.nan if v is None else v for v in y], dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"paired values must be two sequences of one length, got {xa.size} and {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    if int(keep.sum()) < 3:
        return math.nan
    rx, ry = average_ranks(xa[keep]), average_ranks(ya[keep])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    if den == 0.0:
        return math.nan
    return float(np.clip((rx * ry).sum() / den, -1.0, 1.0))


def roc_auc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` flagging the ``positive`` cases (higher score = flagged first).

    The Mann-Whitney form: the probability that a positive case scores above a negative one,
    ties counting one half. 1: every positive above every negative; 0.5: chance; 0: reversed.
    Cases with an undefined score are left out; NaN when no positive or no negative case remains.

    Example:
        >>> roc_auc([0.9, 0.7, 0.4, 0.2], [True, False, True, False])
        0.75
    """
    s = np.asarray([math.nan if v is None else v for v in scores], dtype=np.float64).ravel()
    pos = np.asarray(positive, dtype=bool).ravel()
    if s.shape != pos.shape:
        raise ValueError(f"scores and labels must be of one length, got {s.size} and {pos.size}")
    keep = np.isfinite(s)
    s, pos = s[keep], pos[keep]
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    r = average_ranks(s)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gap_recovered(method: float, source_only: float, oracle: float) -> float:
    """``(method - source_only) / (oracle - source_only)``: 0 = no better than source-only, 1 = oracle.

    NaN when the oracle is not better than source-only (no gap to recover) or a value is missing.
    """
    if not all(math.isfinite(v) for v in (method, source_only, oracle)) or oracle <= source_only:
        return math.nan
    return (method - source_only) / (oracle - source_only)
