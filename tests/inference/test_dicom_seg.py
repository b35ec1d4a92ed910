"""segshift predict --format dicom-seg: a DICOM Segmentation of a DICOM series, read back and compared with the NIfTI mask."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from segshift.cli.main import main
from segshift.data.domain import Domain
from segshift.data.volume import dicom_series_files, read_volume
from tests.data.test_volume import write_dicom_series

hd = pytest.importorskip("highdicom", reason="--format dicom-seg needs highdicom (pip install 'segshift[dicom]')")
pydicom = pytest.importorskip("pydicom")


@pytest.fixture(scope="module")
def series(phantom, tmp_path_factory):
    """A phantom LGE volume as an oblique MR DICOM series (int16, one file per slice)."""
    vol = Domain(phantom["lge"]).load_image("case003")
    arr = np.transpose(np.clip(vol.array * 1000 / max(float(vol.array.max()), 1e-6), 0, 32000), (2, 1, 0))  # (k, j, i)
    direction = sitk.VersorRigid3DTransform((0.05, 0.0, 0.1, 0.99)).GetMatrix()
    folder = tmp_path_factory.mktemp("dicom") / "in" / "lge003"
    write_dicom_series(folder, arr, tuple(float(s) for s in vol.spacing), (5.0, -3.0, 2.0), direction)
    for f in sorted(folder.iterdir()):  # what a scanner writes and SimpleITK does not: the frame of reference, the patient
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.1125.1.97"
        ds.PatientID, ds.PatientName, ds.SeriesNumber = "phantom003", "Phantom^LGE", 7
        ds.save_as(f)
    return folder


def test_dicom_seg_references_the_series_and_equals_the_nifti_mask(trained_run, series, tmp_path):
    assert main(["predict", str(trained_run), str(series.parent), "--out", str(tmp_path / "nii")]) == 0
    assert main(["predict", str(trained_run), str(series.parent), "--out", str(tmp_path / "seg"), "--format", "dicom-seg"]) == 0
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["lge003.dcm", "qc.csv"]
    mask = read_volume(tmp_path / "nii" / "lge003.nii.gz").array  # (i, j, k)
    assert set(np.unique(mask)) == {0, 1, 2, 3}

    files = dicom_series_files(series)
    sources = [pydicom.dcmread(f) for f in files]
    seg = hd.seg.segread(tmp_path / "seg" / "lge003.dcm")
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["LV", "MYO", "RV"]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == ["87878005", "49848007", "53085002"]
    assert [s.TrackingID for s in seg.SegmentSequence] == ["segshift label 1", "segshift label 2", "segshift label 3"]
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "segshift source-only"

    uids = [s.SOPInstanceUID for s in sources]
    labelmap = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    # frame k = the mask's slice k transposed (rows run along j, columns along i); segment numbers = label ids here
    np.testing.assert_array_equal(labelmap, np.transpose(mask, (2, 1, 0)))
    # every frame points at the source instance of its slice
    for frame in seg.PerFrameFunctionalGroupsSequence:
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ref in uids


def test_dicom_seg_needs_a_dicom_series(trained_run, phantom, tmp_path, capsys):
    nifti = Domain(phantom["lge"]).image_path("case000")
    assert main(["predict", str(trained_run), str(nifti), "--out", str(tmp_path / "o"), "--format", "dicom-seg"]) == 2
    err = capsys.readouterr().err
    assert f"{nifti}: --format dicom-seg needs DICOM series folders as input" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    assert main(["predict", str(trained_run), str(nifti), "--out", str(tmp_path / "o"), "--format", "rtstruct"]) == 2
    assert "--format must be one of nifti, dicom-seg" in capsys.readouterr().err
