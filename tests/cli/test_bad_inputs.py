"""Bad input, one row per class: the exit status, the message, and that nothing was written,
overwritten or deleted. Rows that already pass stay, so a regression shows."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segshift.cli.main import main
from segshift.data.domain import Domain
from segshift.data.volume import read_volume, write_nifti
from tests.conftest import FAST, oblique_affine, toy_case, train_argv


def _digest(path: Path) -> str:
    """A hash of every file under ``path`` (names and bytes): proves nothing was changed or deleted."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_run(phantom, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bad") / "run"
    sets = ["train.steps=2", "train.eval_every=2", "train.checkpoint_every=2", *FAST]
    assert main(train_argv("source-only", phantom["bssfp"], run, sets=sets)) == 0
    return run


@pytest.fixture
def vols(phantom, tmp_path) -> Path:
    """A folder of two phantom volumes to predict."""
    folder = tmp_path / "vols"
    folder.mkdir()
    for c in ("case000", "case001"):
        shutil.copy(Domain(phantom["lge"]).image_path(c), folder / f"{c}.nii.gz")
    return folder


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# -- 1. overwrite safety: an output that is, contains or lies inside an input -------------------------


@pytest.mark.parametrize(("where", "how"), [("same", "is the input"), ("parent", "contains the input"), ("inside", "lies inside")])
def test_predict_out_overlapping_its_input_is_refused(tiny_run, vols, tmp_path, capsys, where, how):
    out = {"same": vols, "parent": tmp_path, "inside": vols / "masks"}[where]
    before = _digest(vols)
    assert main(["predict", str(tiny_run), str(vols), "--out", str(out), "--overwrite"]) == 2
    assert how in _err(capsys)
    assert _digest(vols) == before and not (vols / "masks").exists()


def test_predict_out_equal_to_the_run_is_refused(tiny_run, vols, capsys):
    before = _digest(tiny_run)
    assert main(["predict", str(tiny_run), str(vols), "--out", str(tiny_run), "--overwrite"]) == 2
    assert "is the input" in _err(capsys)
    assert _digest(tiny_run) == before


def test_train_out_equal_to_its_source_is_refused(phantom, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(phantom["bssfp"], src)
    before = _digest(src)
    assert main(["train", "-m", "source-only", "-s", str(src), "-o", str(src), "--overwrite", "--no-progress"]) == 2
    assert "run folder is the input" in _err(capsys)
    assert _digest(src) == before


def test_import_out_containing_the_raw_folder_is_refused(tmp_path, capsys):
    raw = tmp_path / "P" / "sub"
    img, _ = toy_case()
    write_nifti(raw / "a.nii.gz", img, oblique_affine())
    (tmp_path / "P" / "other.txt").write_text("keep me")
    before = _digest(tmp_path / "P")
    assert main(["import", str(raw), str(tmp_path / "P"), "--overwrite"]) == 2
    assert "domain folder contains the input" in _err(capsys)
    assert _digest(tmp_path / "P") == before


def test_evaluate_refuses_an_existing_out_without_overwrite(phantom, tiny_run, vols, tmp_path, capsys):
    assert main(["predict", str(tiny_run), str(vols), "--out", str(tmp_path / "pred")]) == 0
    out = tmp_path / "eval"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    args = ["evaluate", str(tmp_path / "pred"), str(phantom["lge"]), "--out", str(out), "--cases", "case000,case001"]
    assert main(args) == 2 and "--overwrite" in _err(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert main(args + ["--overwrite"]) == 0 and (out / "summary.json").is_file()


# -- 3. label suffix without --labels ----------------------------------------------------------------


def test_label_suffix_without_labels_finds_the_labels_beside_the_images(tmp_path, capsys):
    for n in (1, 2):
        img, lab = toy_case(seed=n)
        write_nifti(tmp_path / "raw" / f"p{n}.nii.gz", img, oblique_affine())
        write_nifti(tmp_path / "raw" / f"p{n}_gt.nii.gz", lab.astype(np.uint8), oblique_affine())
    assert main(["import", str(tmp_path / "raw"), str(tmp_path / "out"), "--label-suffix", "_gt"]) == 0
    assert "2 labelled, 0 unlabelled" in capsys.readouterr().out
    dom = Domain(tmp_path / "out")
    assert dom.cases == ["p1", "p2"] and dom.labelled_cases == ["p1", "p2"]  # no label map imported as an image


# -- 4. one bad volume among several ---------------------------------------------------------------------


def test_a_corrupt_volume_does_not_lose_the_others(tiny_run, vols, tmp_path, capsys):
    (vols / "broken.nii.gz").write_bytes(b"not a nifti at all")
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_run), str(vols), "--out", str(out)]) == 2
    err = _err(capsys)
    assert "1 of 3 input(s) could not be predicted" in err and "failures.csv" in err
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case000.nii.gz", "case001.nii.gz"]
    rows = list(csv.DictReader((out / "failures.csv").read_text(encoding="utf-8").splitlines()))
    assert [r["case"] for r in rows] == ["broken"] and "broken.nii.gz" in rows[0]["reason"]
    assert [r["case"] for r in csv.DictReader((out / "qc.csv").read_text(encoding="utf-8").splitlines())] == ["case000", "case001"]
    # --strict stops at the first bad input and writes nothing
    assert main(["predict", str(tiny_run), str(vols), "--out", str(tmp_path / "strict"), "--strict"]) == 2
    assert "broken.nii.gz" in _err(capsys) and not (tmp_path / "strict").exists()


