"""``segshift import``: turn a raw folder of images (and labels) into a domain folder.

Images are matched to labels by a *name rule*, never by sorted order: each file name (minus
its extension; a DICOM series is named by its folder) is matched against a regular
expression with a named group ``case``; an image and a label belong together when their
``case`` groups are equal. The shorthand ``label_suffix="_gt"`` means
``label_pattern = "(?P<case>.+)_gt"``. Files that match neither rule are listed as unmatched.

Label codes are remapped to the domain's label ids with ``label_map`` (``{500: "LV"}`` or
``{500: 1}``); 0 stays background. A code present in a label file but absent from the map
is an error naming the file and the codes. 4D files (cine) are reduced to chosen frames,
each frame becoming its own case ``<case>_frameNN``.

The domain is built in a temporary folder and renamed into place only when every case was
read, checked and written: an error leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segshift.data.domain import CARDIAC_LABELS, DomainSpec, DomainWriter, to_label_array, validate_labels
from segshift.data.volume import (
    VOLUME_SUFFIXES,
    Volume,
    broken_volume_link,
    check_volume,
    is_dicom_dir,
    read_volume,
    same_geometry,
    strip_suffix,
)
from segshift.errors import InputFileError, SegshiftError
from segshift.utils.atomic import atomic_dir, check_disjoint


@dataclasses.dataclass
class ImportConfig:
    """Everything ``segshift import`` needs to know; presets are instances of it.

    Attributes:
        images: folder(s) of labelled-or-not images, relative to the raw root or absolute.
        labels: folder of label files (may equal an images folder; label files are then
            recognised by ``label_pattern`` and excluded from the images).
        unlabelled: extra folders of images that have no labels (e.g. an unlabelled pool).
        image_pattern: regex with a ``case`` group, matched against the whole file stem.
        label_pattern: regex with a ``case`` group for label files.
        label_suffix: shorthand for ``label_pattern = '(?P<case>.+)' + re.escape(suffix)``.
        case_template: output case id, ``str.format`` of ``case`` (e.g. ``"patient{case:0>2}"``).
        label_names: the domain's label set (name -> id); canonical cardiac by default.
        label_map: raw code -> label name or id. ``None``: raw codes must already be ids.
        frames: frames to keep from 4D images (0-based); ``None``: 4D input is an error.
        spacing: voxel size for NumPy/HDF5 arrays.
        key / label_key: array names inside ``.npz``/HDF5 files; with ``label_key`` the
            label comes from the same file as the image.
        require_labels: every image must have a label (a labelled domain).
        recursive: search the folders recursively.
        ignore_pattern: regex; files whose stem fully matches it are skipped silently and
            counted in a note (an nnU-Net dataset's other channels, ``CASE_0001``).
        source_notes: notes from the preset that built this configuration (what it read and
            chose), placed first in the report and in ``domain.json``'s provenance.
        name, modality, sequence, vendor, centre, description: domain.json metadata.
    """

    name: str
    images: Sequence[str] = (".",)
    labels: str | None = None
    unlabelled: Sequence[str] = ()
    image_pattern: str = r"(?P<case>.+)"
    label_pattern: str | None = None
    label_suffix: str | None = None
    case_template: str = "{case}"
    label_names: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(CARDIAC_LABELS))
    label_map: Mapping[int, str | int] | None = None
    frames: Sequence[int] | None = None
    spacing: Sequence[float] | None = None
    key: str | None = None
    label_key: str | None = None
    require_labels: bool = False
    recursive: bool = False
    label_geometry: str = "strict"
    """``strict``: a label's affine must match its image's; ``image``: a label with the image's shape and
    voxel sizes (within 1e-3 relative) but another affine is taken to lie on the image's voxel grid (nnU-Net's
    reading), and every such case is listed in the report and in ``domain.json``'s provenance."""
    ignore_pattern: str | None = None
    source_notes: Sequence[str] = ()
    modality: str = "MR"
    sequence: str | None = None
    vendor: str | None = None
    centre: str | None = None
    description: str | None = None

    def compiled_label_pattern(self) -> re.Pattern[str] | None:
        if self.label_suffix == "":
            raise SegshiftError(
                "--label-suffix is empty: a label file is named as its image plus the suffix (e.g. _gt); for labels "
                "named exactly as their images, in a folder of their own, use --labels DIR --label-pattern '(?P<case>.+)'"
            )
        if self.label_pattern and self.label_suffix:
            raise SegshiftError("give either a label pattern or a label suffix, not both")
        if self.label_suffix:
            return re.compile(r"(?P<case>.+)" + re.escape(self.label_suffix))
        if self.label_pattern:
            return _compile(self.label_pattern, "label pattern")
        return None


