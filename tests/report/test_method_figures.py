"""Method figures: a finished run keeps their data, the report layer draws them.

What is checked: the data a run keeps reads back as written (arrays, dtypes, names, text);
:func:`draw_run_figures` draws each to ``RUN/figures/<name>.png`` with exactly the drawer of its
kind, once (an up-to-date file is left alone); the report draws undrawn ones
in memory without writing into the run; a benchmark's runs are found, staged or set-aside
folders skipped; ``segshift train`` of a translation method leaves ``figures/translation.png``.
"""

from __future__ import annotations

import os

import numpy as np

from segshift.cli.main import main
from segshift.engine.figure_data import FIGURE_DATA, read_figure_data, write_figure_data
from segshift.methods.base import MethodFigure
from segshift.report.figures import image_grid
from segshift.report.method_figures import draw_figures_under, draw_run_figures, undrawn_figures
from tests.conftest import FAST, train_argv


def _grid() -> MethodFigure:
    rng = np.random.default_rng(0)
    rows = {"source": rng.random((3, 16, 12), dtype=np.float32), "source -> target": rng.random((3, 16, 12), dtype=np.float32)}
    return MethodFigure("translation", "image_grid", rows, {"title": "m: translation"})


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_figure_data_reads_back_as_written(tmp_path):
    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    figs = [_grid(), MethodFigure("factor_grid", "sdnet_factor_grid", {"label": label}, {"names": ["source", "target"]})]
    written = write_figure_data(tmp_path, figs)
    assert written == [tmp_path / FIGURE_DATA / "translation.npz", tmp_path / FIGURE_DATA / "factor_grid.npz"]
    for fig, path in zip(figs, written):
        back = read_figure_data(path)
        assert (back.name, back.kind, back.meta, list(back.arrays)) == (fig.name, fig.kind, fig.meta, list(fig.arrays))
        assert all(back.arrays[k].dtype == v.dtype and np.array_equal(back.arrays[k], v) for k, v in fig.arrays.items())


def test_a_run_s_figures_are_drawn_once_by_the_drawer_of_their_kind(tmp_path):
    run = tmp_path / "run"
    fig = _grid()
    write_figure_data(run, [fig])
    assert draw_run_figures(run) == [run / "figures" / "translation.png"]
    direct = image_grid(list(fig.arrays.items()), tmp_path / "direct.png", title="m: translation")
    assert (run / "figures" / "translation.png").read_bytes() == direct.read_bytes()
    assert draw_run_figures(run) == []  # up to date: left alone
    data = run / FIGURE_DATA / "translation.npz"
    os.utime(data, (data.stat().st_mtime + 10,) * 2)  # newer data (a run trained again): drawn again
    assert draw_run_figures(run) == [run / "figures" / "translation.png"]


def test_the_report_draws_undrawn_figures_in_memory(tmp_path):
    run = tmp_path / "run"
    write_figure_data(run, [_grid()])
    before = _tree(run)
    png = undrawn_figures(run)
    assert list(png) == ["translation.png"] and png["translation.png"].startswith(b"\x89PNG")
    assert _tree(run) == before  # nothing written into the run
    draw_run_figures(run)
    assert undrawn_figures(run) == {}


def test_draw_figures_under_finds_every_run_but_staged_or_set_aside_ones(tmp_path):
    runs = [tmp_path / "runs" / "t" / m / "seed0" / "train" for m in ("cyclegan", "sdnet")]
    hidden = tmp_path / "runs" / "t" / "unetgan" / "seed0" / ".train.staging"
    for run in [*runs, hidden]:
        write_figure_data(run, [_grid()])
    assert draw_figures_under(tmp_path / "runs") == [run / "figures" / "translation.png" for run in runs]
    assert not (hidden / "figures").exists()


def test_segshift_train_draws_the_translation_figure(phantom, tmp_path):
    out = tmp_path / "run"
    sets = [*FAST, "train.steps=2", "train.eval_every=2", "method.g_ngf=4", "method.g_blocks=1", "method.d_channels=[8,16,1]"]
    assert main(train_argv("cyclegan", phantom["bssfp"], out, target=phantom["lge"], sets=sets)) == 0
    assert (out / FIGURE_DATA / "translation.npz").is_file()
    png = out / "figures" / "translation.png"
    assert png.stat().st_size > 10_000
    fig = read_figure_data(out / FIGURE_DATA / "translation.npz")
    assert list(fig.arrays) == ["source", "source -> target", "cycle S->T->S", "target", "target -> source", "cycle T->S->T"]
    assert png.read_bytes() == image_grid(list(fig.arrays.items()), tmp_path / "again.png", title=fig.meta["title"]).read_bytes()
