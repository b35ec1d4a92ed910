"""Predict files and folders (NIfTI, DICOM series, ITK formats) into a folder of NIfTI masks.

Each mask is written with the *input's* header when the input is NIfTI (same affine, qform/
sform codes and pixdim, so any viewer overlays it exactly), and with the input's RAS affine
otherwise. ``qc.csv`` holds one quality-control row per case. The output folder is built
under a temporary name and renamed when every input was read and predicted, so a bad input
leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from segshift.data.volume import (
    NIFTI_SUFFIXES,
    VOLUME_SUFFIXES,
    broken_link,
    broken_volume_link,
    check_volume,
    is_dicom_dir,
    read_volume,
    strip_suffix,
    write_nifti,
)
from segshift.errors import InputFileError, SegshiftError
from segshift.inference.predictor import Predictor
from segshift.utils.atomic import atomic_dir, check_disjoint, write_text

OUTPUT_FORMATS = ("nifti", "dicom-seg")
"""Mask formats of ``segshift predict --format``."""


def collect_inputs(path: str | Path) -> list[Path]:
    """The volumes under ``path``: one file, a DICOM series folder, a domain folder (its
    ``images/``), or a folder of volume files and/or DICOM series folders.
    """
    path = Path(path)
    if (err := broken_link(path)) is not None:
        raise err
    if not path.exists():
        raise InputFileError(path, "does not exist")
    if path.is_file() or is_dicom_dir(path):
        return [path]
    if (path / "domain.json").is_file() and (path / "images").is_dir():
        path = path / "images"
    items = [
        p
        for p in sorted(path.iterdir())
        if not p.name.startswith(".")
        and ((p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)) or is_dicom_dir(p) or broken_volume_link(p) is not None)
    ]
    if not items:
        raise InputFileError(path, "holds no volumes to predict (.nii/.nii.gz, .mha/.nrrd, DICOM series folders)")
    return items


def _write_mask(dest: Path, mask: np.ndarray, source: Path, affine: np.ndarray) -> None:
    if source.is_file() and source.name.lower().endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        from segshift.utils.atomic import atomic_path

        src = nib.load(str(source))
        header = src.header.copy()
        header.set_data_dtype(np.uint8)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        header["cal_min"], header["cal_max"] = 0, 0
        if len(header.get_data_shape()) > 3:
            header["dim"][0] = 3
            header["dim"][4:] = 1
        img = nib.Nifti1Image(mask, None, header=header)
        img.set_sform(src.get_sform(), code=int(src.header["sform_code"]))
        img.set_qform(src.get_qform(), code=int(src.header["qform_code"]))
        with atomic_path(dest, suffix=".nii.gz") as tmp:
            nib.save(img, str(tmp))
    else:
        write_nifti(dest, mask, affine)


class PredictionFailures(SegshiftError):
    """Some inputs of a folder could not be predicted; the others were (``failures.csv`` lists the bad ones)."""

    def __init__(self, message: str, rows: list[dict], failures: list[dict]) -> None:
        super().__init__(message)
        self.rows, self.failures = rows, failures


def predict_paths(
    predictor: Predictor,
    inputs: str | Path,
    out: str | Path,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    cases: str | Sequence[str] | None = None,
    strict: bool = False,
    fmt: str = "nifti",
) -> list[dict]:
    """Predict every volume under ``inputs`` (or only ``cases``: ids or a regex) into ``out``; returns the QC rows.

    A bad input among several (unreadable, not 3D, NaN, absurd voxel size) does not stop the
    others: every readable case is predicted, ``out/failures.csv`` lists each bad file with
    its reason, and :class:`PredictionFailures` is raised once ``out`` is in place (the CLI
    exits non-zero with the count). ``strict`` stops at the first bad input, writing nothing;
    so does a single input, or a folder where every input fails.

    ``fmt="dicom-seg"`` writes each mask as a DICOM Segmentation ``<case>.dcm`` referencing its
    source series (:mod:`segshift.inference.dicom_seg`); every input must then be a DICOM series.
    """
    check_disjoint(out, [inputs, predictor.run])  # before reading anything
    items = collect_inputs(inputs)
    names = [it.name if it.is_dir() else strip_suffix(it.name) for it in items]
    if cases is not None:
        from segshift.engine.splits import select

        keep = set(select(names, cases, "cases"))
        items, names = [i for i, n in zip(items, names) if n in keep], [n for n in names if n in keep]
    if fmt not in OUTPUT_FORMATS:
        raise SegshiftError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    if fmt == "dicom-seg":
        from segshift.inference.dicom_seg import require_highdicom

        not_series = [i for i in items if not i.is_dir()]
        if not_series:
            raise InputFileError(
                not_series[0],
                "--format dicom-seg needs DICOM series folders as input (a DICOM SEG references the images it segments); this is not one",
            )
        require_highdicom()
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputFileError(Path(inputs), f"several inputs map to the same case name: {', '.join(dupes)}")
    rows: list[dict] = []
    failures: list[dict] = []
    model = f"{predictor.method.name} [ORACLE: trained with target labels]" if predictor.oracle else predictor.method.name
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for item, case in zip(items, names):
            if progress:
                progress(case)
            try:
                vol = read_volume(item)
                if vol.array.ndim != 3:
                    raise InputFileError(item, f"is {vol.array.ndim}D where 3D is needed (import 4D cine with --frames first)")
                check_volume(vol)
                pred = predictor.predict_volume(vol)
                if fmt == "dicom-seg":
                    from segshift import __version__
                    from segshift.inference.dicom_seg import write_dicom_seg

                    write_dicom_seg(item, pred.mask, predictor.labels, tmp / f"{case}.dcm", predictor.method.name, __version__)
                else:
                    _write_mask(tmp / f"{case}.nii.gz", pred.mask, item, vol.affine)
            except (SegshiftError, OSError) as exc:
                if strict or len(items) == 1:
                    raise
                failures.append({"case": case, "input": str(item), "reason": str(exc).replace("\n", " ")})
                continue
            rows.append(
                {
                    "case": case,
                    "model": model,
                    "input": str(item),
                    "shape": "x".join(map(str, vol.shape)),
                    "spacing_mm": "x".join(f"{s:.4g}" for s in vol.spacing),
                    **pred.qc,
                }
            )
        if not rows:
            raise SegshiftError(
                f"{inputs}: none of the {len(items)} inputs could be predicted: "
                + "; ".join(f["reason"] for f in failures[:3])
                + (" ..." if len(failures) > 3 else "")
            )
        write_text(tmp / "qc.csv", _csv(rows))
        if failures:
            write_text(tmp / "failures.csv", _csv(failures))
    if failures:
        raise PredictionFailures(
            f"{len(failures)} of {len(items)} input(s) could not be predicted (listed with the reason in "
            f"{Path(out) / 'failures.csv'}); the {len(rows)} other mask(s) are in {out}. First: "
            f"{failures[0]['reason']}",
            rows,
            failures,
        )
    return rows


def _csv(rows: list[dict]) -> str:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
