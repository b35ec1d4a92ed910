"""Prediction: exact input geometry, held-out accuracy in mm space, QC rows, bad input."""

from __future__ import annotations

import csv
import shutil

import nibabel as nib
import numpy as np

from segshift.cli.main import main
from segshift.data.domain import Domain
from segshift.data.volume import Volume, read_volume, write_nifti
from segshift.inference.predict_files import predict_paths
from segshift.inference.predictor import Predictor
from segshift.metrics import evaluate_folders
from tests.conftest import oblique_affine


def test_heldout_cases_segmented_in_native_space(trained_run, phantom, tmp_path):
    dom = Domain(phantom["bssfp"])
    heldout = tmp_path / "in"
    heldout.mkdir()
    for c in ("case008", "case009"):
        shutil.copy(dom.image_path(c), heldout / f"{c}.nii.gz")
    assert main(["predict", str(trained_run), str(heldout), "--out", str(tmp_path / "pred")]) == 0
    result = evaluate_folders(tmp_path / "pred", phantom["bssfp"], cases=["case008", "case009"])
    # Dice in the native grid, after the inverse resampling (validation in crop space said > 0.8)
    assert result.summary["overall"]["dice"]["mean"] > 0.8, result.summary["overall"]
    rows = list(csv.DictReader((tmp_path / "pred" / "qc.csv").read_text(encoding="utf-8").splitlines()))
    assert [r["case"] for r in rows] == ["case008", "case009"]
    assert all(0 <= float(r["mean_entropy"]) <= 1 and float(r["LV_ml"]) > 10 for r in rows)


def test_mask_keeps_oblique_geometry_and_header(trained_run, phantom, tmp_path):
    img = Domain(phantom["bssfp"]).load_image("case008")
    aff = oblique_affine(spacing=img.spacing, angle_deg=33.0, origin=(12.0, -40.0, 7.5))
    write_nifti(tmp_path / "obl.nii.gz", img.array, aff)
    rows = predict_paths(Predictor(trained_run), tmp_path / "obl.nii.gz", tmp_path / "out")
    src, out = nib.load(tmp_path / "obl.nii.gz"), nib.load(tmp_path / "out" / "obl.nii.gz")
    assert out.shape == src.shape and out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
    np.testing.assert_allclose(out.header.get_zooms(), src.header.get_zooms())
    assert (out.header["qform_code"], out.header["sform_code"]) == (src.header["qform_code"], src.header["sform_code"])
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2, 3} and rows[0]["MYO_ml"] > 0


def _off_centre(phantom):
    img = Domain(phantom["bssfp"]).load_image("case009")
    lab = Domain(phantom["bssfp"]).load_label("case009").array
    shift = (40, -30)  # pixels at 1.4 mm: the heart moves ~70 mm off the image centre
    return Volume(np.roll(img.array, shift, axis=(0, 1)), img.affine), np.roll(lab, shift, axis=(0, 1))


def _dice(mask, ref):
    return [2 * ((mask == k) & (ref == k)).sum() / ((mask == k).sum() + (ref == k).sum()) for k in (1, 2, 3)]


def test_off_centre_heart_segmented_in_the_image_centred_crop(trained_run, phantom):
    """The crop policy of training (image centre, jittered by augmentation) is the one of prediction: one pass."""
    moved, ref = _off_centre(phantom)
    pred = Predictor(trained_run).predict_volume(moved)
    dice = _dice(pred.mask, ref)
    assert pred.qc["center_source"] == "image" and np.mean(dice) > 0.7, dice


def test_legacy_label_centred_run_relocates_on_its_prediction(trained_run, phantom, tmp_path):
    """Runs trained on label-centred crops (legacy crop_center: label) re-crop around the predicted heart."""
    import json

    legacy = tmp_path / "legacy"
    shutil.copytree(trained_run, legacy)
    doc = json.loads((legacy / "preprocess.json").read_text())
    doc["config"]["crop_center"] = "label"
    (legacy / "preprocess.json").write_text(json.dumps(doc))
    state = json.loads((legacy / "checkpoints" / "best" / "state.json").read_text())  # as a legacy run recorded it
    state["preprocess"] = doc
    (legacy / "checkpoints" / "best" / "state.json").write_text(json.dumps(state))
    moved, ref = _off_centre(phantom)
    pred = Predictor(legacy).predict_volume(moved)
    assert pred.qc["center_source"] == "localiser" and np.mean(_dice(pred.mask, ref)) > 0.7


def test_bad_inputs_fail_clearly_and_write_nothing(trained_run, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write_nifti(tmp_path / "in" / "a.nii.gz", np.zeros((40, 40, 3), np.float32), np.eye(4))
    (tmp_path / "in" / "b.nii.gz").write_bytes(b"\x1f\x8b\x08broken")
    assert main(["predict", str(trained_run), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--strict"]) == 2
    assert "b.nii.gz: cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # without --strict the good case is predicted and the bad one listed (tests/cli/test_bad_inputs.py has the rest)
    assert main(["predict", str(trained_run), str(tmp_path / "in"), "--out", str(tmp_path / "part")]) == 2
    assert "1 of 2 input(s) could not be predicted" in capsys.readouterr().err
    assert (tmp_path / "part" / "a.nii.gz").is_file() and "b.nii.gz: cannot be read" in (tmp_path / "part" / "failures.csv").read_text()
    (tmp_path / "in" / "b.nii.gz").unlink()
    write_nifti(tmp_path / "in" / "c.nii.gz", np.zeros((40, 40, 3, 2), np.float32), np.eye(4))
    assert main(["predict", str(trained_run), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--strict"]) == 2
    assert "c.nii.gz: is 4D where 3D is needed" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 2
    assert "is not a segshift run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(trained_run), str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "holds no volumes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_truncated_checkpoint_is_a_clear_error(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("cache"))
    w = run / "checkpoints" / "best" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    assert main(["predict", str(run), str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "weights.safetensors: does not match the hash" in capsys.readouterr().err


def test_dicom_series_input(trained_run, phantom, tmp_path):
    import SimpleITK as sitk

    from tests.data.test_volume import write_dicom_series

    img = Domain(phantom["bssfp"]).load_image("case008")
    arr = np.clip(img.array, 0, 32000).astype(np.int16)
    write_dicom_series(
        tmp_path / "dcm" / "series1",
        arr.transpose(2, 1, 0),
        img.spacing,
        (0.0, 0.0, 0.0),
        sitk.Image(2, 2, 2, sitk.sitkUInt8).GetDirection(),
    )
    series = read_volume(tmp_path / "dcm" / "series1")
    rows = predict_paths(Predictor(trained_run), tmp_path / "dcm", tmp_path / "out")
    out = nib.load(tmp_path / "out" / "series1.nii.gz")
    assert out.shape == series.shape and rows[0]["case"] == "series1"
    np.testing.assert_allclose(out.affine, series.affine, atol=1e-4)