# -- 5. values outside their range -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("train.steps=-5", "train.steps"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.lr=-1", "train.lr"),
        ("data.preprocess.target_spacing=0", "target_spacing"),
        ("augment.rotate_deg=400", "augment.rotate_deg"),
    ],
)
def test_config_values_outside_their_range_are_refused(phantom, tmp_path, capsys, setting, key):
    assert main(["train", "-m", "source-only", "-s", str(phantom["bssfp"]), "-o", str(tmp_path / "r"), "--set", setting]) == 2
    err = _err(capsys)
    assert key in err and "outside its range" in err
    assert not (tmp_path / "r").exists()


def test_predict_batch_size_zero_is_a_usage_error(tiny_run, vols, tmp_path, capsys):
    assert main(["predict", str(tiny_run), str(vols), "--out", str(tmp_path / "o"), "--batch-size", "0"]) == 2
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("spacing", [1e5, 1e-4])
def test_absurd_voxel_sizes_are_refused_at_import_and_predict(tiny_run, tmp_path, capsys, spacing):
    img, _ = toy_case()
    write_nifti(tmp_path / "raw" / "x.nii.gz", img, np.diag([spacing, spacing, 8.0, 1.0]))
    assert main(["import", str(tmp_path / "raw"), str(tmp_path / "dom")]) == 2
    assert "voxel size" in _err(capsys) and not (tmp_path / "dom").exists()
    assert main(["predict", str(tiny_run), str(tmp_path / "raw" / "x.nii.gz"), "--out", str(tmp_path / "p")]) == 2
    assert "outside 0.05-50 mm" in _err(capsys) and not (tmp_path / "p").exists()


