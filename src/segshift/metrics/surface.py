"""Overlap and surface-distance metrics of 3D label maps, in millimetres.

For every structure (every label except background, id 0) :func:`case_metrics` computes,
in 3D:

* **Dice** ``2|P∩R| / (|P| + |R|)`` and **Jaccard** ``|P∩R| / |P∪R|``.
* **ASSD** (average symmetric surface distance, mm): the mean of the *concatenated*
  surface distances of both directions (prediction surface -> reference surface and
  reference surface -> prediction surface). With ``n_p`` and ``n_r`` surface voxels this is
  ``(sum(d_pr) + sum(d_rp)) / (n_p + n_r)``, not the mean of the two directed means. It is
  MONAI's ``compute_average_surface_distance(symmetric=True)``.
* **HD95** (mm): the larger of the two directed 95th percentiles of the surface
  distances (linear interpolation between order statistics, as ``np.percentile`` and
  ``torch.quantile``). It is MONAI's ``compute_hausdorff_distance(percentile=95)``.

Surfaces and distances (identical to MONAI's ``get_mask_edges`` / ``get_surface_distance``
without sub-voxel edges):

* The *surface* of a mask is the set of mask voxels with at least one 6-neighbour outside
  the mask, i.e. ``mask XOR binary_erosion(mask)`` with the default cross structuring
  element. The volume is padded with background first, so voxels on the volume border are
  surface voxels.
* A surface distance is the Euclidean distance, in mm (voxel spacing taken into account),
  from a surface voxel's centre to the nearest surface-voxel centre of the other mask. It is
  read from ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)`` computed on the
  bounding box of the union of both masks (plus a one-voxel margin), which is exact because
  every surface voxel lies inside that box.

Empty masks (the ``status`` field says which case applies):

* ``ok``: both masks non-empty; everything is computed.
* ``both_empty``: structure absent from both: Dice 1, Jaccard 1, ASSD 0, HD95 0.
* ``empty_prediction``: prediction empty, reference not: Dice 0, Jaccard 0, distances
  per ``empty_distance``.
* ``empty_reference``: reference empty, prediction not: Dice 0, Jaccard 0, distances per
  ``empty_distance``.

``empty_distance`` decides the surface distances of the two one-sided cases:

* ``"diagonal"`` (default): the diagonal of the whole volume in mm,
  ``sqrt(sum((shape_i * spacing_i) ** 2))`` - a worst-case penalty, so that a missed (or
  hallucinated) structure is never silently dropped from a mean.
* ``"nan"``: NaN (undefined). :func:`summarise` excludes undefined values from means and
  standard deviations and reports how many there were (``n_nan``); the rule (NaN and +-inf
  are undefined, counted, never dropped silently) is :mod:`segshift.metrics.stats`'s.

:func:`summarise` aggregates per-case rows into per-structure and overall statistics.
Standard deviations are *population* standard deviations (``ddof=0``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from segshift.metrics.stats import describe, mean_of_all

METRICS: tuple[str, ...] = ("dice", "jaccard", "assd_mm", "hd95_mm")
"""Names of the per-structure metric values, in display order."""

STATUSES: tuple[str, ...] = ("ok", "both_empty", "empty_prediction", "empty_reference")
"""Every value the ``status`` field of a row can take."""

EMPTY_DISTANCE_POLICIES: tuple[str, ...] = ("diagonal", "nan")
"""Accepted values of ``empty_distance``."""


def check_empty_distance(empty_distance: str) -> str:
    """Validate an ``empty_distance`` policy.

    Args:
        empty_distance: ``"diagonal"`` or ``"nan"``.

    Returns:
        The policy, unchanged.

    Raises:
        ValueError: for any other value.
    """
    if empty_distance not in EMPTY_DISTANCE_POLICIES:
        raise ValueError(f"empty_distance must be one of {', '.join(EMPTY_DISTANCE_POLICIES)}, got {empty_distance!r}")
    return empty_distance


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing!r}") from exc
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing!r}")
    return values


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal of a volume's extent in mm, ``sqrt(sum((shape_i * spacing_i) ** 2))``.

    Args:
        shape: the volume's voxel counts.
        spacing: voxel size in mm along each axis.

    Returns:
        The diagonal length in mm (the penalty distance of ``empty_distance="diagonal"``).
    """
    return float(math.sqrt(sum((float(n) * float(s)) ** 2 for n, s in zip(shape, spacing))))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a 6-neighbour outside the mask (``mask`` must be padded with False)."""
    eroded: np.ndarray = ndimage.binary_erosion(mask)
    surface: np.ndarray = mask & ~eroded
    return surface


def surface_distances(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances between two non-empty binary masks.

    Args:
        pred_mask: boolean 3D prediction mask (non-empty).
        ref_mask: boolean 3D reference mask of the same shape (non-empty).
        spacing: voxel size in mm along the three axes.

    Returns:
        ``(d_pr, d_rp)``: for each prediction surface voxel the distance (mm) to the nearest
        reference surface voxel, and for each reference surface voxel the distance to the
        nearest prediction surface voxel.

    Raises:
        ValueError: if a mask is empty or the shapes differ.
    """
    pred_mask = np.asarray(pred_mask, dtype=bool)
    ref_mask = np.asarray(ref_mask, dtype=bool)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"prediction shape {pred_mask.shape} != reference shape {ref_mask.shape}")
    if not pred_mask.any() or not ref_mask.any():
        raise ValueError("surface distances need two non-empty masks")
    spacing = _check_spacing(spacing)
    union = pred_mask | ref_mask
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    box_t = tuple(box)
    # Bounding box of the union, padded with one background voxel: the volume edge counts
    # as outside, and all surface voxels (the only EDT zeros) lie inside the box.
    pred_c = np.pad(pred_mask[box_t], 1)
    ref_c = np.pad(ref_mask[box_t], 1)
    pred_s = _surface(pred_c)
    ref_s = _surface(ref_c)
    d_pr = ndimage.distance_transform_edt(~ref_s, sampling=spacing)[pred_s]
    d_rp = ndimage.distance_transform_edt(~pred_s, sampling=spacing)[ref_s]
    return np.asarray(d_pr, dtype=np.float64), np.asarray(d_rp, dtype=np.float64)


