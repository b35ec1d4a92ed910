"""Figures of a benchmark report, returned as PNG bytes (matplotlib, Agg backend).

* :func:`box_plots`: per structure (and the mean) one panel, one box per method.
* :func:`overlay_panels`: best, median and worst test case of one method, prediction and
  reference contours on the image's most labelled slice.
* :func:`training_curves`: training loss and source-validation Dice against the step.
* :func:`stage_curves`: small multiples of every run of a task (one row each: the init, then
  every adaptation stage), one column per kind of term in ``logs/train.csv``
  (:data:`CURVE_GROUPS`): supervised loss, alignment/generator terms, discriminator losses,
  alignment weights ``w_*``, source validation Dice, and the diagnostics of alignment and
  translation runs (:data:`DIAGNOSTIC_GROUPS`): discriminator accuracy, alignment over
  supervised gradient norm, translated-source Dice, image statistics distance.
* :func:`qc_scatter`: per QC score one panel of score against per-case Dice, one colour per
  row, the QC threshold as a line (:mod:`segshift.bench.qc`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from segshift.metrics.stats import finite
from segshift.report.figures import _STRUCTURE_COLOURS, _normalise


def _plt() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def box_plots(scores: Mapping[str, Mapping[str, Sequence[float]]], metric_name: str, title: str) -> bytes:
    """Box plots of per-case scores.

    Args:
        scores: structure -> method label -> per-case values (undefined values, NaN or +-inf, are left out).
        metric_name: y-axis label.
        title: figure title.
    """
    plt = _plt()
    structures = list(scores)
    fig, axes = plt.subplots(1, len(structures), figsize=(3.2 * len(structures), 3.4), squeeze=False)
    for ax, s in zip(axes[0], structures):
        labels = list(scores[s])
        data = [finite(scores[s][m]).tolist() for m in labels]  # undefined scores are left out (segshift.metrics.stats)
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
        for i, vals in enumerate(data, 1):
            ax.scatter(np.full(len(vals), i) + np.linspace(-0.08, 0.08, len(vals)), vals, s=8, alpha=0.6, color="k", zorder=3)
        ax.set_title(s)
        ax.set_ylabel(metric_name)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, y=1.04)
    return _png(fig)


def overlay_panels(
    images: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    titles: Sequence[str],
    labels: Mapping[str, int],
    suptitle: str,
) -> bytes:
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
        for c, (_name, idx) in enumerate(structures):
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


_GENERATOR_TERMS = {"g_adv", "loss_g", "cycle", "identity", "ssim", "unet_feat", "rec", "zrec", "kl"}


def _supervised(key: str, cols: Mapping[str, list[float]]) -> bool:
    return key == ("loss_seg" if "loss_seg" in cols else "loss")


CURVE_GROUPS: tuple[tuple[str, Callable[[str, Mapping[str, list[float]]], bool]], ...] = (
    ("supervised loss", _supervised),
    ("alignment / generator terms", lambda k, c: k.startswith(("adv_", "ent_")) or k in _GENERATOR_TERMS),
    ("discriminator losses", lambda k, c: k.startswith("loss_d")),
    ("alignment weights w_*", lambda k, c: k.startswith("w_")),
    ("source validation Dice", lambda k, c: k == "val_mean"),
    ("discriminator accuracy", lambda k, c: k.startswith(("d_acc_", "acc_"))),  # acc_<D>: another spelling in train.csv
    ("alignment / supervised gradient", lambda k, c: k.startswith("grad_ratio_")),
    ("translated-source Dice", lambda k, c: k.startswith("trans_dice")),
    ("image statistics distance", lambda k, c: k.startswith("trans_stat_dist")),
)
"""Columns of ``logs/train.csv`` by panel: (title, does this column belong here)."""

DIAGNOSTIC_GROUPS = tuple(title for title, _ in CURVE_GROUPS[-4:])
"""The panels of the diagnostics (:mod:`segshift.methods.diagnostics`; docs/training.md, "Diagnostics")."""

_UNIT_RANGE = {"source validation Dice", "discriminator accuracy", "translated-source Dice"}
_CHANCE = {"discriminator accuracy": 0.5}


def curve_columns(cols: Mapping[str, list[float]]) -> dict[str, list[str]]:
    """Group title -> the columns of one run's log in it (those with at least one finite value)."""
    out: dict[str, list[str]] = {}
    for title, belongs in CURVE_GROUPS:
        keys = [k for k in cols if k != "step" and belongs(k, cols) and any(math.isfinite(v) for v in cols[k])]
        if keys:
            out[title] = keys
    return out


def stage_groups(rows: Sequence[tuple[str, Sequence[tuple[str, Mapping[str, list[float]]]]]]) -> list[str]:
    """The panels :func:`stage_curves` draws for ``rows``: the groups of :data:`CURVE_GROUPS` any run logged, in order."""
    groups = [g for g, _ in CURVE_GROUPS if any(g in curve_columns(c) for _, seeds in rows for _, c in seeds)]
    return groups or [CURVE_GROUPS[0][0]]


