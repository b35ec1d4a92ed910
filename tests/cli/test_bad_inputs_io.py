"""Bad input around output folders and files, one row per class: the exit status, the message, and that
nothing was written, overwritten or deleted (a report's --out, a folder that appears at --out while a command
runs, a benchmark inside its data, the umask, link loops, long names)."""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

import pytest

import segshift.inference.predict_files as pf
from segshift.cli.main import main
from segshift.data.phantom import generate_phantom
from segshift.data.volume import write_nifti
from tests.cli import test_bad_inputs as bad
from tests.cli.test_bad_inputs import _digest, _err
from tests.conftest import FAST, oblique_affine, toy_case, train_argv

tiny_run, vols = bad.tiny_run, bad.vols  # that module's fixtures: a 2-step run, two volumes to predict


def _hidden(folder: Path) -> list[str]:
    """Hidden entries of ``folder``: temporaries or set-aside copies left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- report --out ---------------------------------------------------------------------------------------------


def test_report_out_refuses_an_existing_file_and_the_benchmarks_inputs(tiny_benchmark, tmp_path, capsys):
    bench = tiny_benchmark
    suite = bench.parent / "tiny.yaml"
    before = _digest(bench), _digest(suite)
    rows = [
        (bench / "benchmark.json", "report file lies inside the input"),
        (bench / "runs", "report file lies inside the input"),
        (suite, "report file is the input"),
        (bench / "phantom" / "lge" / "images" / "case000.nii.gz", "report file lies inside the input"),
    ]
    for (out, message), overwrite in itertools.product(rows, ([], ["--overwrite"])):
        assert main(["report", str(bench), "--out", str(out), *overwrite]) == 2, (out, overwrite)
        err = _err(capsys)
        assert message in err and err.count("\n") == 1, err
    assert (_digest(bench), _digest(suite)) == before
    other = tmp_path / "image.nii.gz"  # any existing file outside the benchmark: --overwrite or nothing
    other.write_bytes(b"precious")
    assert main(["report", str(bench), "--out", str(other)]) == 2
    assert "exists (use --overwrite" in _err(capsys) and other.read_bytes() == b"precious"
    assert _hidden(bench) == [] and _hidden(tmp_path) == []


@pytest.mark.slow  # two full reports (~12 s); the refusals above stay in make test
def test_report_out_overwrites_a_file_outside_the_benchmark_and_rewrites_its_own(tiny_benchmark, tmp_path, capsys):
    bench = tiny_benchmark
    other = tmp_path / "image.nii.gz"
    other.write_bytes(b"precious")
    assert main(["report", str(bench), "--out", str(other), "--overwrite"]) == 0
    assert other.read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(bench)]) == 0  # FOLDER/report.html is the report's own file: rewritten
    assert _hidden(bench) == [] and _hidden(tmp_path) == []


# -- a folder that appears at --out while a command runs --------------------------------------------------------


def _during_first_mask(monkeypatch, action) -> None:
    """Run ``action`` once, just after predict wrote its first mask (into its temporary folder)."""
    write = pf._write_mask
    done = []

    def hooked(*args, **kwargs):
        write(*args, **kwargs)
        if not done:
            done.append(1)
            action()

    monkeypatch.setattr(pf, "_write_mask", hooked)


@pytest.mark.parametrize("overwrite", [False, True])
def test_predict_keeps_a_folder_that_appears_at_out_while_it_runs(tiny_run, vols, tmp_path, capsys, monkeypatch, overwrite):
    out = tmp_path / "race"

    def user_makes_a_folder() -> None:
        out.mkdir()
        (out / "precious.txt").write_text("x")

    _during_first_mask(monkeypatch, user_makes_a_folder)
    args = ["predict", str(tiny_run), str(vols), "--out", str(out)] + (["--overwrite"] if overwrite else [])
    assert main(args) == 2
    assert "another folder was written there while this command ran" in _err(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"] and (out / "precious.txt").read_text() == "x"
    assert _hidden(tmp_path) == []


def test_two_predicts_to_the_same_out_lose_neither_output(tiny_run, vols, tmp_path, capsys, monkeypatch):
    """The second predict finishes while the first runs; the first then refuses to replace its output."""
    out = tmp_path / "same"

    def second_predict() -> None:
        assert main(["predict", str(tiny_run), str(vols), "--out", str(out)]) == 0

    _during_first_mask(monkeypatch, second_predict)
    assert main(["predict", str(tiny_run), str(vols), "--out", str(out)]) == 2
    assert "another folder was written there while this command ran" in _err(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["case000.nii.gz", "case001.nii.gz", "qc.csv"]
    assert _hidden(tmp_path) == []


# -- benchmark --out inside its input data ------------------------------------------------------------------


_SUITE = """name: io
seeds: [0]
inits:
  - {id: init, method: source-only, budget: {steps: 2}}
budget: {steps: 2}
set:
  - "model.kwargs={features: [8, 16, 32]}"
  - data.preprocess.crop_size=[64,64]
  - data.preprocess.target_spacing=3.0
  - train.batch_size=2
