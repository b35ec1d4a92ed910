"""Masks as DICOM Segmentation objects (``segshift predict --format dicom-seg``), with highdicom.

A DICOM SEG references the images it segments, so it is written only for a DICOM series input:
one binary segment per foreground label of the run (segment label = the label's name from the
run's labels, i.e. the source domain's ``domain.json``), one frame per source slice that holds
the segment, each frame referencing its source instance, and the SEG in the source's study
and frame of reference with a new series. Segment numbers are 1..N in label-id order, and each
segment's tracking id records its segshift label id (``segshift label 2``), so label sets with
gaps survive.

Codes: the canonical cardiac labels get SNOMED CT property types (LV: Left ventricle
87878005, MYO: Left ventricle myocardium 49848007, RV: Right ventricle 53085002; category
Anatomical structure); any other label is category Anatomical structure, type Tissue
(85756007), with its name as the segment label. The algorithm is recorded as automatic, named
after the method, family Artificial Intelligence (DCM 123110).

Frame ``k`` of the SEG is the mask's slice ``k`` transposed: segshift arrays are ``(i, j, k)``
with ``i`` along a DICOM row (columns) and ``j`` down the rows, and ``k`` follows the files in
:func:`~segshift.data.volume.dicom_series_files` order, the order the volume was read in.

Reference: Herz et al., "highdicom: a Python library for standardized encoding of image
annotations and machine learning model outputs in pathology and radiology", J Digit Imaging 2022.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from segshift.data.volume import dicom_series_files
from segshift.errors import InputFileError, SegshiftError
from segshift.utils.atomic import atomic_path

CARDIAC_CODES = {"LV": "LeftVentricle", "MYO": "LeftVentricleMyocardium", "RV": "RightVentricle"}
"""Canonical cardiac label -> name of its SNOMED CT code in ``pydicom.sr.codedict.codes.SCT``."""


def require_highdicom() -> None:
    """Raise a clear error when highdicom is missing."""
    import importlib.util

    if importlib.util.find_spec("highdicom") is None:
        raise SegshiftError("--format dicom-seg needs highdicom: pip install 'segshift[dicom]'")


def segment_descriptions(labels: Mapping[str, int], method: str, version: str) -> tuple[list, dict[int, int]]:
    """Highdicom segment descriptions of the foreground labels, and label id -> segment number."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name=f"segshift {method}", version=version, family=codes.DCM.ArtificialIntelligence)
    out, numbers = [], {}
    for number, (name, label_id) in enumerate(sorted(((k, v) for k, v in labels.items() if v != 0), key=lambda kv: kv[1]), 1):
        prop = getattr(codes.SCT, CARDIAC_CODES[name]) if name in CARDIAC_CODES else codes.SCT.Tissue
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=prop,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=hd.UID(),
                tracking_id=f"segshift label {label_id}",
            )
        )
        numbers[label_id] = number
    return out, numbers


def write_dicom_seg(
    series: str | Path, mask: np.ndarray, labels: Mapping[str, int], dest: str | Path, method: str, version: str = ""
) -> None:
    """Write ``mask`` (``(i, j, k)``, label ids of ``labels``) of the DICOM series folder ``series`` as a DICOM SEG.

    Raises:
        InputFileError: the series' files cannot be read, or do not match the mask's shape.
    """
    import highdicom as hd
    import pydicom

    series = Path(series)
    files = dicom_series_files(series)
    try:
        sources = [pydicom.dcmread(f) for f in files]
    except Exception as exc:  # pydicom raises several types for a damaged file
        raise InputFileError(series, f"a DICOM file cannot be read for the SEG ({type(exc).__name__}: {exc})") from exc
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    if mask.shape != (cols, rows, len(sources)):
        raise InputFileError(series, f"the mask {mask.shape} does not match the series ({len(sources)} files of {rows}x{cols})")
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID") if k not in sources[0]]
    if missing:
        raise InputFileError(series, f"the DICOM files lack {', '.join(missing)}, which a DICOM SEG must reference")
    descriptions, numbers = segment_descriptions(labels, method, version)
    lut = np.zeros(int(max(labels.values())) + 1, dtype=np.uint8)
    for label_id, number in numbers.items():
        lut[label_id] = number
    frames = np.ascontiguousarray(np.transpose(lut[mask], (2, 1, 0)))  # (k, rows=j, cols=i), segment numbers
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=int(getattr(sources[0], "SeriesNumber", None) or 0) + 1000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="segshift",
            manufacturer_model_name=method,
            software_versions=version or "segshift",
            device_serial_number="none",
            series_description=f"segshift {method} segmentation",
        )
    except (ValueError, AttributeError, TypeError) as exc:  # highdicom's checks of the source images
        raise InputFileError(series, f"cannot be referenced by a DICOM SEG ({exc})") from exc
    with atomic_path(dest, suffix=".dcm") as tmp:
        seg.save_as(str(tmp))