def stage_curves(rows: Sequence[tuple[str, Sequence[tuple[str, Mapping[str, list[float]]]]]], title: str) -> bytes:
    """Small multiples of the training logs of a task's runs.

    Args:
        rows: one entry per row of the tables, in their order: (row title, [(seed name, columns of
            its ``logs/train.csv``), ...]). Several seeds of a row share its panels.
        title: figure title.

    One figure row per table row, one column per group of :data:`CURVE_GROUPS` that any run
    logged; each panel plots that group's columns against the step (seeds dashed after the
    first); a group the run did not log is left blank, with a note. Dice and accuracy panels
    span [0, 1]; the discriminator accuracy panel marks chance (0.5) with a dotted line.
    """
    plt = _plt()
    groups = stage_groups(rows)
    n_r, n_c = max(1, len(rows)), len(groups)
    fig, axes = plt.subplots(n_r, n_c, figsize=(2.6 * n_c, 1.55 * n_r + 0.6), squeeze=False)
    for r, (row_title, seeds) in enumerate(rows):
        for c, group in enumerate(groups):
            ax = axes[r][c]
            drawn = False
            for k, (_seed_name, cols) in enumerate(seeds):
                step = np.asarray(cols.get("step", []), dtype=float)
                for j, key in enumerate(curve_columns(cols).get(group, [])):
                    v = np.asarray(cols[key], dtype=float)
                    ok = np.isfinite(v) & np.isfinite(step)
                    if not ok.any():
                        continue
                    ax.plot(
                        step[ok],
                        v[ok],
                        color=f"C{j % 10}",
                        lw=1.0,
                        ls="-" if k == 0 else "--",
                        marker="o" if group == "source validation Dice" else None,
                        ms=2,
                        label=key if k == 0 else None,
                    )
                    drawn = True
            if drawn:
                ax.legend(fontsize=5.5, loc="best", frameon=False)
                ax.grid(alpha=0.3)
                ax.tick_params(labelsize=6)
                ax.ticklabel_format(axis="y", useOffset=False, style="plain")
                if group in _UNIT_RANGE:
                    ax.set_ylim(0, 1)
                if group in _CHANCE:
                    ax.axhline(_CHANCE[group], color="0.5", ls=":", lw=0.8)
            else:
                ax.text(0.5, 0.5, "not logged", ha="center", va="center", fontsize=7, color="0.6", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
            if r == 0:
                ax.set_title(group, fontsize=8)
            if c == 0:
                ax.set_ylabel(row_title, fontsize=7, rotation=0, ha="right", va="center")
            if r == n_r - 1:
                ax.set_xlabel("step (of the run's own stage)", fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def qc_scatter(
    cases: Sequence[Mapping[str, object]], scores: Sequence[str], threshold: float, title: str, stats: Mapping[str, str] | None = None
) -> bytes:
    """Scatter plots of QC scores against per-case Dice.

    Args:
        cases: one mapping per run and case with ``label``, ``seed``, ``dice`` and every score
            (undefined values, ``None``/NaN, are left out of the panel).
        scores: the score keys, one panel each (oriented: higher = more suspicious).
        threshold: the Dice below which a case counts as failed (a dashed line).
        title: figure title.
        stats: score -> a short text for the panel title (e.g. the pooled rho and AUC).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(scores), figsize=(3.6 * len(scores), 3.4), squeeze=False)
    rows = list(dict.fromkeys(str(c["label"]) for c in cases))
    markers = "osD^v<>PX*"
    for ax, score in zip(axes[0], scores):
        for i, row in enumerate(rows):
            pts = [(c[score], c["dice"]) for c in cases if str(c["label"]) == row]
            xy = np.asarray([(math.nan if x is None else float(x), math.nan if y is None else float(y)) for x, y in pts], dtype=float)
            xy = xy[np.isfinite(xy).all(axis=1)] if xy.size else xy.reshape(0, 2)
            ax.scatter(xy[:, 0], xy[:, 1], s=22, alpha=0.75, color=f"C{i % 10}", marker=markers[i % len(markers)], label=row)
        ax.axhline(threshold, color="0.4", ls="--", lw=1)
        ax.set_xlabel(f"{score} (higher = more suspicious)", fontsize=8)
        ax.set_ylabel("Dice (mean over structures)", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.locator_params(axis="x", nbins=5)
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.set_title(score + (f"\n{stats[score]}" if stats and score in stats else ""), fontsize=8)
    axes[0][0].legend(fontsize=6, loc="best", frameon=True)
    fig.suptitle(f"{title}  (dashed: Dice {threshold:g})", fontsize=10, y=1.04)
    return _png(fig)
