"""Paired statistics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segshift.metrics.stats import bootstrap_ci, gap_recovered, holm, paired_comparison


def test_paired_t_and_wilcoxon_match_hand_computation():
    a = [0.80, 0.75, 0.90, 0.60, 0.85]
    b = [0.70, 0.72, 0.81, 0.58, 0.70]
    d = np.array(a) - np.array(b)  # 0.10 0.03 0.09 0.02 0.15
    res = paired_comparison(a, b, n_boot=2000)
    assert res.n == 5 and res.mean_diff == pytest.approx(0.078)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(5))  # 0.078 / (0.053572 / sqrt 5) = 3.2557, 4 degrees of freedom
    assert t == pytest.approx(3.2557, abs=1e-3)
    assert res.t_p == pytest.approx(0.0312, abs=1e-4)  # two-sided t(4) tail at 3.2557 (t tables: 0.031)
    # all 5 differences positive, no ties: exact two-sided Wilcoxon p = 2 / 2^5
    assert res.wilcoxon_p == pytest.approx(2 / 32)
    assert res.ci_low < res.mean_diff < res.ci_high
    assert 0.0 < res.ci_low and res.ci_high <= d.max()


def test_nan_pairs_are_dropped_and_equal_scores_give_p_one():
    res = paired_comparison([1.0, math.nan, 3.0], [1.0, 2.0, 3.0])
    assert res.n == 2 and res.mean_diff == 0.0 and res.wilcoxon_p == 1.0 and math.isnan(res.t_p)
    assert paired_comparison([], []).n == 0
    with pytest.raises(ValueError, match="one length"):
        paired_comparison([1.0, 2.0], [1.0])


def test_bootstrap_interval_is_reproducible_and_covers_the_mean():
    d = np.array([0.1, -0.05, 0.2, 0.0, 0.05, 0.12])
    assert bootstrap_ci(d, seed=3) == bootstrap_ci(d, seed=3)
    lo, hi = bootstrap_ci(d, n_boot=5000, level=0.9)
    assert lo < d.mean() < hi
    assert (hi - lo) < (bootstrap_ci(d, n_boot=5000, level=0.99)[1] - bootstrap_ci(d, n_boot=5000, level=0.99)[0])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, max(0.06, 1*0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.5, math.nan, 0.9])
    assert out[0] == pytest.approx(1.0) and math.isnan(out[1]) and out[2] == pytest.approx(1.0)


def test_gap_recovered():
    assert gap_recovered(0.70, 0.50, 0.90) == pytest.approx(0.5)
    assert gap_recovered(0.45, 0.50, 0.90) == pytest.approx(-0.125)
    assert math.isnan(gap_recovered(0.7, 0.9, 0.8))  # oracle not above source-only: no gap