@dataclasses.dataclass
class ImportReport:
    """What an import did: counts, unmatched files, geometry fixes."""

    domain: Path
    cases: list[str]
    labelled: list[str]
    unlabelled: list[str]
    unmatched: list[str]
    notes: list[str]

    def lines(self) -> list[str]:
        out = [f"wrote {self.domain}: {len(self.cases)} cases ({len(self.labelled)} labelled, {len(self.unlabelled)} unlabelled)"]
        if self.unmatched:
            out.append(f"{len(self.unmatched)} unmatched file(s) skipped: " + ", ".join(self.unmatched))
        grid = [n for n in self.notes if n.endswith("(--label-geometry image)")]
        other = [n for n in self.notes if n not in grid]
        out += grid  # every label taken onto its image's grid is listed
        out += other[:3]
        if len(other) > 3:
            out.append(f"... and {len(other) - 3} more geometry note(s) (see domain.json provenance)")
        return out


def parse_label_map(text: str) -> dict[int, str | int]:
    """Parse ``"500=LV,200=MYO,600=RV"`` (targets may be names or integer ids)."""
    out: dict[int, str | int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise SegshiftError(f"label map: expected CODE=NAME, got {part!r}")
        code, target = (s.strip() for s in part.split("=", 1))
        try:
            code_i = int(float(code))
        except ValueError as exc:
            raise SegshiftError(f"label map: code {code!r} is not a number") from exc
        if code_i in out:
            raise SegshiftError(f"label map: code {code_i} given twice")
        out[code_i] = int(target) if re.fullmatch(r"\d+", target) else target
    if not out:
        raise SegshiftError("label map is empty")
    return out


def parse_frames(text: str) -> list[int]:
    """Parse ``"0,12"`` into frame indices."""
    try:
        frames = [int(p) for p in text.split(",") if p.strip()]
    except ValueError as exc:
        raise SegshiftError(f"frames: expected comma-separated integers, got {text!r}") from exc
    if not frames or any(f < 0 for f in frames):
        raise SegshiftError(f"frames: expected non-negative integers, got {text!r}")
    return frames


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise SegshiftError(f"{what} {pattern!r} is not a valid regular expression: {exc}") from exc
    if "case" not in rx.groupindex:
        raise SegshiftError(f"{what} {pattern!r} needs a named group (?P<case>...)")
    return rx


def _candidates(folder: Path, recursive: bool) -> list[Path]:
    """Volume files and DICOM series folders in ``folder``, sorted (sorting is for stable output only).

    A broken symbolic link named like one (a volume suffix, or none: a series folder) is refused by name.
    """
    if not folder.is_dir():
        raise InputFileError(folder, "is not a folder")
    out: list[Path] = []
    walker = sorted(folder.rglob("*")) if recursive else sorted(folder.iterdir())
    for p in walker:
        if p.name.startswith("."):
            continue
        if (err := broken_volume_link(p)) is not None:
            raise err
        if (p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)) or (p.is_dir() and is_dicom_dir(p)):
            out.append(p)
    return out


def _stem(p: Path) -> str:
    return p.name if p.is_dir() else strip_suffix(p.name)


def _resolve(root: Path, sub: str) -> Path:
    p = Path(sub)
    return p if p.is_absolute() else root / p


class _LabelMapper:
    """Maps raw label codes to domain ids, vectorised through a lookup table."""

    def __init__(self, label_names: Mapping[str, int], label_map: Mapping[int, str | int] | None) -> None:
        self.names = dict(label_names)
        self.table: dict[int, int] | None = None
        if label_map is not None:
            ids = set(self.names.values())
            table = {0: 0}
            for code, target in label_map.items():
                if isinstance(target, str):
                    if target not in self.names:
                        raise SegshiftError(f"label map target {target!r} is not a label name ({', '.join(self.names)})")
                    table[int(code)] = self.names[target]
                else:
                    if int(target) not in ids:
                        raise SegshiftError(f"label map target id {target} is not in the label set {self.names}")
                    table[int(code)] = int(target)
            self.table = table

    def __call__(self, array: np.ndarray, path: Path) -> np.ndarray:
        arr = to_label_array(array, path)
        codes = np.unique(arr)
        allowed = set(self.table) if self.table is not None else set(self.names.values())
        unknown = sorted(int(c) for c in codes if int(c) not in allowed)
        if unknown:
            hint = "add them to --label-map" if self.table is not None else "give --label-map CODE=NAME,..."
            raise InputFileError(path, f"unknown label code(s) {unknown} (known: {sorted(allowed)}); {hint}")
        if self.table is None:
            return arr.astype(np.uint8) if arr.max(initial=0) < 256 else arr
        lut = np.zeros(int(codes.max()) + 1, dtype=np.uint16)
        for code, target in self.table.items():
            if code < lut.size:
                lut[code] = target
        out = lut[arr]
        return out.astype(np.uint8) if out.max(initial=0) < 256 else out