methods: [source-only]
tasks:
  - name: t
    sources: [{domain: bssfp, val_cases: [case002, case003]}]
    target: {domain: lge, cases: [case000, case001]}
    test:
      - {name: lge, domain: lge, cases: [case002, case003]}
"""


@pytest.mark.parametrize(("where", "how"), [("lge", "is the input"), (".", "contains the input"), ("lge/x", "lies inside the input")])
def test_benchmark_out_in_its_input_data_is_refused_before_anything_is_written(tmp_path, capsys, where, how):
    data = tmp_path / "ph"
    generate_phantom(data, presets=["bssfp", "lge"], n_cases=4, seed=3)
    suite = tmp_path / "suite.yaml"
    suite.write_text(_SUITE)
    before = _digest(data), sorted(p.relative_to(data) for p in data.rglob("*"))
    out = data / where
    assert main(["benchmark", str(suite), "--root", str(data), "--out", str(out)]) == 2
    err = _err(capsys)
    assert f"benchmark folder {how}" in err and err.count("\n") == 1, err
    assert (_digest(data), sorted(p.relative_to(data) for p in data.rglob("*"))) == before


# -- outputs follow the umask ---------------------------------------------------------------------------------


def _modes(root: Path) -> set[tuple[str, int]]:
    """(kind, permission bits) of ``root`` and everything under it."""
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.rglob("*")]}


@pytest.mark.slow  # ~9 s; the atomic writers' modes are unit-tested in tests/utils
def test_outputs_follow_the_umask(tiny_run, vols, tiny_benchmark, tmp_path, capsys):
    """A real umask (0o027, set with os.umask) on the outputs of phantom, import, predict, export, report and
    export nnunet: files 0640 and folders 0750, where mkstemp/mkdtemp alone give 0600 and 0700."""
    raw = tmp_path / "raw"
    img, lab = toy_case()
    write_nifti(raw / "a.nii.gz", img, oblique_affine())
    write_nifti(raw / "a_gt.nii.gz", lab.astype("uint8"), oblique_affine())
    out = tmp_path / "out"
    out.mkdir()
    commands = {
        "phantom": (["phantom", "--out", str(out / "ph"), "--domains", "lge", "--cases", "2"], out / "ph" / "lge"),
        "import": (["import", str(raw), str(out / "dom"), "--label-suffix", "_gt"], out / "dom"),
        "predict": (["predict", str(tiny_run), str(vols), "--out", str(out / "pred")], out / "pred"),
        "export": (["export", str(tiny_run), "--format", "torchscript", str(out / "ts")], out / "ts"),
        "report": (["report", str(tiny_benchmark), "--out", str(out / "report.html")], out / "report.html"),
        "export nnunet": (["export", "nnunet", str(out / "ph" / "lge"), str(out / "nn"), "--id", "7", "--name", "L"], out / "nn"),
    }
    old = os.umask(0o027)
    try:
        for name, (args, result) in commands.items():
            assert main(args) == 0, (name, capsys.readouterr().err)
            assert _modes(result) <= {("file", 0o640), ("dir", 0o750)}, (name, _modes(result))
    finally:
        os.umask(old)


# -- a symbolic link loop as input or output -------------------------------------------------------------------


def test_a_symlink_loop_as_input_or_output_is_one_error_line(tiny_run, vols, tmp_path, capsys, phantom):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    rows = [
        (["predict", str(tiny_run), str(loop), "--out", str(tmp_path / "o")], loop),
        (["predict", str(tiny_run), str(vols), "--out", str(loop)], loop),
        (["predict", str(tiny_run), str(vols), "--out", str(loop / "sub")], loop / "sub"),
        (["phantom", "--out", str(loop), "--domains", "lge", "--cases", "1"], loop / "lge"),
        (["export", "nnunet", str(phantom["lge"]), str(loop), "--id", "7", "--name", "L"], loop / "Dataset007_L"),
        (["train", "-m", "source-only", "-s", str(loop), "-o", str(tmp_path / "r"), "--no-progress"], loop),
    ]
    for args, path in rows:
        assert main(args) == 2, args
        err = _err(capsys)
        assert err == f"error: {path}: is a loop of symbolic links (a link that leads back to itself); remove it or give another path\n", (
            err
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop", "vols"]


# -- a long output name ----------------------------------------------------------------------------------------


def test_a_250_character_out_name_is_accepted(phantom, tiny_run, vols, tmp_path, capsys):
    out = tmp_path / ("x" * 250)
    assert main(["predict", str(tiny_run), str(vols), "--out", str(out)]) == 0, _err(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["case000.nii.gz", "case001.nii.gz", "qc.csv"]
    assert main(["predict", str(tiny_run), str(vols), "--out", str(out), "--overwrite"]) == 0, _err(capsys)
    run = tmp_path / ("r" * 250)
    assert main(train_argv("source-only", phantom["bssfp"], run, sets=["train.steps=1", *FAST])) == 0, _err(capsys)
    assert (run / "checkpoints" / "best").is_dir() and (run / "summary.json").is_file()
    assert _hidden(tmp_path) == []
