"""SDNet figures (Liu et al. 2020, Fig. 1(c)): anatomy channels, and one anatomy under several modality factors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np


def _plt() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png: Path) -> Path:  # noqa: ANN001 - a matplotlib figure
    from segshift.utils.atomic import atomic_path

    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _plt().close(fig)
    return out_png


def sdnet_anatomy_figure(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, anatomy: np.ndarray, out_png: str | Path) -> Path:
    """Image, label, prediction and each binary anatomy channel of one slice (``anatomy`` ``(K, H, W)``)."""
    plt = _plt()
    panels = [("image", image, "gray"), ("label", label, "viridis"), ("prediction", prediction, "viridis")]
    panels += [(f"anatomy {k}", anatomy[k], "gray") for k in range(anatomy.shape[0])]
    cols = min(len(panels), 6)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, arr, cmap) in zip(axes.flat, panels):
        vmax = max(1, int(label.max())) if cmap == "viridis" else None
        ax.imshow(
            arr,
            cmap=cmap,
            vmin=0 if cmap != "gray" or title.startswith("anatomy") else None,
            vmax=vmax if cmap == "viridis" else (1 if title.startswith("anatomy") else None),
            interpolation="nearest",
        )
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def sdnet_factor_grid(
    anatomy_image: np.ndarray, modality_images: np.ndarray, decoded: np.ndarray, names: Sequence[str], out_png: str | Path
) -> Path:
    """Top row: the images giving modality factors; bottom row: ``anatomy_image``'s anatomy decoded with each."""
    plt = _plt()
    n = len(modality_images)
    fig, axes = plt.subplots(2, n + 1, figsize=(1.8 * (n + 1), 3.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(anatomy_image, cmap="gray")
    axes[0, 0].set_title("anatomy from", fontsize=8)
    for i in range(n):
        axes[0, i + 1].imshow(modality_images[i], cmap="gray")
        axes[0, i + 1].set_title(f"modality: {names[i]}", fontsize=8)
        axes[1, i + 1].imshow(decoded[i], cmap="gray")
        axes[1, i + 1].set_title("decoded", fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out_png))