def binary_metrics(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    spacing: Sequence[float],
    empty_distance: str = "diagonal",
) -> dict[str, Any]:
    """Dice, Jaccard, ASSD and HD95 of one pair of binary masks.

    Args:
        pred_mask: boolean 3D prediction mask.
        ref_mask: boolean 3D reference mask of the same shape.
        spacing: voxel size in mm along the three axes.
        empty_distance: ``"diagonal"`` or ``"nan"``; see the module docstring.

    Returns:
        A dict with ``dice``, ``jaccard``, ``assd_mm``, ``hd95_mm`` (floats),
        ``pred_voxels``, ``ref_voxels`` (ints) and ``status``.

    Raises:
        ValueError: on mismatched shapes, a non-3D mask, bad spacing or an unknown policy.
    """
    check_empty_distance(empty_distance)
    pred_mask = np.asarray(pred_mask, dtype=bool)
    ref_mask = np.asarray(ref_mask, dtype=bool)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"prediction shape {pred_mask.shape} != reference shape {ref_mask.shape}")
    if pred_mask.ndim != 3:
        raise ValueError(f"masks must be 3D, got shape {pred_mask.shape}")
    spacing = _check_spacing(spacing)
    n_pred = int(np.count_nonzero(pred_mask))
    n_ref = int(np.count_nonzero(ref_mask))
    row: dict[str, Any] = {"pred_voxels": n_pred, "ref_voxels": n_ref}
    if n_pred == 0 and n_ref == 0:
        row.update(dice=1.0, jaccard=1.0, assd_mm=0.0, hd95_mm=0.0, status="both_empty")
        return row
    if n_pred == 0 or n_ref == 0:
        penalty = volume_diagonal(pred_mask.shape, spacing) if empty_distance == "diagonal" else math.nan
        status = "empty_prediction" if n_pred == 0 else "empty_reference"
        row.update(dice=0.0, jaccard=0.0, assd_mm=penalty, hd95_mm=penalty, status=status)
        return row
    inter = int(np.count_nonzero(pred_mask & ref_mask))
    d_pr, d_rp = surface_distances(pred_mask, ref_mask, spacing)
    row.update(
        dice=2.0 * inter / (n_pred + n_ref),
        jaccard=inter / (n_pred + n_ref - inter),
        assd_mm=float(np.concatenate([d_pr, d_rp]).mean()),
        hd95_mm=float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))),
        status="ok",
    )
    return row


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float, float],
    labels: Mapping[str, int],
    empty_distance: str = "diagonal",
) -> list[dict[str, Any]]:
    """Per-structure metrics of one case.

    Args:
        pred: 3D integer label map predicted by a model.
        ref: 3D integer reference label map, same shape as ``pred``.
        spacing: voxel size in mm along the three voxel axes.
        labels: structure name -> label id; id 0 (background) is skipped.
        empty_distance: ``"diagonal"`` (default) or ``"nan"``: the ASSD/HD95 of a structure
            present in only one of the two maps (see the module docstring).

    Returns:
        One dict per structure, in ``labels`` order (excluding background), with keys
        ``structure``, ``dice``, ``jaccard``, ``assd_mm``, ``hd95_mm``, ``pred_voxels``,
        ``ref_voxels`` and ``status``.

    Raises:
        ValueError: if the shapes differ (both are named), the maps are not 3D, the spacing
            is not 3 positive numbers, or ``empty_distance`` is unknown.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((4, 4, 4), np.uint8); a[1:3, 1:3, 1:3] = 1
        >>> case_metrics(a, a, (1.0, 1.0, 1.0), {"background": 0, "LV": 1})[0]["dice"]
        1.0
    """
    check_empty_distance(empty_distance)
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    if pred.ndim != 3:
        raise ValueError(f"label maps must be 3D, got shape {pred.shape}")
    spacing = _check_spacing(spacing)
    rows = []
    for name, idx in labels.items():
        if int(idx) == 0:
            continue
        row = {"structure": name}
        row.update(binary_metrics(pred == idx, ref == idx, spacing, empty_distance))
        rows.append(row)
    return rows


