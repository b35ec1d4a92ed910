"""Volumes with their geometry, and readers for every supported file format.

A :class:`~segshift.transforms.volume.Volume` (defined with the transforms, which use it
too, and importable from here) is a NumPy array in voxel order ``(i, j, k)`` plus the 4x4
voxel-to-world affine in NIfTI's RAS+ millimetre convention.

Readers (:func:`read_volume`):

* NIfTI ``.nii``/``.nii.gz`` through nibabel. When the affine carries no spacing but the
  header's ``pixdim`` does (the ACDC files: ``sform`` is a unit-scaled matrix while
  ``pixdim`` holds 1.5625 mm), the affine's columns are rescaled to ``pixdim``; the
  orientation and origin are kept. The fix is reported in :attr:`Volume.notes`.
* ``.mha``/``.mhd``/``.nrrd`` and DICOM series folders through SimpleITK (LPS converted to RAS).
* ``.npy``/``.npz``/``.h5``/``.hdf5`` arrays, which carry no geometry: a spacing must be given.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segshift.errors import InputFileError
from segshift.transforms.volume import Volume as Volume  # re-exported: readers return it

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
ARRAY_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + ARRAY_SUFFIXES

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def strip_suffix(name: str) -> str:
    """``'case_1.nii.gz'`` -> ``'case_1'``; names without a known suffix are returned as is."""
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def affine_from_spacing(spacing: Sequence[float]) -> np.ndarray:
    """A diagonal affine for arrays that carry no geometry (NumPy/HDF5)."""
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) == 2:
        spacing = spacing + (1.0,)
    if len(spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ValueError(f"spacing must be 2 or 3 positive numbers, got {spacing}")
    return np.diag(spacing + (1.0,))


def broken_link(path: Path) -> InputFileError | None:
    """The error for ``path`` if it is a symbolic link that leads nowhere (a missing target, or a loop), else ``None``."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except FileNotFoundError:
        why = f"its target {os.readlink(path)} does not exist"
    except OSError as exc:
        why = f"it cannot be followed ({exc.strerror or exc})"
    else:
        return None
    return InputFileError(path, f"is a broken symbolic link: {why}; restore the target or remove the link")


def broken_volume_link(path: Path) -> InputFileError | None:
    """:func:`broken_link` for a link named like an input volume (a volume suffix, or none: a DICOM series folder)."""
    return broken_link(path) if path.name.lower().endswith(VOLUME_SUFFIXES) or "." not in path.name else None


def is_dicom_dir(path: Path) -> bool:
    """True when ``path`` is a folder that holds at least one DICOM file."""
    if not path.is_dir():
        return False
    return any(child.is_file() and _looks_like_dicom(child) for child in sorted(path.iterdir()))


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_volume(
    path: str | Path,
    spacing: Sequence[float] | None = None,
    key: str | None = None,
) -> Volume:
    """Read any supported volume; every failure is an :class:`InputFileError` naming ``path``.

    Args:
        path: a file, or a folder holding one DICOM series.
        spacing: voxel size in mm, required for NumPy/HDF5 arrays (ignored otherwise).
        key: dataset name inside an ``.npz``/HDF5 file (optional when it holds one array).
    """
    path = Path(path)
    if (err := broken_link(path)) is not None:
        raise err
    if not path.exists():
        raise InputFileError(path, "does not exist")
    name = path.name.lower()
    try:
        if path.is_dir():
            vol = _read_dicom_series(path)
        elif name.endswith(NIFTI_SUFFIXES):
            vol = _read_nifti(path)
        elif name.endswith(ITK_SUFFIXES):
            vol = _read_itk_file(path)
        elif name.endswith(ARRAY_SUFFIXES):
            vol = _read_array(path, spacing, key)
        else:
            raise InputFileError(path, f"unsupported file type (supported: {', '.join(VOLUME_SUFFIXES)}, DICOM folders)")
    except InputFileError:
        raise
    except read_errors() as exc:
        raise InputFileError(path, f"cannot be read ({type(exc).__name__}: {exc})") from exc
    vol.path = path
    if vol.array.ndim == 2:
        vol.array = vol.array[:, :, None]
    if vol.array.ndim not in (3, 4):
        raise InputFileError(path, f"expected a 2D, 3D or 4D volume, got shape {vol.array.shape}")
    if not np.all(np.isfinite(vol.affine)) or abs(np.linalg.det(vol.affine[:3, :3])) < 1e-12:
        raise InputFileError(path, "has a singular or non-finite affine")
    return vol


def read_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this file cannot be read" (as opposed to a bug)."""
    import struct

    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    return (EOFError, OSError, zlib.error, struct.error, ValueError, RuntimeError, KeyError, ImageFileError, HeaderDataError)


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    img = nib.load(str(path))
    check_voxel_count(path, img.shape)  # from the header, before any data is read
    array = np.asanyarray(img.dataobj)  # forces decompression: truncated files fail here
    affine = np.asarray(img.affine, dtype=np.float64)
    notes: list[str] = []
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if len(zooms) == 3 and np.all(zooms > 0) and not np.allclose(norms, zooms, rtol=1e-3, atol=1e-4):
        # Affine without spacing (e.g. ACDC: unit-scaled sform, spacing only in pixdim).
        affine = affine.copy()
        affine[:3, :3] = affine[:3, :3] / norms * zooms
        notes.append(
            f"affine column norms {np.round(norms, 4).tolist()} disagreed with pixdim "
            f"{np.round(zooms, 4).tolist()}: affine rescaled to pixdim"
        )
    return Volume(array=np.asarray(array), affine=affine, notes=notes)


