"""Paired statistics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segshift.metrics.stats import (
    average_ranks,
    bootstrap_ci,
    csv_value,
    describe,
    finite_mean,
    finite_median,
    gap_recovered,
    holm,
    is_defined,
    mean_ci,
    mean_of_all,
    nan_to_none,
    none_to_nan,
    paired_comparison,
    roc_auc,
    spearman,
)


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
    assert res.ci_low > 0.0 and res.ci_high <= d.max()


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


# -- descriptive statistics and the one rule for undefined values -------------------------------------------------
INF, NAN = math.inf, math.nan


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.5, 1.0], {"mean": 0.75, "std": 0.25, "n": 2, "n_nan": 0}),
        ([0.5, 1.0, NAN], {"mean": 0.75, "std": 0.25, "n": 2, "n_nan": 1}),
        ([0.5, 1.0, INF, -INF], {"mean": 0.75, "std": 0.25, "n": 2, "n_nan": 2}),  # inf is undefined like NaN: counted, left out
        ([2.0, 4.0, 9.0], {"mean": 5.0, "std": math.sqrt(26 / 3), "n": 3, "n_nan": 0}),  # population std: sqrt((9+1+16)/3)
        ([NAN, None], {"mean": NAN, "std": NAN, "n": 0, "n_nan": 2}),
        ([], {"mean": NAN, "std": NAN, "n": 0, "n_nan": 0}),
    ],
)
def test_describe_counts_undefined_values_and_leaves_them_out(values, expected):
    got = describe(values)
    assert set(got) == set(expected) and got["n"] == expected["n"] and got["n_nan"] == expected["n_nan"]
    for k in ("mean", "std"):
        assert got[k] == pytest.approx(expected[k], nan_ok=True)


def test_means_medians_and_intervals_of_finite_values():
    assert finite_mean([1.0, 3.0, NAN, INF]) == 2.0 and math.isnan(finite_mean([NAN]))
    assert finite_median([1.0, 3.0, 10.0, NAN]) == 3.0 and math.isnan(finite_median([]))
    assert mean_of_all([1.0, 3.0]) == 2.0
    assert math.isnan(mean_of_all([1.0, NAN])) and math.isnan(mean_of_all([1.0, INF])) and math.isnan(mean_of_all([]))
    assert mean_ci([0.1, 0.2, NAN, 0.3], seed=1) == bootstrap_ci(np.array([0.1, 0.2, 0.3]), seed=1)
    assert [is_defined(v) for v in (0.0, 1, NAN, INF, None, "x")] == [True, True, False, False, False, False]


def test_json_and_csv_forms_of_undefined_values():
    doc = {"mean": NAN, "std": INF, "n": 0, "rows": [{"dice": 0.5, "p": NAN}], "pair": (1.0, -INF)}
    assert nan_to_none(doc) == {"mean": None, "std": None, "n": 0, "rows": [{"dice": 0.5, "p": None}], "pair": [1.0, None]}
    back = none_to_nan(nan_to_none(doc), {"mean", "p"})
    assert math.isnan(back["mean"]) and back["std"] is None and math.isnan(back["rows"][0]["p"])  # only the named keys
    assert [csv_value(v) for v in (0.1, NAN, INF, np.float64(0.25), 3, "LV", True)] == ["0.1", "nan", "nan", "0.25", 3, "LV", True]


def test_surface_summary_and_benchmark_tables_apply_the_same_rule():
    """An infinite distance (from a foreign per-case table) is undefined in both summaries, as NaN is."""
    from segshift.bench.tables import compute
    from segshift.metrics.surface import summarise

    labels = {"background": 0, "LV": 1, "RV": 2}
    rows = [
        {"case": "a", "structure": "LV", "dice": 0.8, "jaccard": 0.7, "assd_mm": 1.0, "hd95_mm": 4.0, "status": "ok"},
        {"case": "a", "structure": "RV", "dice": 0.0, "jaccard": 0.0, "assd_mm": INF, "hd95_mm": INF, "status": "empty_prediction"},
        {"case": "b", "structure": "LV", "dice": 0.6, "jaccard": 0.5, "assd_mm": 3.0, "hd95_mm": 8.0, "status": "ok"},
        {"case": "b", "structure": "RV", "dice": 0.4, "jaccard": 0.3, "assd_mm": 2.0, "hd95_mm": NAN, "status": "ok"},
    ]
    s = summarise(rows, labels)
    rv_hd = s["structures"]["RV"]["hd95_mm"]
    assert (rv_hd["n"], rv_hd["n_nan"]) == (0, 2) and math.isnan(rv_hd["mean"])  # inf (case a) and NaN (case b) alike
    assert (s["structures"]["RV"]["assd_mm"]["mean"], s["structures"]["RV"]["assd_mm"]["n_nan"]) == (2.0, 1)
    # a case's overall value is undefined when one structure's is: case a's ASSD, both cases' HD95
    assert (s["overall"]["assd_mm"]["mean"], s["overall"]["assd_mm"]["n"], s["overall"]["assd_mm"]["n_nan"]) == (2.5, 1, 1)
    assert s["overall"]["hd95_mm"]["n_nan"] == 2 and s["overall"]["dice"]["mean"] == pytest.approx((0.4 + 0.5) / 2)
    bench = [{"task": "t", "test": "x", "method_id": "m", "method": "m", "oracle": False, "seed": 0, **r} for r in rows]
    res = compute(bench, n_boot=100)
    st = res["units"][0]["methods"][0]["stats"]
    for structure, key in (("RV", "RV"), ("mean", "overall")):  # the tables' numbers equal segshift evaluate's
        src = s["structures"][key] if key != "overall" else s["overall"]
        for m in ("dice", "assd_mm", "hd95_mm"):
            assert (st[structure][m]["n"], st[structure][m]["n_nan"]) == (src[m]["n"], src[m]["n_nan"])
            assert st[structure][m]["mean"] == pytest.approx(src[m]["mean"], nan_ok=True)


# -- rank statistics: Spearman's rho and the ROC AUC (the QC validation's) ---------------------------------------------
@pytest.mark.parametrize(
    ("values", "ranks"),
    [
        ([3.0, 1.0, 2.0], [3.0, 1.0, 2.0]),
        ([10.0, 20.0, 10.0, 5.0], [2.5, 4.0, 2.5, 1.0]),  # the two 10s share ranks 2 and 3
        ([7.0, 7.0, 7.0], [2.0, 2.0, 2.0]),
        ([], []),
    ],
)
def test_average_ranks(values, ranks):
    assert average_ranks(values).tolist() == ranks


@pytest.mark.parametrize(
    ("x", "y", "rho"),
    [
        ([1, 2, 3, 4], [0.9, 0.8, 0.3, 0.1], -1.0),  # a perfectly informative (suspicion) score against Dice
        ([1, 2, 3, 4], [1, 4, 9, 16], 1.0),  # any increasing function: 1
        ([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], 0.8),  # d = (-1, 1, -1, 1, 0): 1 - 6 * 4 / (5 * 24)
        # tie: ranks x (1, 2.5, 2.5, 4), y (1, 2, 3, 4); centred products 2.25 + 0 + 0 + 2.25 over sqrt(4.5 * 5)
        ([1, 2, 2, 3], [1, 2, 3, 4], 4.5 / math.sqrt(22.5)),
        ([1, 2, NAN, 3, 4], [4, 3, 0.5, 2, 1], -1.0),  # the pair with NaN is left out
        ([1, 2], [2, 1], NAN),  # fewer than 3 pairs
        ([1, 1, 1, 1], [1, 2, 3, 4], NAN),  # a constant score ranks nothing
    ],
)
def test_spearman_by_hand(x, y, rho):
    assert spearman(x, y) == pytest.approx(rho, nan_ok=True)


def test_spearman_agrees_with_scipy_on_random_ties():
    from scipy import stats as st

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
    assert spearman(x, y) == pytest.approx(st.spearmanr(x, y).statistic)
    with pytest.raises(ValueError, match="one length"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("scores", "positive", "auc"),
    [
        ([0.9, 0.8, 0.2, 0.1], [True, True, False, False], 1.0),  # every flagged case above every other
        ([0.1, 0.2, 0.8, 0.9], [True, True, False, False], 0.0),  # the score points the wrong way
        ([0.9, 0.7, 0.4, 0.2], [True, False, True, False], 0.75),  # pairs (pos, neg): 0.9>0.7, 0.9>0.2, 0.4<0.7, 0.4>0.2
        ([0.5, 0.5, 0.1], [True, False, False], 0.75),  # a tie counts one half: (0.5 + 1) / 2
        ([0.3, 0.3, 0.3, 0.3], [True, False, True, False], 0.5),
        ([0.9, NAN, 0.1], [True, True, False], 1.0),  # an undefined score is left out
        ([0.9, 0.8], [True, True], NAN),  # no negative case
        ([0.9, 0.8], [False, False], NAN),  # no positive case
    ],
)
def test_roc_auc_by_hand(scores, positive, auc):
    assert roc_auc(scores, positive) == pytest.approx(auc, nan_ok=True)


def test_roc_auc_is_the_mann_whitney_u_over_the_pairs():
    from scipy import stats as st

    rng = np.random.default_rng(1)
    s = rng.integers(0, 6, 40).astype(float)
    pos = rng.random(40) < 0.4
    u = st.mannwhitneyu(s[pos], s[~pos]).statistic
    assert roc_auc(s, pos) == pytest.approx(u / (pos.sum() * (~pos).sum()))
    with pytest.raises(ValueError, match="one length"):
        roc_auc([0.1, 0.2], [True])
