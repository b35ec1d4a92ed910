"""segshift import: name rules, label remapping, 4D frames, arrays, DICOM, and every bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from segshift.data.domain import Domain
from segshift.data.importer import ImportConfig, parse_label_map, run_import
from segshift.data.volume import read_volume, write_nifti
from segshift.errors import InputFileError, SegshiftError
from tests.conftest import oblique_affine, toy_case
from tests.data.test_volume import write_dicom_series

AFF = oblique_affine()


def raw_pattern_folder(root, ids=(2, 10, 1), codes=(500, 200, 600)):
    """MS-CMRSeg-like layout: images/image_N, labels/label_N with codes LV/MYO/RV = 500/200/600."""
    for n in ids:
        img, lab = toy_case(seed=n)
        img[0, 0, 0] = 1000 + n  # tag: lets the test check which image went with which case
        raw = np.choose(lab, (0,) + tuple(codes)).astype(np.float64)
        write_nifti(root / "images" / f"image_{n}.nii.gz", img, AFF)
        write_nifti(root / "labels" / f"label_{n}.nii.gz", raw, AFF)


def cfg(**kw) -> ImportConfig:
    base = dict(
        name="dom",
        images=("images",),
        labels="labels",
        image_pattern=r"image_(?P<case>\d+)",
        label_pattern=r"label_(?P<case>\d+)",
        case_template="p{case:0>3}",
        label_map={500: "LV", 200: "MYO", 600: "RV"},
    )
    base.update(kw)
    return ImportConfig(**base)


def test_pattern_rule_pairs_by_name_not_order_and_remaps_codes(tmp_path):
    # lexicographic order of label_10 < label_2 differs from image order: pairing must use names
    raw_pattern_folder(tmp_path / "raw", ids=(2, 10, 1))
    (tmp_path / "raw" / "images" / "notes.nii.gz").write_bytes(b"")  # matches no rule
    report = run_import(tmp_path / "raw", tmp_path / "out", cfg())
    assert report.cases == ["p001", "p002", "p010"]
    assert report.unmatched == ["images/notes.nii.gz"]
    dom = Domain(tmp_path / "out")
    for n in (1, 2, 10):
        img, lab = dom.load(f"p{n:03d}")
        assert img.array[0, 0, 0] == 1000 + n
        _, expected = toy_case(seed=n)
        np.testing.assert_array_equal(lab.array, expected)
        np.testing.assert_allclose(img.affine, AFF, atol=1e-5)
    assert dom.spec.labels == {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    assert dom.spec.provenance["config"]["label_map"] == {"500": "LV", "200": "MYO", "600": "RV"}


def test_suffix_rule_with_labels_beside_images(tmp_path):
    # ACDC's original layout: frame01.nii.gz and frame01_gt.nii.gz in one folder
    for n in (1, 12):
        img, lab = toy_case(seed=n)
        img[0, 0, 0] = 1000 + n
        write_nifti(tmp_path / "raw" / f"patient001_frame{n:02d}.nii.gz", img, AFF)
        write_nifti(tmp_path / "raw" / f"patient001_frame{n:02d}_gt.nii.gz", np.choose(lab, (0, 3, 2, 1)).astype(np.uint8), AFF)
    config = ImportConfig(
        name="acdc_like", images=(".",), labels=".", label_suffix="_gt", label_map={1: "RV", 2: "MYO", 3: "LV"}, require_labels=True
    )
    report = run_import(tmp_path / "raw", tmp_path / "out", config)
    assert report.labelled == ["patient001_frame01", "patient001_frame12"]
    img, lab = Domain(tmp_path / "out").load("patient001_frame12")
    assert img.array[0, 0, 0] == 1012
    np.testing.assert_array_equal(lab.array, toy_case(seed=12)[1])


def test_unlabelled_pool_and_label_names_for_other_anatomy(tmp_path):
    img, lab = toy_case()
    write_nifti(tmp_path / "raw" / "lab" / "liver1.nii.gz", img, AFF)
    write_nifti(tmp_path / "raw" / "lab" / "liver1_seg.nii.gz", (lab > 0).astype(np.uint8) * 7, AFF)
    write_nifti(tmp_path / "raw" / "pool" / "liver9.nii.gz", img, AFF)
    config = ImportConfig(
        name="liver",
        images=("lab",),
        labels="lab",
        unlabelled=("pool",),
        label_suffix="_seg",
        label_names={"background": 0, "liver": 1},
        label_map={7: "liver"},
    )
    report = run_import(tmp_path / "raw", tmp_path / "out", config)
    dom = Domain(tmp_path / "out")
    assert (report.labelled, report.unlabelled) == (["liver1"], ["liver9"])
    assert dom.unlabelled_cases == ["liver9"] and dom.spec.structures == {"liver": 1}
    assert set(np.unique(dom.load_label("liver1").array)) == {0, 1}


def test_4d_cine_reduced_to_frames(tmp_path):
    img, _ = toy_case()
    cine = np.stack([img + t for t in range(5)], axis=-1)
    write_nifti(tmp_path / "raw" / "cine.nii.gz", cine, AFF)
    with pytest.raises(InputFileError, match=r"cine\.nii\.gz: is 4D .* --frames"):
        run_import(tmp_path / "raw", tmp_path / "out", ImportConfig(name="c"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputFileError, match="has 5 frames; frame.*7"):
        run_import(tmp_path / "raw", tmp_path / "out", ImportConfig(name="c", frames=(0, 7)))
    report = run_import(tmp_path / "raw", tmp_path / "out", ImportConfig(name="c", frames=(0, 3)))
    assert report.cases == ["cine_frame00", "cine_frame03"]
    vol = read_volume(tmp_path / "out" / "images" / "cine_frame03.nii.gz")
    np.testing.assert_allclose(vol.array, img + 3, rtol=1e-6)


def test_numpy_and_hdf5_with_spacing(tmp_path):
    import h5py

    img, lab = toy_case()
    (tmp_path / "raw").mkdir()
    np.save(tmp_path / "raw" / "a.npy", img)
    with h5py.File(tmp_path / "raw" / "b.h5", "w") as f:
        f["image"], f["label"] = img, lab
    with pytest.raises(InputFileError, match="spacing"):
        run_import(tmp_path / "raw", tmp_path / "out", ImportConfig(name="arr", key="image"))
    config = ImportConfig(name="arr", spacing=(1.25, 1.25, 8.0), key="image", label_key="label")
    # a.npy has no 'image' key: .npy files ignore keys, .h5 reads image and label from one file
    report = run_import(tmp_path / "raw", tmp_path / "out", config)
    assert report.labelled == ["b"] and report.unlabelled == ["a"]
    dom = Domain(tmp_path / "out")
    np.testing.assert_allclose(dom.load_image("a").spacing, (1.25, 1.25, 8.0))
    np.testing.assert_array_equal(dom.load_label("b").array, lab)


def test_dicom_series_folders_with_nifti_labels(tmp_path):
    import SimpleITK as sitk

    _, lab = toy_case(shape=(12, 10, 3))
    direction = sitk.VersorRigid3DTransform((0.1, 0.0, 0.2, 0.97)).GetMatrix()
    write_dicom_series(
        tmp_path / "raw" / "dicom" / "pat7", (lab.transpose(2, 1, 0) * 100).astype(np.int16), (0.9, 0.9, 6.0), (1.0, 2.0, 3.0), direction
    )
    series = read_volume(tmp_path / "raw" / "dicom" / "pat7")
    write_nifti(tmp_path / "raw" / "labels" / "pat7_manual.nii.gz", lab, series.affine)
    config = ImportConfig(name="d", images=("dicom",), labels="labels", label_suffix="_manual")
    report = run_import(tmp_path / "raw", tmp_path / "out", config)
    assert report.labelled == ["pat7"]
    img, out_lab = Domain(tmp_path / "out").load("pat7")
    np.testing.assert_allclose(img.affine, series.affine, atol=1e-5)
    np.testing.assert_array_equal(img.array, lab * 100)


# ---------------------------------------------------------------- bad input, nothing written
def _no_output(path) -> bool:
    return not path.exists() and not any(p.name.startswith(f".{path.name}.") for p in path.parent.iterdir())


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda raw: write_nifti(raw / "labels" / "label_2.nii.gz", np.full((40, 48, 6), 700.0), AFF),
            r"label_2\.nii\.gz: unknown label code\(s\) \[700\]",
        ),
        (
            lambda raw: write_nifti(raw / "labels" / "label_2.nii.gz", np.zeros((40, 48, 5)), AFF),
            r"label_2\.nii\.gz: geometry differs .*shape",
        ),
        (
            lambda raw: write_nifti(raw / "labels" / "label_2.nii.gz", np.zeros((40, 48, 6)), oblique_affine(angle_deg=40)),
            r"label_2\.nii\.gz: geometry differs .*affine",
        ),
        (
            lambda raw: write_nifti(raw / "images" / "image_2.nii.gz", np.full((40, 48, 6), np.inf, np.float32), AFF),
            r"image_2\.nii\.gz: contains .* NaN/Inf",
        ),
        (lambda raw: (raw / "images" / "image_2.nii.gz").write_bytes(b"\x1f\x8b\x08garbage"), r"image_2\.nii\.gz: cannot be read"),
        (
            lambda raw: write_nifti(raw / "labels" / "label_2.nii.gz", np.full((40, 48, 6), 0.5), AFF),
            r"label_2\.nii\.gz: label map has non-integer",
        ),
        (lambda raw: write_nifti(raw / "labels" / "label_99.nii.gz", np.zeros((40, 48, 6)), AFF), r"no matching image: label_99\.nii\.gz"),
    ],
    ids=["unknown-code", "shape-mismatch", "affine-mismatch", "inf", "corrupt", "non-integer-label", "orphan-label"],
)
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, break_it, message):
    raw = tmp_path / "raw"
    raw_pattern_folder(raw)
    break_it(raw)
    with pytest.raises(SegshiftError, match=message):
        run_import(raw, tmp_path / "out", cfg())
    assert _no_output(tmp_path / "out")


def test_failed_overwrite_keeps_the_old_domain(tmp_path):
    raw = tmp_path / "raw"
    raw_pattern_folder(raw)
    run_import(raw, tmp_path / "out", cfg())
    before = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    with pytest.raises(SegshiftError, match="folder exists"):
        run_import(raw, tmp_path / "out", cfg())
    write_nifti(raw / "labels" / "label_10.nii.gz", np.full((40, 48, 6), 3.0), AFF)
    with pytest.raises(InputFileError, match="unknown label code"):
        run_import(raw, tmp_path / "out", cfg(), overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_empty_folder_and_bad_rules(tmp_path):
    (tmp_path / "raw" / "images").mkdir(parents=True)
    (tmp_path / "raw" / "labels").mkdir()
    with pytest.raises(InputFileError, match="no images found"):
        run_import(tmp_path / "raw", tmp_path / "out", cfg())
    with pytest.raises(SegshiftError, match=r"needs a named group \(\?P<case>"):
        run_import(tmp_path / "raw", tmp_path / "out", cfg(image_pattern=r"image_\d+"))
    with pytest.raises(SegshiftError, match="not a label name"):
        run_import(tmp_path / "raw", tmp_path / "out", cfg(label_map={500: "LVV"}))
    with pytest.raises(InputFileError, match="is not a folder"):
        run_import(tmp_path / "nope", tmp_path / "out", cfg())


def test_require_labels_lists_the_unlabelled_images(tmp_path):
    raw = tmp_path / "raw"
    raw_pattern_folder(raw)
    (raw / "labels" / "label_10.nii.gz").unlink()
    with pytest.raises(SegshiftError, match=r"1 image\(s\) have no label: image_10\.nii\.gz"):
        run_import(raw, tmp_path / "out", dataclasses.replace(cfg(), require_labels=True))
    report = run_import(raw, tmp_path / "out", cfg())
    assert report.unlabelled == ["p010"]


@pytest.mark.parametrize(
    "text, expected",
    [("500=LV,200=MYO,600=RV", {500: "LV", 200: "MYO", 600: "RV"}), ("1=3, 3=1", {1: 3, 3: 1}), ("500.0=LV", {500: "LV"})],
)
def test_parse_label_map(text, expected):
    assert parse_label_map(text) == expected


@pytest.mark.parametrize("text", ["", "500", "x=LV", "1=LV,1=RV"])
def test_parse_label_map_rejects(text):
    with pytest.raises(SegshiftError):
        parse_label_map(text)
