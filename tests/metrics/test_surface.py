"""Hand-computed and MONAI-checked tests of segshift.metrics.surface."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from segshift.metrics.surface import binary_metrics, case_metrics, summarise, volume_diagonal

LV = {"background": 0, "LV": 1}


def vol(shape, *boxes):
    """A uint8 label map with the given (slices, label) boxes set."""
    a = np.zeros(shape, np.uint8)
    for index, label in boxes:
        a[index] = label
    return a


S = np.s_
SHAPE = (10, 10, 6)

# Concentric 3^3 cube inside a 5^3 cube (unit spacing). Inner surface: 26 voxels, each 1 mm
# from the outer surface. Outer surface: 98 voxels: 54 face voxels at 1, 36 edge voxels at
# sqrt(2), 8 corners at sqrt(3) from the inner surface. Directed 95th percentile of the
# outer distances: position 0.95 * 97 = 92.15 falls among the corners -> sqrt(3).
NESTED_ASSD = (26 + 54 + 36 * math.sqrt(2) + 8 * math.sqrt(3)) / (26 + 98)

HAND_CASES = [
    # id, pred, ref, spacing, dice, jaccard, assd, hd95
    (
        "identical cubes",
        vol(SHAPE, (S[2:6, 2:6, 1:5], 1)),
        vol(SHAPE, (S[2:6, 2:6, 1:5], 1)),
        (1.0, 1.0, 1.0),
        1.0,
        1.0,
        0.0,
        0.0,
    ),
    (
        "identical single voxels",
        vol(SHAPE, (S[4, 4, 2], 1)),
        vol(SHAPE, (S[4, 4, 2], 1)),
        (0.5, 0.5, 10.0),
        1.0,
        1.0,
        0.0,
        0.0,
    ),
    (
        "single voxels one slice apart, 10 mm slices",
        vol(SHAPE, (S[4, 4, 2], 1)),
        vol(SHAPE, (S[4, 4, 3], 1)),
        (1.0, 1.0, 10.0),
        0.0,
        0.0,
        10.0,
        10.0,
    ),
    (
        "single voxels 3 voxels apart in-plane at 0.5 mm",
        vol(SHAPE, (S[2, 4, 2], 1)),
        vol(SHAPE, (S[5, 4, 2], 1)),
        (0.5, 0.5, 10.0),
        0.0,
        0.0,
        1.5,
        1.5,
    ),
    (
        "single voxels diagonal offset (1,1,1) at (1,2,3) mm",
        vol(SHAPE, (S[4, 4, 2], 1)),
        vol(SHAPE, (S[5, 5, 3], 1)),
        (1.0, 2.0, 3.0),
        0.0,
        0.0,
        math.sqrt(14),
        math.sqrt(14),
    ),
    # Line of 4 voxels vs the same line shifted by one along itself: overlap 3.
    # Dice 6/8, Jaccard 3/5. Every line voxel is a surface voxel; distances pred->ref
    # [1,0,0,0], ref->pred [0,0,0,1] (x spacing): ASSD = 2/8 * s; directed p95 of
    # [0,0,0,1] = 0.85 * s.
    (
        "line shifted along itself, 1 mm",
        vol(SHAPE, (S[2:6, 5, 3], 1)),
        vol(SHAPE, (S[3:7, 5, 3], 1)),
        (1.0, 1.0, 1.0),
        0.75,
        0.6,
        0.25,
        0.85,
    ),
    (
        "line shifted along itself, 2 mm",
        vol(SHAPE, (S[2:6, 5, 3], 1)),
        vol(SHAPE, (S[3:7, 5, 3], 1)),
        (2.0, 1.0, 1.0),
        0.75,
        0.6,
        0.5,
        1.7,
    ),
    (
        "line shifted sideways by 1 voxel of 0.8 mm",
        vol(SHAPE, (S[2:6, 5, 3], 1)),
        vol(SHAPE, (S[2:6, 6, 3], 1)),
        (1.0, 0.8, 1.0),
        0.0,
        0.0,
        0.8,
        0.8,
    ),
    (
        "3^3 cube inside 5^3 cube",
        vol(SHAPE, (S[3:6, 3:6, 1:4], 1)),
        vol(SHAPE, (S[2:7, 2:7, 0:5], 1)),
        (1.0, 1.0, 1.0),
        54 / 152,
        27 / 125,
        NESTED_ASSD,
        math.sqrt(3),
    ),
    (
        "cube touching the volume border, shifted by one voxel",
        vol((4, 4, 4), (S[0:2, 0:2, 0:2], 1)),
        vol((4, 4, 4), (S[1:3, 0:2, 0:2], 1)),
        (1.0, 1.0, 1.0),
        0.5,
        1 / 3,
        0.5,
        1.0,
    ),
]


@pytest.mark.parametrize(
    ("pred", "ref", "spacing", "dice", "jaccard", "assd", "hd95"),
    [c[1:] for c in HAND_CASES],
    ids=[c[0] for c in HAND_CASES],
)
def test_hand_computed(pred, ref, spacing, dice, jaccard, assd, hd95):
    (row,) = case_metrics(pred, ref, spacing, LV)
    assert row["structure"] == "LV"
    assert row["status"] == "ok"
    assert row["pred_voxels"] == int((pred == 1).sum())
    assert row["ref_voxels"] == int((ref == 1).sum())
    assert row["dice"] == pytest.approx(dice, abs=1e-12)
    assert row["jaccard"] == pytest.approx(jaccard, abs=1e-12)
    assert row["assd_mm"] == pytest.approx(assd, abs=1e-9)
    assert row["hd95_mm"] == pytest.approx(hd95, abs=1e-9)


# Shape (3, 4, 1) at (1, 1, 12) mm: extent 3 x 4 x 12 mm, diagonal 13 mm.
E_SHAPE, E_SPACING, E_DIAG = (3, 4, 1), (1.0, 1.0, 12.0), 13.0
ONE = vol(E_SHAPE, (S[1, 1, 0], 1))
NONE = vol(E_SHAPE)

EMPTY_CASES = [
    # id, pred, ref, policy, status, dice, jaccard, distance
    ("both empty, diagonal", NONE, NONE, "diagonal", "both_empty", 1.0, 1.0, 0.0),
    ("both empty, nan", NONE, NONE, "nan", "both_empty", 1.0, 1.0, 0.0),
    ("empty prediction, diagonal", NONE, ONE, "diagonal", "empty_prediction", 0.0, 0.0, E_DIAG),
    ("empty prediction, nan", NONE, ONE, "nan", "empty_prediction", 0.0, 0.0, math.nan),
    ("empty reference, diagonal", ONE, NONE, "diagonal", "empty_reference", 0.0, 0.0, E_DIAG),
    ("empty reference, nan", ONE, NONE, "nan", "empty_reference", 0.0, 0.0, math.nan),
]


@pytest.mark.parametrize(
    ("pred", "ref", "policy", "status", "dice", "jaccard", "distance"),
    [c[1:] for c in EMPTY_CASES],
    ids=[c[0] for c in EMPTY_CASES],
)
def test_empty_masks(pred, ref, policy, status, dice, jaccard, distance):
    (row,) = case_metrics(pred, ref, E_SPACING, LV, empty_distance=policy)
    assert row["status"] == status
    assert (row["dice"], row["jaccard"]) == (dice, jaccard)
    for key in ("assd_mm", "hd95_mm"):
        if math.isnan(distance):
            assert math.isnan(row[key])
        else:
            assert row[key] == pytest.approx(distance)
    assert row["pred_voxels"] == int(pred.sum()) and row["ref_voxels"] == int(ref.sum())


def test_volume_diagonal():
    assert volume_diagonal(E_SHAPE, E_SPACING) == pytest.approx(13.0)


def test_multilabel_rows_in_label_order_skip_background():
    labels = {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    ref = vol(SHAPE, (S[1:3, 1:3, 1:3], 1), (S[5:7, 5:7, 1:3], 3))
    pred = vol(SHAPE, (S[1:3, 1:3, 1:3], 1), (S[5:7, 5:7, 2:4], 3))
    rows = case_metrics(pred, ref, (1.0, 1.0, 1.0), labels)
    assert [r["structure"] for r in rows] == ["LV", "MYO", "RV"]
    assert [r["status"] for r in rows] == ["ok", "both_empty", "ok"]
    assert rows[0]["dice"] == 1.0
    assert rows[2]["dice"] == pytest.approx(0.5)  # 2x2x2 cubes overlapping in one 2x2 slab


@pytest.mark.parametrize(
    ("pred_shape", "ref_shape", "spacing", "policy", "message"),
    [
        ((4, 4, 4), (4, 4, 5), (1, 1, 1), "diagonal", r"\(4, 4, 4\).*\(4, 4, 5\)"),
        ((4, 4), (4, 4), (1, 1, 1), "diagonal", "3D"),
        ((4, 4, 4), (4, 4, 4), (1, 1), "diagonal", "spacing"),
        ((4, 4, 4), (4, 4, 4), (1, 0, 1), "diagonal", "spacing"),
        ((4, 4, 4), (4, 4, 4), (1, 1, -2), "diagonal", "spacing"),
        ((4, 4, 4), (4, 4, 4), (1, 1, 1), "zero", "empty_distance"),
    ],
)
def test_invalid_inputs(pred_shape, ref_shape, spacing, policy, message):
    with pytest.raises(ValueError, match=message):
        case_metrics(np.zeros(pred_shape, np.uint8), np.zeros(ref_shape, np.uint8), spacing, LV, policy)


def _blob(rng, shape, sigma, threshold):
    return ndimage.gaussian_filter(rng.normal(size=shape), sigma) > threshold


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_monai_on_random_blobs(seed):
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(seed)
    shape, spacing = (40, 36, 10), (0.7, 1.3, 5.0)
    pred, ref = _blob(rng, shape, 2.0, 0.05), _blob(rng, shape, 2.0, 0.05)
    assert pred.any() and ref.any()
    ours = binary_metrics(pred, ref, spacing)
    p = torch.from_numpy(pred[None, None].astype(np.float32))
    r = torch.from_numpy(ref[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assd = monai_metrics.compute_average_surface_distance(p, r, symmetric=True, spacing=spacing).item()
        hd95 = monai_metrics.compute_hausdorff_distance(p, r, percentile=95, spacing=spacing).item()
        dice = monai_metrics.compute_dice(p, r).item()
    assert ours["status"] == "ok"
    assert ours["assd_mm"] == pytest.approx(assd, rel=1e-5, abs=1e-5)
    assert ours["hd95_mm"] == pytest.approx(hd95, rel=1e-5, abs=1e-5)
    assert ours["dice"] == pytest.approx(dice, abs=1e-5)


def _rows(case, **per_structure):
    out = []
    for structure, (dice, assd, status) in per_structure.items():
        out.append(
            {
                "case": case,
                "structure": structure,
                "dice": dice,
                "jaccard": dice,
                "assd_mm": assd,
                "hd95_mm": assd,
                "pred_voxels": 1,
                "ref_voxels": 1,
                "status": status,
            }
        )
    return out


LABELS_2 = {"background": 0, "A": 1, "B": 2}


def test_summarise_hand_computed():
    rows = _rows("c1", A=(1.0, 0.0, "ok"), B=(0.5, 2.0, "ok")) + _rows("c2", A=(0.5, 4.0, "ok"), B=(0.0, 6.0, "ok"))
    s = summarise(rows, LABELS_2)
    a = s["structures"]["A"]
    assert a["dice"] == {"mean": 0.75, "std": 0.25, "n": 2, "n_nan": 0}  # population std
    assert a["assd_mm"]["mean"] == 2.0 and a["assd_mm"]["std"] == 2.0
    assert a["n_cases"] == 2 and a["status_counts"]["ok"] == 2
    # overall: per-case means 0.75 and 0.25 -> mean 0.5, std 0.25
    assert s["overall"]["dice"] == {"mean": 0.5, "std": 0.25, "n": 2, "n_nan": 0}
    assert s["overall"]["assd_mm"]["mean"] == pytest.approx(3.0)
    assert s["overall"]["n_cases"] == 2
    assert s["overall"]["status_counts"] == {"ok": 4, "both_empty": 0, "empty_prediction": 0, "empty_reference": 0}


def test_summarise_counts_nan_and_statuses():
    nan = math.nan
    rows = (
        _rows("c1", A=(1.0, 1.0, "ok"), B=(0.0, nan, "empty_prediction"))
        + _rows("c2", A=(0.0, nan, "empty_reference"), B=(1.0, 0.0, "both_empty"))
        + _rows("c3", A=(0.5, 3.0, "ok"), B=(1.0, 5.0, "ok"))
    )
    s = summarise(rows, LABELS_2)
    a = s["structures"]["A"]
    assert a["assd_mm"] == {"mean": 2.0, "std": 1.0, "n": 2, "n_nan": 1}
    assert a["dice"]["n"] == 3 and a["dice"]["n_nan"] == 0
    assert a["status_counts"] == {"ok": 2, "both_empty": 0, "empty_prediction": 0, "empty_reference": 1}
    b = s["structures"]["B"]
    assert b["assd_mm"] == {"mean": 2.5, "std": 2.5, "n": 2, "n_nan": 1}
    # overall ASSD: c1 and c2 have a NaN structure -> undefined; only c3 (mean 4.0) remains
    assert s["overall"]["assd_mm"] == {"mean": 4.0, "std": 0.0, "n": 1, "n_nan": 2}
    assert s["overall"]["status_counts"] == {"ok": 3, "both_empty": 1, "empty_prediction": 1, "empty_reference": 1}


def test_summarise_all_nan_and_unknown_structure():
    rows = _rows("c1", A=(0.0, math.nan, "empty_prediction"), B=(1.0, 0.0, "both_empty"))
    s = summarise(rows, LABELS_2)
    stats = s["structures"]["A"]["assd_mm"]
    assert math.isnan(stats["mean"]) and math.isnan(stats["std"]) and stats["n"] == 0 and stats["n_nan"] == 1
    with pytest.raises(ValueError, match="'C'"):
        summarise(_rows("c1", C=(1.0, 0.0, "ok")), LABELS_2)