def summarise(rows: Sequence[Mapping[str, Any]], labels: Mapping[str, int]) -> dict[str, Any]:
    """Aggregate per-case rows into per-structure and overall statistics.

    Each metric gets ``mean``, ``std`` (population, ``ddof=0``), ``n`` (values used: the
    finite ones) and ``n_nan`` (undefined values, NaN or +-inf, excluded from mean and std, so
    ``n + n_nan`` is the number of cases). Statistics of no values are NaN
    (:func:`segshift.metrics.stats.describe`).

    The *overall* value of a case is the mean of its structures' values; it is NaN when any
    of them is undefined (a mean over a different set of structures would not be comparable;
    :func:`segshift.metrics.stats.mean_of_all`), and is then counted in the overall ``n_nan``.
    Overall statistics are taken across cases.

    Args:
        rows: dicts as returned by :func:`case_metrics`, each with an added ``case`` key
            (rows without one are treated as one case).
        labels: structure name -> id; fixes the order of structures (background skipped).

    Returns:
        ``{"structures": {name: entry}, "overall": entry}`` where an entry is
        ``{"dice": stats, "jaccard": stats, "assd_mm": stats, "hd95_mm": stats,
        "n_cases": int, "status_counts": {status: count}}`` and ``stats`` is
        ``{"mean", "std", "n", "n_nan"}``. The overall ``status_counts`` add up all
        structures' rows.

    Raises:
        ValueError: if a row names a structure that is not in ``labels``.
    """
    names = [name for name, idx in labels.items() if int(idx) != 0]
    by_structure: dict[str, list[Mapping[str, Any]]] = {name: [] for name in names}
    for row in rows:
        if row["structure"] not in by_structure:
            raise ValueError(f"row structure {row['structure']!r} is not in labels {dict(labels)}")
        by_structure[row["structure"]].append(row)

    def entry(selected: Sequence[Mapping[str, Any]], values: Mapping[str, Sequence[float]], n_cases: int) -> dict[str, Any]:
        out: dict[str, Any] = {metric: describe(values[metric]) for metric in METRICS}
        out["n_cases"] = n_cases
        counts = dict.fromkeys(STATUSES, 0)
        for row in selected:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        out["status_counts"] = counts
        return out

    structures = {}
    for name in names:
        sel = by_structure[name]
        structures[name] = entry(sel, {m: [float(r[m]) for r in sel] for m in METRICS}, len(sel))

    cases: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        cases.setdefault(row.get("case", ""), []).append(row)
    overall_values: dict[str, list[float]] = {m: [] for m in METRICS}
    for case_rows in cases.values():
        for m in METRICS:
            overall_values[m].append(mean_of_all(float(r[m]) for r in case_rows))
    overall = entry(list(rows), overall_values, len(cases))
    return {"structures": structures, "overall": overall}