# -- 6. operating-system errors ------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_error_line(tiny_run, vols, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["predict", str(tiny_run), str(vols), "--out", str(ro / "out")]) == 2
        err = _err(capsys)
        assert "error:" in err and str(ro) in err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_os_errors_become_one_error_line(tiny_run, vols, tmp_path, capsys, monkeypatch):
    """A full disk (ENOSPC) while writing a mask: one line naming the path, no traceback, nothing left behind."""
    import errno

    import segshift.inference.predict_files as pf

    def full(dest, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(dest))

    monkeypatch.setattr(pf, "_write_mask", full)
    assert main(["predict", str(tiny_run), str(vols / "case000.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    err = _err(capsys)
    assert "No space left on device" in err and "case000.nii.gz" in err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))


# -- 7. the run's files are covered by its checkpoint ---------------------------------------------------------


@pytest.mark.parametrize("name", ["preprocess.json", "config.yaml"])
def test_an_edited_run_file_is_refused(tiny_run, vols, tmp_path, capsys, name):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    text = (run / name).read_text()
    edited = text.replace("0.5", "0.7", 1) if name == "preprocess.json" else text.replace("seed: 0", "seed: 5")
    assert edited != text
    (run / name).write_text(edited)
    assert main(["predict", str(run), str(vols), "--out", str(tmp_path / "o")]) == 2
    assert f"{name}: differs from the copy recorded in the checkpoint" in _err(capsys)
    assert not (tmp_path / "o").exists()


# -- 8. minor ----------------------------------------------------------------------------------------------


def test_a_duplicate_case_is_refused_by_check_as_by_predict(phantom, tmp_path, capsys):
    dom = tmp_path / "dom"
    shutil.copytree(phantom["lge"], dom)
    nib.save(nib.load(str(dom / "images" / "case000.nii.gz")), str(dom / "images" / "case000.nii"))
    assert main(["check", str(dom)]) == 2
    assert "a second file of case 'case000'" in _err(capsys)


def test_target_equal_to_source_warns(phantom, tmp_path, capsys):
    sets = ["train.steps=1", "train.eval_every=1", *FAST]
    assert main(train_argv("adabn", phantom["bssfp"], tmp_path / "r", target=phantom["bssfp"], sets=sets)) == 0
    assert "warning: the target" in capsys.readouterr().err


# -- 9. a label whose affine differs from its image's on the same voxel grid ------------------------------------


def test_label_geometry_image_takes_the_label_onto_the_image_grid(tmp_path, capsys):
    img, lab = toy_case(shape=(40, 48, 6))
    spacing = (0.729, 0.729, 5.0)
    write_nifti(tmp_path / "raw" / "images" / "c1.nii.gz", img, oblique_affine(spacing=spacing, angle_deg=25.0))
    write_nifti(tmp_path / "raw" / "labels" / "c1.nii.gz", lab.astype(np.uint8), np.diag([*spacing, 1.0]))
    args = [
        "import",
        str(tmp_path / "raw"),
        str(tmp_path / "dom"),
        "--images",
        "images",
        "--labels",
        "labels",
        "--label-pattern",
        "(?P<case>.+)",
    ]
    assert main(args) == 2
    err = _err(capsys)
    assert "geometry differs" in err and "--label-geometry image" in err and not (tmp_path / "dom").exists()
    assert main(args + ["--label-geometry", "image"]) == 0
    assert "c1.nii.gz: affine differs" in capsys.readouterr().out
    im, lb = Domain(tmp_path / "dom").load("c1")
    np.testing.assert_array_equal(lb.array, lab)  # voxel for voxel
    np.testing.assert_allclose(lb.affine, im.affine)
    assert any("--label-geometry image" in n for n in Domain(tmp_path / "dom").spec.provenance["notes"])
    # a label on another grid (other voxel sizes) is still refused, flag or not
    write_nifti(tmp_path / "raw" / "labels" / "c1.nii.gz", lab.astype(np.uint8), np.diag([1.0, 1.0, 5.0, 1.0]))
    assert main(args + ["--label-geometry", "image", "--overwrite"]) == 2
    assert "geometry differs" in _err(capsys)


# -- 2. resume from any working directory -------------------------------------------------------------------------


@pytest.mark.slow  # ~21 s; make test keeps test_trainer's resume-equals-uninterrupted
def test_resume_after_kill_9_with_relative_paths_from_another_folder(phantom, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(phantom["bssfp"], work / "src")
    sets = [a for s in FAST + ["train.steps=40", "train.checkpoint_every=10", "train.eval_every=20"] for a in ("--set", s)]
    cmd = [sys.executable, "-m", "segshift.cli.main", "train", "-m", "source-only", "-s", "src", "-o", "run", "--no-progress", *sets]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = work / "run" / "checkpoints" / "last" / "state.json"
    try:
        import time

        t0 = time.time()
        while not last.is_file() and proc.poll() is None and time.time() - t0 < 120:
            time.sleep(0.2)
    finally:
        proc.kill()  # SIGKILL: no cleanup
        proc.wait()
    assert last.is_file(), proc.stderr.read().decode()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segshift.cli.main",
            "train",
            "--resume",
            "-m",
            "source-only",
            "-o",
            str(Path("..") / "work" / "run"),
            "--no-progress",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    assert done.returncode == 0, done.stderr
    assert (work / "run" / "summary.json").is_file()
    assert read_volume(Domain(work / "src").image_path("case000")).array.size > 0


def _train_args(src: Path, run: Path, *extra: str) -> list[str]:
    return train_argv("source-only", src, run, *extra, sets=FAST + ["train.steps=2", "train.eval_every=2", "train.checkpoint_every=1"])


def test_resume_finds_a_moved_domain_only_where_told_and_only_if_it_is_the_same(phantom, tmp_path, capsys):
    shutil.copytree(phantom["bssfp"], tmp_path / "a" / "src")
    run = tmp_path / "run"
    assert main(_train_args(tmp_path / "a" / "src", run, "--stop-after", "1")) == 0
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "src").rename(tmp_path / "b" / "moved")
    resume = ["train", "--resume", "-m", "source-only", "-o", str(run), "--no-progress"]
    before = _digest(run)
    assert main(resume) == 2
    err = _err(capsys)
    assert "gone" in err and "--source" in err and str(tmp_path / "a" / "src") in err
    assert _digest(run) == before
    # a different domain (one case fewer) at the new place is refused, with what changed
    shutil.copytree(tmp_path / "b" / "moved", tmp_path / "b" / "other")
    for p in (tmp_path / "b" / "other").rglob("case001.nii*"):
        p.unlink()
    assert main(resume + ["-s", str(tmp_path / "b" / "other")]) == 2
    err = _err(capsys)
    assert "not the domain this run started with" in err and "removed: case001" in err
    assert _digest(run) == before
    # the same domain, moved: resumes, and run.json records where it is now
    assert main(resume + ["-s", str(tmp_path / "b" / "moved")]) == 0
    info = __import__("json").loads((run / "run.json").read_text())
    assert info["sources"] == [str((tmp_path / "b" / "moved").resolve())]
    assert list(info["plan"]["train"]) == info["sources"] and info["moved"]
    assert (run / "summary.json").is_file()


def test_resume_refuses_a_domain_changed_in_place(phantom, tmp_path, capsys):
    shutil.copytree(phantom["bssfp"], tmp_path / "src")
    run = tmp_path / "run"
    assert main(_train_args(tmp_path / "src", run, "--stop-after", "1")) == 0
    img = Domain(tmp_path / "src").image_path("case002")
    shutil.copy(Domain(tmp_path / "src").image_path("case000"), img)  # other content: another size
    assert main(["train", "--resume", "-m", "source-only", "-o", str(run), "--no-progress"]) == 2
    assert "changed (file name or size): case002" in _err(capsys)


def test_overwrite_keeps_the_old_run_until_the_new_one_finishes(phantom, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_args(phantom["bssfp"], run)) == 0
    old = _digest(run)
    aside = tmp_path / ".run.replaced"
    # the replacement stops half-way (as a crash would): the finished run is intact aside
    assert main(_train_args(phantom["bssfp"], run, "--overwrite", "--stop-after", "1")) == 0
    assert "kept at" in capsys.readouterr().err
    assert aside.is_dir() and _digest(aside) == old
    assert not (run / "summary.json").exists()
    # a second replacement deletes the unfinished one, never the finished one
    assert main(_train_args(phantom["bssfp"], run, "--overwrite", "--stop-after", "1")) == 0
    assert _digest(aside) == old
    # once the replacement finishes, the old run is deleted
    assert main(["train", "--resume", "-m", "source-only", "-o", str(run), "--no-progress"]) == 0
    assert (run / "summary.json").is_file() and not aside.exists()


# -- 10. interop: nnU-Net datasets, exports, DICOM SEG ----------------------------------------------------


def test_interop_bad_inputs_are_one_line_and_write_nothing(tiny_run, phantom, vols, tmp_path, capsys):
    raw = tmp_path / "Dataset005_Two"
    img, lab = toy_case()
    for ch in (0, 1):
        write_nifti(raw / "imagesTr" / f"c1_{ch:04d}.nii.gz", img, oblique_affine())
    write_nifti(raw / "labelsTr" / "c1.nii.gz", lab, oblique_affine())
    (raw / "dataset.json").write_text(
        '{"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "LV": 1, '
        '"MYO": 2, "RV": 3}, "numTraining": 1, "file_ending": ".nii.gz"}'
    )
    before = _digest(raw), _digest(tiny_run)
    rows = [
        (["import", str(raw), str(tmp_path / "o1"), "--preset", "nnunet"], f"{raw / 'dataset.json'}: declares 2 channels"),
        (["export", "nnunet", str(phantom["bssfp"]), str(tmp_path / "o2"), "--id", "0", "--name", "X"], "between 1 and 999"),
        (["export", str(tiny_run), str(tmp_path / "o3")], "needs --format onnx or --format torchscript"),
        (["export", str(tiny_run), "--format", "onnx", str(tiny_run)], "is the input"),
        (
            ["predict", str(tiny_run), str(vols), "--out", str(tmp_path / "o4"), "--format", "dicom-seg"],
            "--format dicom-seg needs DICOM series folders",
        ),
    ]
    for args, message in rows:
        assert main(args) == 2, args
        err = _err(capsys)
        assert message in err and err.startswith("error: ") and err.count("\n") == 1, (args, err)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))
    assert (_digest(raw), _digest(tiny_run)) == before
