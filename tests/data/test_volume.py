"""Readers keep geometry exactly, and fail clearly on bad files."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from segshift.data.volume import check_finite, read_volume, strip_suffix, write_nifti
from segshift.errors import InputFileError
from tests.conftest import oblique_affine


def test_nifti_roundtrip_keeps_oblique_affine(tmp_path):
    aff = oblique_affine()
    arr = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    write_nifti(tmp_path / "a.nii.gz", arr, aff)
    vol = read_volume(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    np.testing.assert_allclose(vol.spacing, (1.5, 1.2, 8.0), atol=1e-5)
    assert vol.notes == []


def test_spacing_only_in_pixdim_is_moved_into_the_affine(tmp_path):
    # the ACDC case: sform is a unit-scaled flip, spacing lives only in pixdim
    img = nib.Nifti1Image(np.zeros((4, 5, 3), np.int16), np.diag([-1.0, -1.0, 1.0, 1.0]))
    img.header.set_zooms((1.5625, 1.5625, 10.0))
    img.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)
    img.set_qform(None, code=0)
    nib.save(img, tmp_path / "acdc_like.nii.gz")
    vol = read_volume(tmp_path / "acdc_like.nii.gz")
    np.testing.assert_allclose(vol.spacing, (1.5625, 1.5625, 10.0))
    np.testing.assert_allclose(vol.affine[:3, :3], np.diag([-1.5625, -1.5625, 10.0]))
    assert "pixdim" in vol.notes[0]


def test_itk_lps_converted_to_ras(tmp_path):
    # SimpleITK writes NIfTI in RAS; reading the .mha (LPS) must give the same affine
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((3, 5, 4)).astype(np.float32))
    image.SetSpacing((0.7, 0.9, 5.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    d = sitk.VersorRigid3DTransform((0.2, 0.1, 0.05, 0.97)).GetMatrix()
    image.SetDirection(d)
    sitk.WriteImage(image, str(tmp_path / "x.mha"))
    sitk.WriteImage(image, str(tmp_path / "x.nii.gz"))
    a, b = read_volume(tmp_path / "x.mha"), read_volume(tmp_path / "x.nii.gz")
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    np.testing.assert_allclose(a.array, b.array)
    assert a.shape == (4, 5, 3)


def write_dicom_series(folder, array_kji: np.ndarray, spacing, origin, direction) -> None:
    """Write a tiny DICOM series with SimpleITK (one file per slice)."""
    folder.mkdir(parents=True)
    vol = sitk.GetImageFromArray(array_kji.astype(np.int16))
    vol.SetSpacing(spacing)
    vol.SetOrigin(origin)
    vol.SetDirection(direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    dcm_dir = "\\".join(f"{v:.6f}" for v in direction[0:6:3] + direction[1:6:3][::1])
    series_uid = "1.2.826.0.1.3680043.2.1125.1.99"
    row, col = direction[0::3], direction[1::3]
    for k in range(array_kji.shape[0]):
        sl = vol[:, :, k]
        pos = vol.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.98",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{p:.6f}" for p in pos),
            "0020|0037": "\\".join(
                f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
            ),
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
            "0018|0050": f"{spacing[2]:.6f}",
            "0008|0018": f"{series_uid}.{k + 1}",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    del dcm_dir, row, col


def test_dicom_series_reads_with_geometry(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 1000, (4, 6, 5)).astype(np.int16)  # (k, j, i)
    direction = sitk.VersorRigid3DTransform((0.1, 0.0, 0.2, 0.97)).GetMatrix()
    write_dicom_series(tmp_path / "series", arr, (0.8, 0.8, 6.0), (5.0, -3.0, 2.0), direction)
    vol = read_volume(tmp_path / "series")
    assert vol.shape == (5, 6, 4)
    np.testing.assert_array_equal(vol.array, np.transpose(arr, (2, 1, 0)))
    np.testing.assert_allclose(vol.spacing, (0.8, 0.8, 6.0), atol=1e-4)
    expected = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(direction).reshape(3, 3) @ np.diag([0.8, 0.8, 6.0])
    np.testing.assert_allclose(vol.affine[:3, :3], expected, atol=1e-4)
    np.testing.assert_allclose(vol.affine[:3, 3], [-5.0, 3.0, 2.0], atol=1e-4)


def test_arrays_need_spacing_and_key(tmp_path):
    import h5py

    np.save(tmp_path / "a.npy", np.zeros((4, 4, 2), np.float32))
    with pytest.raises(InputFileError, match="a.npy.*spacing"):
        read_volume(tmp_path / "a.npy")
    vol = read_volume(tmp_path / "a.npy", spacing=(1.25, 1.25, 8))
    np.testing.assert_allclose(vol.affine, np.diag([1.25, 1.25, 8, 1]))
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["image"] = np.ones((3, 3, 2))
        f["label"] = np.zeros((3, 3, 2))
    with pytest.raises(InputFileError, match="b.h5.*2 arrays"):
        read_volume(tmp_path / "b.h5", spacing=(1, 1, 1))
    with pytest.raises(InputFileError, match="no array named 'img'"):
        read_volume(tmp_path / "b.h5", spacing=(1, 1, 1), key="img")
    assert read_volume(tmp_path / "b.h5", spacing=(1, 1, 1), key="image").array.sum() == 18


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"this is not a nifti file at all", "cannot be read"),
        (None, "cannot be read"),  # truncated gzip, filled below
    ],
)
def test_corrupt_files_name_the_file(tmp_path, content, problem):
    path = tmp_path / "broken.nii.gz"
    if content is None:
        write_nifti(path, np.random.default_rng(0).random((30, 30, 10)).astype(np.float32), np.eye(4))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(gzip.compress(content))
    with pytest.raises(InputFileError, match=rf"broken\.nii\.gz: {problem}"):
        read_volume(path)


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputFileError, match="unsupported file type"):
        read_volume(tmp_path / "x.txt")


def test_nan_is_rejected(tmp_path):
    arr = np.zeros((4, 4, 2), np.float32)
    arr[1, 1, 1] = np.nan
    write_nifti(tmp_path / "n.nii.gz", arr, np.eye(4))
    with pytest.raises(InputFileError, match=r"n\.nii\.gz: contains 1 NaN/Inf"):
        check_finite(read_volume(tmp_path / "n.nii.gz"))


def test_strip_suffix():
    assert strip_suffix("patient001_frame01_gt.nii.gz") == "patient001_frame01_gt"
    assert strip_suffix("a.nii") == "a"
    assert strip_suffix("a.h5") == "a"
