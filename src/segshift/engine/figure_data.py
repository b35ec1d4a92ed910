"""The data of a method's figures, kept with its run.

At the end of training the trainer asks the method for its figures
(:meth:`~segshift.methods.base.Method.figures`, :class:`~segshift.methods.base.MethodFigure`)
and writes each one's data to ``RUN/logs/figures/<name>.npz``; the report layer reads it and
draws ``RUN/figures/<name>.png`` (:mod:`segshift.report.method_figures`), as it draws the
training curves from ``RUN/logs/train.csv``.

A file holds the figure's arrays (``a0``, ``a1``, ...) and a JSON header ``__figure__`` with
its name, kind, array names and text; it is read without pickle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segshift.methods.base import MethodFigure
from segshift.utils.atomic import atomic_path

FIGURE_DATA = Path("logs") / "figures"
"""Where a run keeps its figures' data, relative to the run folder."""


def write_figure_data(run: str | Path, figures: Sequence[MethodFigure]) -> list[Path]:
    """Write each figure's data under ``run`` (atomically); returns the files written."""
    written = []
    for fig in figures:
        dest = Path(run) / FIGURE_DATA / f"{fig.name}.npz"
        header = {"name": fig.name, "kind": fig.kind, "arrays": list(fig.arrays), "meta": fig.meta}
        arrays = {f"a{i}": np.asarray(a) for i, a in enumerate(fig.arrays.values())}
        with atomic_path(dest, suffix=".npz") as tmp:
            np.savez(tmp, __figure__=np.array(json.dumps(header)), **arrays)
        written.append(dest)
    return written


def read_figure_data(path: str | Path) -> MethodFigure:
    """The figure whose data ``path`` holds."""
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["__figure__"]))
        arrays = {name: z[f"a{i}"] for i, name in enumerate(header["arrays"])}
    return MethodFigure(header["name"], header["kind"], arrays, header["meta"])


def figure_data_files(run: str | Path) -> list[Path]:
    """The figure data files a run keeps, by name."""
    return sorted((Path(run) / FIGURE_DATA).glob("*.npz"))
