"""Bad input around ``segshift predict``, one test per class: the exit status, the message, the rows of failures.csv,
and what must and must not exist afterwards. Mechanisms are real (files, links, a CPU-only install) throughout."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from segshift.cli.main import main
from segshift.data.domain import Domain
from segshift.data.volume import MAX_VOXELS, write_nifti
from segshift.inference.tta import TTAConfig
from tests.cli import test_bad_inputs as first_round
from tests.cli.test_bad_inputs import _digest, _err
from tests.conftest import FAST, oblique_affine, toy_case, train_argv

tiny_run, vols = first_round.tiny_run, first_round.vols  # its fixtures, used here too


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


@pytest.fixture(scope="module")
def unfinished_run(phantom, tmp_path_factory) -> Path:
    """A run stopped at step 1 of 2 (validated at step 1, so it has a best checkpoint)."""
    run = tmp_path_factory.mktemp("unfinished") / "run"
    sets = ["train.steps=2", "train.eval_every=1", "train.checkpoint_every=1", *FAST]
    assert main(train_argv("source-only", phantom["bssfp"], run, "--stop-after", "1", sets=sets)) == 0
    assert not (run / "summary.json").exists()
    return run


# -- 5. an unfinished run is used with a warning, and the export records how far it got ---------------------------


def test_an_unfinished_run_is_used_with_one_warning_line(unfinished_run, tiny_run, phantom, vols, tmp_path, capsys):
    capsys.readouterr()
    expected = f"warning: {unfinished_run} has not finished training (stopped at step 1 of 2;"
    commands = {
        "predict": ["predict", str(unfinished_run), str(vols), "--out", str(tmp_path / "pred")],
        "export": ["export", str(unfinished_run), "--format", "torchscript", str(tmp_path / "exp")],
        "test": ["test", str(unfinished_run), str(phantom["lge"]), "--out", str(tmp_path / "test"), "--cases", "case000"],
    }
    for name, args in commands.items():
        assert main(args) == 0, name
        err = _err(capsys)
        warnings = [line for line in err.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and warnings[0].startswith(expected), (name, err)
        assert f"segshift train --resume -m source-only -o {unfinished_run}" in warnings[0] and "best checkpoint, of step 1" in warnings[0]
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert (manifest["step"], manifest["steps_done"], manifest["steps_total"], manifest["finished"]) == (1, 1, 2, False)
    # a finished run: no warning, and the manifest says it finished
    assert main(["export", str(tiny_run), "--format", "torchscript", str(tmp_path / "done")]) == 0
    assert "warning" not in _err(capsys)
    manifest = json.loads((tmp_path / "done" / "manifest.json").read_text())
    assert (manifest["step"], manifest["steps_done"], manifest["steps_total"], manifest["finished"]) == (2, 2, 2, True)


# -- 6. TENT's settings without --tta tent ----------------------------------------------------------------------------


def test_tta_settings_without_tent_are_refused(tiny_run, phantom, vols, tmp_path, capsys):
    rows = [
        (["predict", str(tiny_run), str(vols), "--out", str(tmp_path / "o")], ["--tta-steps", "40", "--tta-lr", "0.005"]),
        (["predict", str(tiny_run), str(vols), "--out", str(tmp_path / "o"), "--tta", "flip"], ["--tta-alpha", "0.3"]),
        (["test", str(tiny_run), str(phantom["lge"]), "--out", str(tmp_path / "o")], ["--tta-steps", "10"]),  # the default, said
    ]
    for args, tent in rows:
        assert main(args + tent) == 2, tent
        err = _err(capsys)
        flags = [a for a in tent if a.startswith("--tta-")]
        assert err.startswith(f"error: {', '.join(flags)} set TENT and do nothing with --tta ") and "add --tta tent" in err, err
        assert err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    # with --tta tent they apply; unset, they take TENT's defaults
    assert TTAConfig.from_options("tent", 40, 0.005) == TTAConfig("tent", 40, 0.005, 0.5)
    assert TTAConfig.from_options("none") == TTAConfig()


# -- 7. a broken symbolic link is named, never skipped -----------------------------------------------------------------


def test_a_broken_symlink_is_a_failure_in_predict_check_import_and_train(tiny_run, phantom, vols, tmp_path, capsys):
    (vols / "gone.nii.gz").symlink_to(tmp_path / "moved_away.nii.gz")
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_run), str(vols), "--out", str(out)]) == 2
    err = _err(capsys)
    assert "1 of 3 input(s) could not be predicted" in err and "failures.csv" in err
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case000.nii.gz", "case001.nii.gz"]
    (row,) = _rows(out / "failures.csv")
    assert row["case"] == "gone" and row["input"] == str(vols / "gone.nii.gz")
    assert "is a broken symbolic link: its target" in row["reason"] and "moved_away.nii.gz does not exist" in row["reason"]
    # check, train: the domain folder is refused, naming the link; train writes no run folder
    dom = tmp_path / "dom"
    shutil.copytree(phantom["bssfp"], dom)
    link = dom / "images" / "case010.nii.gz"
    link.symlink_to(tmp_path / "nowhere.nii.gz")
    before = _digest(dom)
    for args in (["check", str(dom)], train_argv("source-only", dom, tmp_path / "run", sets=[*FAST, "train.steps=1"])):
        assert main(args) == 2, args
        err = _err(capsys)
        assert err.startswith(f"error: {link}: is a broken symbolic link") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))
    assert _digest(dom) == before and link.is_symlink()
    # import: refused by name, nothing written
    raw = tmp_path / "raw"
    img, lab = toy_case()
    write_nifti(raw / "p1.nii.gz", img, oblique_affine())
    write_nifti(raw / "p1_gt.nii.gz", lab.astype(np.uint8), oblique_affine())
    (raw / "p2.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    assert main(["import", str(raw), str(tmp_path / "imported"), "--label-suffix", "_gt"]) == 2
    assert _err(capsys).startswith(f"error: {raw / 'p2.nii.gz'}: is a broken symbolic link")
    assert not (tmp_path / "imported").exists()


# -- 8. export nnunet checks the domain first ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["nan", "undeclared label"])
def test_export_nnunet_refuses_an_invalid_domain(phantom, tmp_path, capsys, fault):
    dom = tmp_path / "dom"
    shutil.copytree(phantom["lge"], dom)
    d = Domain(dom)
    img, lab = d.load("case003")
    if fault == "nan":
        bad, arr = d.image_path("case003"), img.array.astype(np.float32)
        arr[3, 4, 0] = np.nan
        message = "contains 1 NaN/Inf intensities"
    else:
        bad, arr = d.label_path("case003"), lab.array.copy()
        arr[0, 0, 0] = 7
        message = "label ids [7] are not declared in domain.json labels"
    bad.unlink()
    write_nifti(bad, arr, img.affine)
    assert main(["export", "nnunet", str(dom), str(tmp_path / "raw"), "--id", "31", "--name", "X"]) == 2
    err = _err(capsys)
    assert err.startswith(f"error: {bad}: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "raw" / "Dataset031_X").exists() and not list((tmp_path / "raw").glob(".*"))


# -- 11. a device this machine lacks -------------------------------------------------------------------------------------


def test_a_device_this_machine_lacks_is_one_error_line(tiny_run, phantom, vols, tmp_path, capsys):
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    here = ", ".join(["cpu", *(f"cuda:{i}" for i in range(n_gpus))])
    missing = "cuda" if n_gpus == 0 else f"cuda:{n_gpus}"
    for device in (missing, "tpu9"):
        for args in (
            ["predict", str(tiny_run), str(vols), "--out", str(tmp_path / "o"), "--device", device],
            train_argv("source-only", phantom["bssfp"], tmp_path / "run", "--device", device, sets=[*FAST, "train.steps=1"]),
        ):
            assert main(args) == 2, args
            err = _err(capsys)
            assert err.startswith(f"error: --device {device}") and f"devices here: {here}" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()


# -- 13. a header that claims an absurd size ----------------------------------------------------------------------------------


def test_a_header_claiming_too_many_voxels_is_a_listed_failure(tiny_run, vols, tmp_path, capsys):
    """The header claims 30000 x 30000 x 1000 float32 voxels over 32 bytes of data: refused from the header alone,
    where reading the data would need 3.6 TB."""
    small = tmp_path / "small.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.diag([1.5, 1.5, 8.0, 1.0])), str(small))
    header = bytearray(small.read_bytes())
    struct.pack_into("<8h", header, 40, 3, 30000, 30000, 1000, 1, 1, 1, 1)  # dim[0..7] of the NIfTI-1 header
    (vols / "huge.nii.gz").write_bytes(gzip.compress(bytes(header)))
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_run), str(vols), "--out", str(out)]) == 2
    assert "1 of 3 input(s) could not be predicted" in _err(capsys)
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case000.nii.gz", "case001.nii.gz"]
    (row,) = _rows(out / "failures.csv")
    assert row["case"] == "huge"
    assert f"has 900000000000 voxels (shape (30000, 30000, 1000)), more than the {MAX_VOXELS}" in row["reason"]
    assert [r["case"] for r in _rows(out / "qc.csv")] == ["case000", "case001"]


# -- small: an empty --label-suffix ---------------------------------------------------------------------------------------------


def test_an_empty_label_suffix_says_what_to_do(tmp_path, capsys):
    img, lab = toy_case()
    write_nifti(tmp_path / "raw" / "images" / "p1.nii.gz", img, oblique_affine())
    write_nifti(tmp_path / "raw" / "labels" / "p1.nii.gz", lab.astype(np.uint8), oblique_affine())
    base = ["import", str(tmp_path / "raw"), str(tmp_path / "out"), "--images", "images"]
    for extra in ([], ["--labels", "labels"]):
        assert main(base + extra + ["--label-suffix", ""]) == 2
        err = _err(capsys)
        assert err.startswith("error: --label-suffix is empty") and "--labels DIR --label-pattern '(?P<case>.+)'" in err
        assert not (tmp_path / "out").exists()
    assert main(base + ["--labels", "labels", "--label-pattern", "(?P<case>.+)"]) == 0  # what the message says
    assert Domain(tmp_path / "out").labelled_cases == ["p1"]
