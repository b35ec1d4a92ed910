"""The domain contract: one folder per imaging domain.

A *domain* is a folder::

    my_domain/
      domain.json            name, modality/sequence, vendor/centre, label names -> ids
      images/<case>.nii.gz   3D images, slice (through-plane) axis last
      labels/<case>.nii.gz   optional; same shape and affine as the image

``domain.json`` (only ``name`` and ``labels`` are required)::

    {
      "format": "segshift-domain", "version": 1,
      "name": "mscmr_lge", "modality": "MR", "sequence": "LGE",
      "vendor": "Philips", "centre": "Shanghai",
      "labels": {"background": 0, "LV": 1, "MYO": 2, "RV": 3},
      "provenance": {...}      # written by importers; free-form
    }

Cases without a label file are unlabelled (an unlabelled target pool). The canonical
cardiac label set is :data:`CARDIAC_LABELS`; any other set (any anatomy) works as long as
background is 0 and ids are unique non-negative integers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segshift.data.volume import Volume, broken_link, check_volume, read_volume, same_geometry, write_nifti
from segshift.errors import InputFileError, SegshiftError
from segshift.utils.atomic import write_json
from segshift.utils.jsonfile import read_json

FORMAT = "segshift-domain"
VERSION = 1
CARDIAC_LABELS: dict[str, int] = {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
"""Canonical cardiac labels: LV blood pool, LV myocardium, RV blood pool."""


def parse_label_names(text: str | Mapping[str, int]) -> dict[str, int]:
    """Parse ``"LV=1,MYO=2,RV=3"`` (or a mapping) into a validated label set with background 0."""
    if isinstance(text, Mapping):
        items = dict(text)
    else:
        items = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "=" not in part:
                raise SegshiftError(f"label names: expected NAME=ID, got {part!r}")
            name, value = (s.strip() for s in part.split("=", 1))
            try:
                items[name] = int(value)
            except ValueError as exc:
                raise SegshiftError(f"label names: id of {name!r} is not an integer: {value!r}") from exc
    items.setdefault("background", 0)
    return validate_labels(items)


def validate_labels(labels: Mapping[str, Any], where: str = "labels") -> dict[str, int]:
    """Check a name -> id map: integer ids >= 0, unique, background == 0."""
    out: dict[str, int] = {}
    for name, value in labels.items():
        if not isinstance(name, str) or not name:
            raise SegshiftError(f"{where}: label names must be non-empty strings, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise SegshiftError(f"{where}: id of {name!r} must be a non-negative integer, got {value!r}")
        out[name] = int(value)
    ids = list(out.values())
    if len(set(ids)) != len(ids):
        raise SegshiftError(f"{where}: label ids are not unique: {out}")
    if out.get("background", 0) != 0 or (0 in ids and out.get("background") != 0):
        raise SegshiftError(f"{where}: id 0 must be 'background', got {out}")
    out.setdefault("background", 0)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


@dataclasses.dataclass
class DomainSpec:
    """The contents of ``domain.json``."""

    name: str
    labels: dict[str, int] = dataclasses.field(default_factory=lambda: dict(CARDIAC_LABELS))
    modality: str = "MR"
    sequence: str | None = None
    vendor: str | None = None
    centre: str | None = None
    description: str | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def structures(self) -> dict[str, int]:
        """Foreground labels (everything but background)."""
        return {k: v for k, v in self.labels.items() if v != 0}

    def to_dict(self) -> dict[str, Any]:
        d = {"format": FORMAT, "version": VERSION}
        d.update(dataclasses.asdict(self))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "domain.json") -> DomainSpec:
        if not isinstance(d, Mapping):
            raise SegshiftError(f"{where}: expected a JSON object")
        if d.get("format", FORMAT) != FORMAT:
            raise SegshiftError(f"{where}: 'format' is {d.get('format')!r}, expected {FORMAT!r}")
        if int(d.get("version", VERSION)) > VERSION:
            raise SegshiftError(f"{where}: version {d.get('version')} is newer than this segshift understands ({VERSION})")
        if not isinstance(d.get("name"), str) or not d["name"]:
            raise SegshiftError(f"{where}: 'name' (a non-empty string) is required")
        if "labels" not in d or not isinstance(d["labels"], Mapping):
            raise SegshiftError(f"{where}: 'labels' (an object of name -> integer id) is required")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        kwargs["labels"] = validate_labels(d["labels"], where=f"{where} labels")
        return cls(**kwargs)


def _by_case(folder: Path) -> dict[str, Path]:
    """The NIfTI files of a folder by case id; two files of one case (``x.nii`` and ``x.nii.gz``), or a broken
    symbolic link named as a NIfTI file, are refused.
    """
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.endswith((".nii.gz", ".nii")) and not p.name.startswith(".") and (err := broken_link(p)) is not None:
            raise err
        if _is_nifti(p):
            case = _case_of(p)
            if case in out:
                raise InputFileError(p, f"a second file of case {case!r} (first: {out[case].name}); keep one")
            out[case] = p
    return out


class Domain:
    """A domain folder opened for reading. Opening reads only ``domain.json`` and lists files.

    Args:
        root: the domain folder.

    Example:
        >>> dom = Domain("runs/phantom/bssfp")          # doctest: +SKIP
        >>> img, lab = dom.load("case000")              # doctest: +SKIP
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputFileError(self.root, "is not a folder (expected a domain folder with domain.json and images/)")
        meta = self.root / "domain.json"
        if not meta.is_file():
            raise InputFileError(meta, "missing: a domain folder needs domain.json (see docs/domain-format.md)")
        raw = read_json(meta, "missing: a domain folder needs domain.json (see docs/domain-format.md)")
        try:
            self.spec = DomainSpec.from_dict(raw, where=str(meta))
        except TypeError as exc:
            raise InputFileError(meta, f"has malformed fields ({exc})") from exc
        images = self.root / "images"
        if not images.is_dir():
            raise InputFileError(images, "missing: a domain folder needs an images/ folder")
        self._images = _by_case(images)
        if not self._images:
            raise InputFileError(images, "holds no .nii/.nii.gz images")
        labels = self.root / "labels"
        self._labels = _by_case(labels) if labels.is_dir() else {}
        orphans = sorted(set(self._labels) - set(self._images))
        if orphans:
            raise InputFileError(labels, f"labels without an image: {', '.join(orphans)}")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cases(self) -> list[str]:
        """All case ids, sorted."""
        return sorted(self._images)

    @property
    def labelled_cases(self) -> list[str]:
        return [c for c in self.cases if c in self._labels]

    @property
    def unlabelled_cases(self) -> list[str]:
        return [c for c in self.cases if c not in self._labels]

    def image_path(self, case: str) -> Path:
        return self._images[self._check(case)]

    def label_path(self, case: str) -> Path | None:
        return self._labels.get(self._check(case))

    def _check(self, case: str) -> str:
        if case not in self._images:
            raise SegshiftError(f"{self.root}: no case {case!r}")
        return case

    def load_image(self, case: str) -> Volume:
        """Read one image, checking it is 3D and finite."""
        vol = read_volume(self.image_path(case))
        if vol.array.ndim != 3:
            raise InputFileError(vol.path, f"domain images must be 3D, got shape {vol.array.shape}")
        check_volume(vol)
        return vol

    def load_label(self, case: str, image: Volume | None = None) -> Volume | None:
        """Read one label map (or ``None`` if unlabelled), checking ids and geometry."""
        path = self.label_path(case)
        if path is None:
            return None
        lab = read_volume(path)
        if lab.array.ndim != 3:
            raise InputFileError(path, f"label maps must be 3D, got shape {lab.array.shape}")
        lab.array = to_label_array(lab.array, path)
        unknown = sorted(set(np.unique(lab.array).tolist()) - set(self.spec.labels.values()))
        if unknown:
            raise InputFileError(path, f"label ids {unknown} are not declared in domain.json labels {self.spec.labels}")
        if image is not None and not same_geometry(image, lab):
            raise InputFileError(path, f"geometry differs from its image {image.path} (shape {lab.shape} vs {image.shape} or affine)")
        return lab

    def load(self, case: str) -> tuple[Volume, Volume | None]:
        """Image and label (``None`` if unlabelled) of one case."""
        img = self.load_image(case)
        return img, self.load_label(case, img)

    def __iter__(self) -> Iterator[str]:
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self._images)

    def __repr__(self) -> str:
        return f"Domain({self.name!r}, {len(self)} cases, {len(self.labelled_cases)} labelled)"

    def files(self) -> dict[str, list[Any]]:
        """Each case's image and label file: ``{case: [image name, bytes, label name or None, bytes or None]}``."""
        out: dict[str, list[Any]] = {}
        for case in self.cases:
            img, lab = self._images[case], self._labels.get(case)
            out[case] = [img.name, img.stat().st_size, lab.name if lab else None, lab.stat().st_size if lab else None]
        return out

    def identity(self) -> dict[str, Any]:
        """What a domain *is*, independent of where it lies: its name and labels, and each case's
        file names and sizes (not times, so a copied or moved domain keeps its identity).

        A run records it, so ``--resume`` can tell a moved domain from a changed one.
        """
        files = self.files()
        h = hashlib.sha256(json.dumps([self.name, self.spec.labels, files], sort_keys=True).encode())
        return {"name": self.name, "labels": dict(self.spec.labels), "sha256": h.hexdigest()[:20], "files": files}

    def validate(self, cases: Sequence[str] | None = None) -> list[str]:
        """Read every case (or only ``cases``) and check the whole contract; returns a list of human-readable facts.

        Raises:
            InputFileError: the first file that breaks the contract (NaN, an undeclared label id, ...), named.
        """
        cases = self.cases if cases is None else [self._check(c) for c in cases]
        spacings = []
        for case in cases:
            img, _ = self.load(case)
            spacings.append(img.spacing)
        sp = np.asarray(spacings)
        return [
            f"{self.name}: {len(self)} cases ({len(self.labelled_cases)} labelled, {len(self.unlabelled_cases)} unlabelled)",
            f"labels: {self.spec.labels}",
            "spacing (mm) min " + ", ".join(f"{v:.3g}" for v in sp.min(0)) + " / max " + ", ".join(f"{v:.3g}" for v in sp.max(0)),
        ]


