"""Method figures: what a method learnt, drawn from the data its run keeps.

A finished run keeps its method's figures as data (:mod:`segshift.engine.figure_data`);
:func:`draw_run_figures` draws each to ``RUN/figures/<name>.png`` with the drawer its kind
names (:data:`DRAWERS`). ``segshift train`` and ``segshift benchmark`` draw them when
training ends; ``segshift report`` shows them, drawing any still missing in memory
(:func:`undrawn_figures`), so it writes nothing into the runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from segshift.engine.figure_data import FIGURE_DATA, figure_data_files, read_figure_data
from segshift.methods.base import MethodFigure
from segshift.report.figures import image_grid
from segshift.report.sdnet_figures import sdnet_anatomy_figure, sdnet_factor_grid

FIGURES = "figures"
"""Where a run's drawn figures go, relative to the run folder."""

DRAWERS: dict[str, Callable[[MethodFigure, Path], Path]] = {
    "image_grid": lambda f, out: image_grid(
        list(f.arrays.items()), out, title=f.meta.get("title", ""), col_titles=f.meta.get("col_titles")
    ),
    "sdnet_anatomy": lambda f, out: sdnet_anatomy_figure(**f.arrays, out_png=out),
    "sdnet_factor_grid": lambda f, out: sdnet_factor_grid(**f.arrays, names=f.meta["names"], out_png=out),
}
"""How each kind of :class:`~segshift.methods.base.MethodFigure` is drawn: rows of images
(``image_grid``: one row per array, ``meta`` ``title``), SDNet's anatomy channels and its
factor grid (:mod:`segshift.report.sdnet_figures`)."""


def draw_figure(figure: MethodFigure, out_png: str | Path) -> Path:
    """Draw ``figure`` to ``out_png`` (atomically)."""
    if figure.kind not in DRAWERS:
        raise ValueError(f"no drawer for a figure of kind {figure.kind!r} ({figure.name}); known: {', '.join(DRAWERS)}")
    return DRAWERS[figure.kind](figure, Path(out_png))


def _undrawn(run: str | Path) -> list[Path]:
    """The figure data files of ``run`` whose ``RUN/figures/<name>.png`` is missing or older than them."""
    out = []
    for data in figure_data_files(run):
        png = Path(run) / FIGURES / f"{data.stem}.png"
        if not (png.is_file() and png.stat().st_mtime >= data.stat().st_mtime):
            out.append(data)
    return out


def draw_run_figures(run: str | Path) -> list[Path]:
    """Draw every figure whose data ``run`` keeps to ``RUN/figures/<name>.png``, where that file
    is missing or older than its data; returns the files drawn.
    """
    return [draw_figure(read_figure_data(data), Path(run) / FIGURES / f"{data.stem}.png") for data in _undrawn(run)]


def undrawn_figures(run: str | Path) -> dict[str, bytes]:
    """``{"<name>.png": PNG bytes}`` of the figures :func:`draw_run_figures` would draw, drawn in
    a temporary folder: ``run`` is left as it is.
    """
    with tempfile.TemporaryDirectory() as tmp:
        return {f"{d.stem}.png": draw_figure(read_figure_data(d), Path(tmp) / f"{d.stem}.png").read_bytes() for d in _undrawn(run)}


def draw_figures_under(root: str | Path) -> list[Path]:
    """:func:`draw_run_figures` for every run folder under ``root`` (a benchmark's or a recipe's)."""
    root = Path(root)
    found = {p.parent.parent.parent for p in root.rglob(f"{FIGURE_DATA.as_posix()}/*.npz")}
    runs = sorted(r for r in found if not any(part.startswith(".") for part in r.relative_to(root).parts))  # not staged or set aside
    return [png for run in runs for png in draw_run_figures(run)]