def _split_frames(vol: Volume, frames: Sequence[int] | None) -> list[tuple[str, np.ndarray]]:
    """``[(suffix, 3D array)]``: the volume itself, or one entry per chosen frame of a 4D volume."""
    if vol.array.ndim == 3:
        return [("", vol.array)]
    if frames is None:
        raise InputFileError(vol.path, f"is 4D {vol.shape} where 3D is needed; choose frames with --frames (e.g. --frames 0)")
    n = vol.array.shape[3]
    bad = [f for f in frames if f >= n]
    if bad:
        raise InputFileError(vol.path, f"has {n} frames; frame(s) {bad} do not exist")
    return [(f"_frame{f:02d}", np.asarray(vol.array[..., f])) for f in frames]


def run_import(
    raw_root: str | Path,
    out_dir: str | Path,
    config: ImportConfig,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import ``raw_root`` into the domain folder ``out_dir`` according to ``config``.

    Raises:
        SegshiftError / InputFileError: on any problem, before ``out_dir`` is touched.
    """
    raw_root = Path(raw_root)
    out_dir = Path(out_dir)
    if not raw_root.is_dir():
        raise InputFileError(raw_root, "is not a folder")
    check_disjoint(out_dir, [raw_root], "domain folder")
    label_names = validate_labels(dict(config.label_names), where="label names")
    mapper = _LabelMapper(label_names, config.label_map)
    image_rx = _compile(config.image_pattern, "image pattern")
    label_rx = config.compiled_label_pattern()
    if config.label_geometry not in ("strict", "image"):
        raise SegshiftError(f"--label-geometry must be strict or image, got {config.label_geometry!r}")
    if config.labels is not None and label_rx is None and config.label_key is None:
        raise SegshiftError("a labels folder was given but no rule to match labels: use --label-suffix or --label-pattern")

    ignore_rx = None
    if config.ignore_pattern is not None:
        try:
            ignore_rx = re.compile(config.ignore_pattern)
        except re.error as exc:
            raise SegshiftError(f"ignore pattern {config.ignore_pattern!r} is not a valid regular expression: {exc}") from exc
    ignored = 0
    unmatched: list[str] = []
    labels: dict[str, Path] = {}
    label_files: set[Path] = set()
    # without --labels, a label rule looks for the labels beside the images (never importing them as images)
    label_dirs = [config.labels] if config.labels is not None else list(config.images) if label_rx is not None else []
    same_folder = label_rx is not None and any(_resolve(raw_root, d) in {_resolve(raw_root, f) for f in config.images} for d in label_dirs)
    for label_dir in label_dirs if label_rx is not None else []:
        for p in _candidates(_resolve(raw_root, label_dir), config.recursive):
            m = label_rx.fullmatch(_stem(p))
            if m is None:
                continue
            key = m.group("case")
            if key in labels:
                raise InputFileError(p, f"second label file for {key!r} (first: {labels[key]})")
            labels[key] = p
            label_files.add(p)

    images: dict[str, tuple[Path, bool]] = {}  # case -> (path, from an unlabelled folder)
    image_keys: dict[str, str] = {}  # case -> key shared with its label file
    folders = [(f, False) for f in config.images] + [(f, True) for f in config.unlabelled]
    for folder, is_pool in folders:
        for p in _candidates(_resolve(raw_root, folder), config.recursive):
            if p in label_files or (same_folder and label_rx.fullmatch(_stem(p))):
                continue  # a label file (by the label rule), never an image
            if ignore_rx is not None and ignore_rx.fullmatch(_stem(p)):
                ignored += 1
                continue
            m = image_rx.fullmatch(_stem(p))
            if m is None:
                if label_rx is None or not label_rx.fullmatch(_stem(p)):
                    unmatched.append(str(p.relative_to(raw_root)) if p.is_relative_to(raw_root) else str(p))
                continue
            case = m.group("case")
            if case in images:
                raise InputFileError(p, f"second image for case {case!r} (first: {images[case][0]})")
            images[case] = (p, is_pool)
            # suffix rule: label stem = image stem + suffix; pattern rule: equal case groups
            image_keys[case] = _stem(p) if config.label_suffix else case

    if not images:
        where = ", ".join(str(_resolve(raw_root, f)) for f, _ in folders)
        raise InputFileError(raw_root, f"no images found in {where} matching {config.image_pattern!r}")
    labels = {case: labels[key] for case, key in image_keys.items() if key in labels} | {
        key: path for key, path in labels.items() if key not in set(image_keys.values())
    }
    orphan_labels = sorted(set(labels) - set(images))
    if orphan_labels:
        names = ", ".join(str(labels[c].name) for c in orphan_labels)
        raise SegshiftError(f"label file(s) with no matching image: {names} (check --image-pattern / --label-suffix)")
    pooled_with_label = sorted(c for c, (_, pool) in images.items() if pool and c in labels)
    if pooled_with_label:
        raise SegshiftError(f"case(s) {pooled_with_label} are in an unlabelled folder but have a label file")
    if config.require_labels:
        missing = sorted(c for c, (_, pool) in images.items() if not pool and c not in labels and config.label_key is None)
        if missing:
            raise SegshiftError(f"{len(missing)} image(s) have no label: " + ", ".join(str(images[c][0].name) for c in missing))

    out_ids: dict[str, str] = {}
    for case in images:
        try:
            out_id = config.case_template.format(case=case)
        except (KeyError, IndexError, ValueError) as exc:
            raise SegshiftError(f"case template {config.case_template!r} cannot format case {case!r}: {exc}") from exc
        if out_id in out_ids.values():
            raise SegshiftError(f"case template {config.case_template!r} maps two cases to {out_id!r}")
        out_ids[case] = out_id

    spec = DomainSpec(
        name=config.name,
        labels=label_names,
        modality=config.modality,
        sequence=config.sequence,
        vendor=config.vendor,
        centre=config.centre,
        description=config.description,
    )
    report = ImportReport(domain=out_dir, cases=[], labelled=[], unlabelled=[], unmatched=unmatched, notes=list(config.source_notes))
    if ignored:
        report.notes.append(f"{ignored} file(s) matching {config.ignore_pattern!r} skipped")
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        writer = DomainWriter(tmp, spec)
        for case in sorted(images, key=lambda c: out_ids[c]):
            path, _ = images[case]
            if progress:
                progress(out_ids[case])
            img = read_volume(path, spacing=config.spacing, key=config.key)
            check_volume(img)
            for note in img.notes:
                report.notes.append(f"{path.name}: {note}")
            lab: Volume | None = None
            if config.label_key is not None and path.is_file() and path.suffix in (".npz", ".h5", ".hdf5"):
                lab = read_volume(path, spacing=config.spacing, key=config.label_key)
            elif case in labels:
                lab = read_volume(labels[case], spacing=config.spacing, key=config.key)
            if lab is not None:
                if lab.array.ndim != 3:
                    raise InputFileError(lab.path, f"label maps must be 3D, got shape {lab.shape}")
                img3 = img if img.array.ndim == 3 else Volume(img.array[..., 0], img.affine)
                if not same_geometry(img3, lab):
                    same_grid = lab.shape[:3] == img.shape[:3] and np.allclose(lab.spacing, img3.spacing, rtol=1e-3, atol=0)
                    if same_grid and config.label_geometry == "image":
                        report.notes.append(
                            f"{lab.path.name}: affine differs from its image {path.name}'s with the same shape "
                            f"and voxel sizes: taken to lie on the image's voxel grid (--label-geometry image)"
                        )
                    else:
                        hint = (
                            (
                                "; its shape and voxel sizes match the image's: if it lies on the image's voxel grid, "
                                "--label-geometry image imports it so"
                            )
                            if same_grid
                            else ""
                        )
                        raise InputFileError(
                            lab.path,
                            f"geometry differs from its image {path.name}: shape {lab.shape[:3]} vs {img.shape[:3]}"
                            + (
                                ""
                                if lab.shape[:3] != img.shape[:3]
                                else f", affine\n{np.round(lab.affine, 4)}\nvs\n{np.round(img.affine, 4)}"
                            )
                            + hint,
                        )
                lab_arr = mapper(lab.array, lab.path)
            for suffix, arr in _split_frames(img, config.frames):
                cid = out_ids[case] + suffix
                writer.add(cid, arr, img.affine, lab_arr if lab is not None else None)
                report.cases.append(cid)
                (report.labelled if lab is not None else report.unlabelled).append(cid)
        spec.provenance = _provenance(raw_root, config, report)
        writer.close()
    return report


def _provenance(raw_root: Path, config: ImportConfig, report: ImportReport) -> dict[str, Any]:
    cfg = dataclasses.asdict(config)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    if cfg.get("label_map") is not None:
        cfg["label_map"] = {str(k): v for k, v in cfg["label_map"].items()}
    return {
        "importer": "segshift.import",
        "raw_root": str(raw_root.resolve()),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "config": cfg,
        "unmatched": report.unmatched,
        "notes": report.notes,
    }