def identity_changes(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between two :meth:`Domain.identity` records, in words (empty if the same)."""
    out = []
    if recorded.get("name") != now.get("name"):
        out.append(f"name {recorded.get('name')!r} is now {now.get('name')!r}")
    if recorded.get("labels") != now.get("labels"):
        out.append(f"labels {recorded.get('labels')} are now {now.get('labels')}")
    old, new = recorded.get("files", {}), now.get("files", {})
    for what, cases in (
        ("removed", sorted(set(old) - set(new))),
        ("added", sorted(set(new) - set(old))),
        ("changed (file name or size)", sorted(c for c in set(old) & set(new) if list(old[c]) != list(new[c]))),
    ):
        if cases:
            out.append(f"{what}: {', '.join(cases[:8])}" + (f" and {len(cases) - 8} more" if len(cases) > 8 else ""))
    if not out and recorded.get("sha256") != now.get("sha256"):
        out.append("content identity differs")
    return out


def to_label_array(array: np.ndarray, path: Path | str) -> np.ndarray:
    """Convert a label array to the smallest unsigned integer type; non-integral values are an error."""
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InputFileError(path, "label map contains NaN/Inf")
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise InputFileError(path, "label map has non-integer values (is this an image rather than a label?)")
        array = rounded
    if array.size and array.min() < 0:
        raise InputFileError(path, f"label map has negative codes ({int(array.min())})")
    top = int(array.max()) if array.size else 0
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
    return array.astype(dtype)


def _is_nifti(p: Path) -> bool:
    return p.is_file() and p.name.endswith((".nii.gz", ".nii")) and not p.name.startswith(".")


def _case_of(p: Path) -> str:
    return p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.name[: -len(".nii")]


class DomainWriter:
    """Writes a domain folder case by case into ``root`` (use with :func:`atomic_dir`).

    Images are stored as float32 (integer images keep their integer type), labels as the
    smallest unsigned integer type. Each file is written atomically.
    """

    def __init__(self, root: str | Path, spec: DomainSpec) -> None:
        self.root = Path(root)
        self.spec = spec
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        self.cases: list[str] = []

    def add(self, case: str, image: np.ndarray, affine: np.ndarray, label: np.ndarray | None = None) -> None:
        if case in self.cases:
            raise SegshiftError(f"duplicate case id {case!r} in domain {self.spec.name}")
        if not case or "/" in case or case.startswith("."):
            raise SegshiftError(f"invalid case id {case!r}")
        image = np.asarray(image)
        if not (np.issubdtype(image.dtype, np.integer) or image.dtype == np.float32):
            image = image.astype(np.float32)
        write_nifti(self.root / "images" / f"{case}.nii.gz", image, affine)
        if label is not None:
            if label.shape != image.shape:
                raise SegshiftError(f"case {case}: label shape {label.shape} != image shape {image.shape}")
            (self.root / "labels").mkdir(exist_ok=True)
            write_nifti(self.root / "labels" / f"{case}.nii.gz", to_label_array(label, case), affine)
        self.cases.append(case)

    def close(self) -> None:
        """Write ``domain.json`` (last, so a folder with it is complete)."""
        write_json(self.root / "domain.json", self.spec.to_dict())
