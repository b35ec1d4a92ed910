"""Figures that compare domains (matplotlib, Agg backend selected inside each function)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from segshift.data.domain import Domain
    from segshift.data.volume import Volume

_STRUCTURE_COLOURS = ("#e41a1c", "#4daf4a", "#377eb8", "#ff7f00", "#984ea3", "#a65628")


def _normalise(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the 1st and 99th percentiles (clipped)."""
    lo, hi = np.percentile(a, [1.0, 99.0])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def _mid_slice(label: np.ndarray | None, n_slices: int) -> int:
    """A mid-ventricular slice: the middle of the labelled slices (or of the stack)."""
    if label is not None:
        present = np.flatnonzero(label.reshape(-1, label.shape[2]).any(axis=0))
        if present.size:
            return int(present[len(present) // 2])
    return n_slices // 2


def _view_window(img: Volume, label: np.ndarray | None, k: int, half_mm: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """x/y limits (mm, display coordinates) of a square window around the heart (or the centre)."""
    sx, sy = img.spacing[0], img.spacing[1]
    nx, ny = img.array.shape[:2]
    if label is not None and label[:, :, k].any():
        ii, jj = np.nonzero(label[:, :, k])
        cx, cy = (ii.mean() + 0.5) * sx, (jj.mean() + 0.5) * sy
    else:
        cx, cy = nx * sx / 2.0, ny * sy / 2.0
    return (cx - half_mm, cx + half_mm), (cy + half_mm, cy - half_mm)


def domain_comparison_figure(
    domains: Sequence[Domain],
    out_png: str | Path,
    n_cases: int = 3,
    window_mm: float = 180.0,
) -> Path:
    """Montage of a mid-ventricular slice per case and intensity histograms, one row per domain.

    Columns: ``n_cases`` cases (labelled ones first), the first case again with the label
    contours, and a histogram of intensities normalised to [0, 1] by the 1st-99th percentile
    of each image: all voxels, foreground (any label) voxels, and each structure. Images are
    shown at physical scale in a ``window_mm`` square centred on the heart.

    Args:
        domains: opened domain folders (rows, in order).
        out_png: the PNG to write (atomically).
        n_cases: cases shown per domain.
        window_mm: side of the displayed window in mm.

    Returns:
        ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segshift.utils.atomic import atomic_path

    if not domains:
        raise ValueError("domain_comparison_figure needs at least one domain")
    n_cases = max(int(n_cases), 1)
    n_cols = n_cases + 2
    fig, axes = plt.subplots(
        len(domains),
        n_cols,
        figsize=(2.6 * n_cols + 1.4, 2.6 * len(domains)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.0] * (n_cases + 1) + [1.5]},
    )
    bins = np.linspace(0.0, 1.0, 65)
    for row, dom in enumerate(domains):
        cases = (dom.labelled_cases + dom.unlabelled_cases)[:n_cases]
        structures = dom.spec.structures
        hist_all: list[np.ndarray] = []
        hist_fg: list[np.ndarray] = []
        hist_struct: dict[str, list[np.ndarray]] = {name: [] for name in structures}
        first = None
        for col in range(n_cases):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(cases):
                ax.axis("off")
                continue
            img, lab = dom.load(cases[col])
            labels = None if lab is None else lab.array
            norm = _normalise(img.array.astype(np.float32))
            hist_all.append(norm.ravel())
            if labels is not None:
                hist_fg.append(norm[labels > 0])
                for name, value in structures.items():
                    hist_struct[name].append(norm[labels == value])
            k = _mid_slice(labels, img.array.shape[2])
            sx, sy = img.spacing[0], img.spacing[1]
            nx, ny = img.array.shape[:2]
            extent = (0.0, nx * sx, ny * sy, 0.0)
            ax.imshow(norm[:, :, k].T, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
            xlim, ylim = _view_window(img, labels, k, window_mm / 2.0)
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_facecolor("black")
            ax.set_title(f"{cases[col]} z={k}", fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{dom.name}\n{img.spacing[0]:.2g}x{img.spacing[1]:.2g}x{img.spacing[2]:.2g} mm", fontsize=9)
                first = (norm[:, :, k], None if labels is None else labels[:, :, k], extent, xlim, ylim)
        ax = axes[row, n_cases]
        ax.set_xticks([])
        ax.set_yticks([])
        if first is not None:
            sl, lb, extent, xlim, ylim = first
            ax.imshow(sl.T, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
            if lb is not None:
                xs = (np.arange(lb.shape[0]) + 0.5) * (extent[1] / lb.shape[0])
                ys = (np.arange(lb.shape[1]) + 0.5) * (extent[2] / lb.shape[1])
                for idx, value in enumerate(structures.values()):
                    mask = (lb == value).astype(float)
                    if mask.any():
                        ax.contour(xs, ys, mask.T, levels=[0.5], colors=[_STRUCTURE_COLOURS[idx % 6]], linewidths=0.8)
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_title("labels" if lb is not None else "(unlabelled)", fontsize=8)
        ax = axes[row, n_cases + 1]
        if hist_all:
            ax.hist(np.concatenate(hist_all), bins=bins, density=True, color="0.75", label="all")
        if hist_fg:
            ax.hist(np.concatenate(hist_fg), bins=bins, density=True, histtype="step", color="k", lw=1.4, label="foreground")
        for idx, (name, parts) in enumerate(hist_struct.items()):
            if parts and sum(p.size for p in parts):
                ax.hist(
                    np.concatenate(parts),
                    bins=bins,
                    density=True,
                    histtype="step",
                    color=_STRUCTURE_COLOURS[idx % 6],
                    lw=0.9,
                    label=name,
                )
        ax.set_xlim(0, 1)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        if row == 0:
            ax.set_title("intensity (1-99 pct normalised)", fontsize=8)
            ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png


def image_grid(
    rows: Sequence[tuple[str, np.ndarray]], out_png: str | Path, title: str = "", col_titles: Sequence[str] | None = None
) -> Path:
    """A grid of 2D images: one row per ``(name, images (N, H, W))``, the same N in every row.

    Each image is shown with its own 1st-99th percentile window (the figure is about
    structure, not absolute intensity). Used for translation grids (source, translated,
    reconstructed) and factor grids. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segshift.utils.atomic import atomic_path

    if not rows:
        raise ValueError("image_grid needs at least one row")
    n = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n + 0.8, 1.9 * len(rows) + 0.4), squeeze=False)
    for i, (name, images) in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(images):
                ax.imshow(_normalise(np.asarray(images[j], dtype=np.float32)), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
            if i == 0 and col_titles is not None and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return out_png