def _sitk_to_volume(image) -> Volume:  # noqa: ANN001 - SimpleITK.Image
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)  # (k, j, i) or (t, k, j, i) for vector-free 4D
    dim = image.GetDimension()
    array = np.transpose(array, tuple(range(array.ndim))[::-1])
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = origin
    return Volume(array=array, affine=_LPS_TO_RAS @ affine)


def _read_itk_file(path: Path) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()  # the header only
    check_voxel_count(path, reader.GetSize())
    return _sitk_to_volume(reader.Execute())


def dicom_series_files(path: str | Path) -> list[str]:
    """The files of the one DICOM series in a folder, in the order of the volume's slice axis ``k``
    (GDCM's sort by position, the order :func:`read_volume` stacks them in).
    """
    import SimpleITK as sitk

    path = Path(path)
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise InputFileError(path, "folder holds no DICOM series")
    if len(series) > 1:
        raise InputFileError(path, f"folder holds {len(series)} DICOM series; put each series in its own folder")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))


def _read_dicom_series(path: Path) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(dicom_series_files(path))
    return _sitk_to_volume(reader.Execute())


def _read_array(path: Path, spacing: Sequence[float] | None, key: str | None) -> Volume:
    if spacing is None:
        raise InputFileError(path, "NumPy/HDF5 arrays carry no geometry: give the voxel spacing (e.g. --spacing 1.25,1.25,8)")
    name = path.name.lower()
    if name.endswith(".npy"):
        array = np.load(path, allow_pickle=False)
    elif name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            array = data[_pick_key(path, list(data.keys()), key)]
    else:
        import h5py

        with h5py.File(path, "r") as f:
            keys = [k for k in f if isinstance(f[k], h5py.Dataset)]
            array = f[_pick_key(path, keys, key)][()]
    array = np.asarray(array)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputFileError(path, f"array has non-numeric dtype {array.dtype}")
    try:
        affine = affine_from_spacing(spacing)
    except ValueError as exc:
        raise InputFileError(path, str(exc)) from exc
    return Volume(array=array, affine=affine)


def _pick_key(path: Path, keys: list[str], key: str | None) -> str:
    if key is not None:
        if key not in keys:
            raise InputFileError(path, f"has no array named {key!r} (it has: {', '.join(keys) or 'none'})")
        return key
    if len(keys) != 1:
        raise InputFileError(path, f"holds {len(keys)} arrays ({', '.join(keys)}); choose one with --key")
    return keys[0]


SPACING_RANGE_MM = (0.05, 50.0)
"""Voxel sizes outside this range are refused (a header in metres or microns, a broken pixdim)."""
MAX_VOXELS = 2**30
"""Volumes with more voxels than this (1 Gi) are refused as absurd for a cardiac MR series."""


def check_volume(vol: Volume) -> None:
    """Raise if the volume's voxel sizes lie outside :data:`SPACING_RANGE_MM`, it is absurdly large, or holds NaN/Inf."""
    where = vol.path or Path("<array>")
    lo, hi = SPACING_RANGE_MM
    bad = [float(s) for s in vol.spacing if not (lo <= float(s) <= hi)]
    if bad:
        raise InputFileError(
            where,
            f"voxel size {'x'.join(f'{float(s):.4g}' for s in vol.spacing)} mm is outside "
            f"{lo:g}-{hi:g} mm (a header in other units, or a broken pixdim); fix the header",
        )
    check_voxel_count(where, vol.array.shape)
    check_finite(vol)


def check_voxel_count(path: str | Path, shape: Sequence[int]) -> None:
    """Raise if a volume of ``shape`` (read from a header, or an array's) has more than :data:`MAX_VOXELS` voxels."""
    n = int(np.prod([int(d) for d in shape], dtype=object))
    if n > MAX_VOXELS:
        raise InputFileError(path, f"has {n} voxels (shape {tuple(int(d) for d in shape)}), more than the {MAX_VOXELS} a volume may have")


def check_finite(vol: Volume) -> None:
    """Raise if the volume holds NaN or Inf values."""
    if np.issubdtype(vol.array.dtype, np.floating):
        bad = ~np.isfinite(vol.array)
        if bad.any():
            raise InputFileError(vol.path or Path("<array>"), f"contains {int(bad.sum())} NaN/Inf intensities")


def same_geometry(a: Volume, b: Volume, atol_mm: float = 1e-3) -> bool:
    """True when two 3D volumes share shape and affine (within ``atol_mm``)."""
    return a.array.shape[:3] == b.array.shape[:3] and np.allclose(a.affine, b.affine, atol=atol_mm, rtol=1e-5)


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write a NIfTI file atomically, with the affine stored as both qform and sform."""
    import nibabel as nib

    from segshift.utils.atomic import atomic_path

    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
