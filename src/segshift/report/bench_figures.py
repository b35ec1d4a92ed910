"""Figures of a benchmark report, returned as PNG bytes (matplotlib, Agg backend).

* :func:`box_plots`: per structure (and the mean) one panel, one box per method.
* :func:`overlay_panels`: best, median and worst test case of one method, prediction and
  reference contours on the image's most labelled slice.
* :func:`training_curves`: training loss and source-validation Dice against the step.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segshift.report.figures import _STRUCTURE_COLOURS, _normalise


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def box_plots(scores: Mapping[str, Mapping[str, Sequence[float]]], metric_name: str, title: str) -> bytes:
    """Box plots of per-case scores.

    Args:
        scores: structure -> method label -> per-case values (NaN values are left out).
        metric_name: y-axis label.
        title: figure title.
    """
    plt = _plt()
    structures = list(scores)
    fig, axes = plt.subplots(1, len(structures), figsize=(3.2 * len(structures), 3.4), squeeze=False)
    for ax, s in zip(axes[0], structures):
        labels = list(scores[s])
        data = [[v for v in scores[s][m] if math.isfinite(v)] for m in labels]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
        for i, vals in enumerate(data, 1):
            ax.scatter(np.full(len(vals), i) + np.linspace(-0.08, 0.08, len(vals)), vals, s=8, alpha=0.6, color="k", zorder=3)
        ax.set_title(s)
        ax.set_ylabel(metric_name)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, y=1.04)
    return _png(fig)


def overlay_panels(images: Sequence[np.ndarray], references: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                   titles: Sequence[str], labels: Mapping[str, int], suptitle: str) -> bytes:
    """One panel per (image, reference, prediction) triple (3D arrays, slice axis last)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(images), figsize=(3.3 * len(images), 3.6), squeeze=False)
    structures = [(n, i) for n, i in labels.items() if int(i) != 0]
    for ax, img, ref, pred, title in zip(axes[0], images, references, predictions, titles):
        per_slice = (ref > 0).reshape(-1, ref.shape[2]).sum(0)
        k = int(np.argmax(per_slice)) if per_slice.any() else ref.shape[2] // 2
        fg = np.argwhere((ref[:, :, k] > 0) | (pred[:, :, k] > 0))
        if fg.size:
            (i0, j0), (i1, j1) = fg.min(0), fg.max(0)
            m = max(8, int(0.3 * max(i1 - i0, j1 - j0)))
            i0, j0 = max(0, i0 - m), max(0, j0 - m)
            i1, j1 = min(ref.shape[0], i1 + m + 1), min(ref.shape[1], j1 + m + 1)
        else:
            i0, j0, i1, j1 = 0, 0, ref.shape[0], ref.shape[1]
        ax.imshow(_normalise(img[i0:i1, j0:j1, k].astype(float)).T, cmap="gray", origin="lower")
        for c, (name, idx) in enumerate(structures):
            colour = _STRUCTURE_COLOURS[c % len(_STRUCTURE_COLOURS)]
            for arr, style in ((ref, "--"), (pred, "-")):
                mask = (arr[i0:i1, j0:j1, k] == idx).astype(float).T
                if mask.any() and not mask.all():
                    ax.contour(mask, levels=[0.5], colors=[colour], linestyles=style, linewidths=1.2)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(suptitle + "  (dashed: reference, solid: prediction)", fontsize=10)
    return _png(fig)


def read_curve(csv_path: str | Path) -> dict[str, list[float]]:
    """Columns of a run's ``logs/train.csv`` as floats (empty cells NaN)."""
    text = Path(csv_path).read_text(encoding="utf-8")
    cols: dict[str, list[float]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        for k, v in row.items():
            try:
                cols.setdefault(k, []).append(float(v) if v not in ("", None) else math.nan)
            except ValueError:
                cols.setdefault(k, []).append(math.nan)
    return cols


def training_curves(curves: Mapping[str, Mapping[str, list[float]]], title: str) -> bytes:
    """Training loss (``loss_seg`` if logged, else ``loss``) and ``val_mean`` against ``step``, one line per run."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, c in curves.items():
        step = np.asarray(c.get("step", []))
        key = "loss_seg" if "loss_seg" in c else "loss"
        if key in c:
            a.plot(step, c[key], label=name)
        if "val_mean" in c:
            v = np.asarray(c["val_mean"])
            ok = np.isfinite(v)
            b.plot(step[ok], v[ok], marker="o", ms=3, label=name)
    a.set_xlabel("step")
    a.set_ylabel("training loss (supervised part)")
    b.set_xlabel("step")
    b.set_ylabel("validation mean Dice")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _png(fig)
