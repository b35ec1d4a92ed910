"""nnU-Net v2 raw datasets, both ways: ``segshift import --preset nnunet`` and ``segshift export nnunet``.

An nnU-Net v2 raw dataset (Isensee et al., Nature Methods 2021; the format of
``nnunetv2/dataset_conversion``) is a folder ``DatasetNNN_Name`` with::

    dataset.json        {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "LV": 1, ...},
                         "numTraining": 20, "file_ending": ".nii.gz", ...}
    imagesTr/CASE_0000.nii.gz   one file per case and channel (_0000, _0001, ...)
    labelsTr/CASE.nii.gz        one label map per training case
    imagesTs/CASE_0000.nii.gz   optional: cases without labels

Import (:func:`nnunet_import_config`) reads ``dataset.json`` and builds the
:class:`~segshift.data.importer.ImportConfig` that :func:`~segshift.data.importer.run_import`
runs, so pairing, geometry checks, the report and the all-or-nothing write are the ones of
every other import. Labels map by name: a dataset whose foreground names are exactly
``LV``, ``MYO`` and ``RV`` is mapped onto the canonical cardiac ids whatever ids it uses;
any other set keeps its names and ids. ``imagesTs`` cases become unlabelled cases. A
dataset with several channels is refused unless one channel is chosen (segshift domains are
single-channel); region-based labels and the ``ignore`` label have no segshift meaning and
are refused.

Export (:func:`export_nnunet`) writes a domain the other way: labelled cases to
``imagesTr``/``labelsTr``, unlabelled ones to ``imagesTs``, ``dataset.json`` (with a
``segshift`` block holding the domain's metadata and original label ids, which the import
restores), and, given a train/validation split, ``splits_final.json`` with it as fold 0 and
any further folds after it (``segshift export nnunet`` adds a four-fold cross-validation
grouped by patient as folds 1-4, so nnU-Net's five folds never split a patient). Every case is
checked against the domain contract first (:meth:`Domain.validate`): NaN intensities or a
label id that ``domain.json`` does not declare are refused before anything is written.
nnU-Net wants consecutive label ids (0, 1, 2, ...); a domain whose ids have gaps is written
with its ids renumbered in order (said in the report), and re-imported with the original ids.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segshift.data.domain import CARDIAC_LABELS, Domain, validate_labels
from segshift.data.importer import ImportConfig
from segshift.data.volume import read_volume, write_nifti
from segshift.errors import InputFileError, SegshiftError
from segshift.utils.atomic import atomic_dir, check_disjoint, write_json
from segshift.utils.jsonfile import read_json

READABLE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
"""``file_ending`` values segshift reads (nnU-Net's 2D ``.png``/``.tif`` readers have no geometry)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def read_dataset_json(root: str | Path) -> dict[str, Any]:
    """``dataset.json`` of an nnU-Net v2 raw dataset folder, checked; errors name the file."""
    root = Path(root)
    path = root / "dataset.json"
    if not root.is_dir():
        raise InputFileError(root, "is not a folder (--preset nnunet reads an nnU-Net v2 raw dataset folder DatasetNNN_Name)")
    missing = "missing: --preset nnunet reads an nnU-Net v2 raw dataset folder (DatasetNNN_Name with dataset.json, imagesTr/, labelsTr/)"
    if not path.is_file():
        raise InputFileError(path, missing)
    meta = read_json(path, missing)
    if not isinstance(meta, dict):
        raise InputFileError(path, "expected a JSON object")
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputFileError(path, "'labels' (an object of label name -> integer id) is required")
    if all(re.fullmatch(r"\d+", str(k)) for k in labels) and all(isinstance(v, str) for v in labels.values()):
        raise InputFileError(
            path, "is an nnU-Net v1 dataset.json (labels as id -> name); convert it with nnUNetv2_convert_old_nnUNet_dataset first"
        )
    regions = sorted(k for k, v in labels.items() if isinstance(v, (list, tuple)))
    if regions:
        raise InputFileError(path, f"labels {regions} are regions (lists of ids); segshift needs one id per label")
    if "ignore" in labels:
        raise InputFileError(
            path,
            "declares an 'ignore' label; segshift has no ignore label (remove it from the "
            "label maps and dataset.json, or map it with --label-map)",
        )
    channels = meta.get("channel_names", meta.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise InputFileError(path, '\'channel_names\' (an object like {"0": "MRI"}) is required')
    if not all(re.fullmatch(r"\d+", str(k)) for k in channels):
        raise InputFileError(path, f"'channel_names' keys must be channel numbers, got {sorted(channels)}")
    ending = meta.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise InputFileError(path, "'file_ending' (e.g. \".nii.gz\") is required")
    if ending.lower() not in READABLE_ENDINGS:
        raise InputFileError(path, f"file_ending {ending!r} is not a 3D format segshift reads ({', '.join(READABLE_ENDINGS)})")
    return meta


def nnunet_import_config(raw_root: str | Path, name: str, channel: int | None = None, **overrides: Any) -> ImportConfig:
    """The import configuration of an nnU-Net v2 raw dataset (see the module docstring).

    Args:
        raw_root: the ``DatasetNNN_Name`` folder.
        name: the domain's name (``domain.json``).
        channel: the channel to import (``_000K`` files); required when ``dataset.json`` has
            more than one.
        overrides: :class:`ImportConfig` fields that replace the derived ones (``None`` skipped),
            e.g. ``label_map={1: "RV", 2: "MYO", 3: "LV"}`` for cardiac names other than LV/MYO/RV.
    """
    raw_root = Path(raw_root)
    meta = read_dataset_json(raw_root)
    path = raw_root / "dataset.json"
    channels = {int(k): str(v) for k, v in meta.get("channel_names", meta.get("modality")).items()}
    if channel is None:
        if len(channels) > 1:
            listed = ", ".join(f"{k} ({v})" for k, v in sorted(channels.items()))
            raise InputFileError(
                path, f"declares {len(channels)} channels ({listed}); segshift domains have one: choose it with --channel K"
            )
        channel = next(iter(channels))
    elif channel not in channels:
        raise InputFileError(path, f"has no channel {channel} (channel_names: {', '.join(map(str, sorted(channels)))})")
    ending = str(meta["file_ending"])
    for folder in ("imagesTr", "labelsTr"):
        if not (raw_root / folder).is_dir():
            raise InputFileError(raw_root / folder, "missing: an nnU-Net raw dataset needs imagesTr/ and labelsTr/")
    raw_labels = {str(k): v for k, v in meta["labels"].items()}
    ids = validate_labels(raw_labels, where=f"{path} labels")
    block = meta.get("segshift") if isinstance(meta.get("segshift"), dict) else {}
    restored = block.get("labels") if isinstance(block.get("labels"), dict) else None
    foreground = {k: v for k, v in ids.items() if v != 0}
    notes = [f"nnU-Net dataset {raw_root.name}: channel {channel} ({channels[channel]}), labels {ids}"]
    if restored is not None and set(restored) == set(ids):
        label_names = validate_labels(restored, where=f"{path} segshift.labels")  # the ids the domain had before export
        if label_names != ids:
            notes.append(f"label ids restored from dataset.json's segshift block: {label_names}")
    elif set(foreground) == set(CARDIAC_LABELS) - {"background"}:
        label_names = dict(CARDIAC_LABELS)
        if label_names != ids:
            notes.append(f"cardiac labels mapped by name onto the canonical ids {label_names}")
    else:
        label_names = ids
    domain_meta = block.get("domain") if isinstance(block.get("domain"), dict) else {}
    config = ImportConfig(
        name=name,
        images=("imagesTr",),
        labels="labelsTr",
        unlabelled=("imagesTs",) if (raw_root / "imagesTs").is_dir() else (),
        image_pattern=rf"(?P<case>.+)_{channel:04d}",
        label_pattern=r"(?P<case>.+)",
        ignore_pattern=rf".+_(?!{channel:04d})\d{{4}}" if len(channels) > 1 else None,  # the other channels
        label_names=label_names,
        label_map={v: k for k, v in foreground.items()},
        require_labels=True,
        modality=str(domain_meta.get("modality") or "MR"),
        sequence=domain_meta.get("sequence"),
        vendor=domain_meta.get("vendor"),
        centre=domain_meta.get("centre"),
        description=domain_meta.get("description") or meta.get("description") or f"nnU-Net dataset {raw_root.name}",
        source_notes=notes,
    )
    n_training = meta.get("numTraining")
    n_found = sum(1 for p in (raw_root / "labelsTr").iterdir() if p.name.endswith(ending) and not p.name.startswith("."))
    if isinstance(n_training, int) and n_training != n_found:
        notes.append(f"dataset.json numTraining is {n_training} but labelsTr holds {n_found} label file(s)")
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if overrides.get("label_map") is not None and overrides.get("label_names") is None:
        config = dataclasses.replace(config, label_names=dict(CARDIAC_LABELS))  # as a plain import with --label-map
    return config


@dataclasses.dataclass
class NnunetExport:
    """What :func:`export_nnunet` wrote."""

    dataset: Path
    training: list[str]
    test: list[str]
    labels: dict[str, int]
    split: dict[str, list[str]] | None
    notes: list[str]
    folds: list[dict[str, list[str]]] = dataclasses.field(default_factory=list)
    """Every fold of ``splits_final.json``: ``split`` (fold 0), then the further folds."""

    def lines(self) -> list[str]:
        out = [
            (
                f"wrote {self.dataset}: {len(self.training)} training case(s) (imagesTr, labelsTr), "
                f"{len(self.test)} unlabelled (imagesTs); labels {self.labels}"
            )
        ]
        if self.split is not None:
            more = (
                f"; folds 1-{len(self.folds) - 1}: cross-validation grouped by patient, each case validated once"
                if len(self.folds) > 1
                else ""
            )
            out.append(
                f"splits_final.json: {len(self.folds)} fold(s); fold 0 = segshift's split, {len(self.split['train'])} "
                f"train / {len(self.split['val'])} val{more} (copy it to nnUNet_preprocessed/{self.dataset.name}/ "
                "after planning)"
            )
        return out + self.notes


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetNNN_NAME``, checked (nnU-Net ids are 1-999)."""
    if not 1 <= int(dataset_id) <= 999:
        raise SegshiftError(f"--id must be an nnU-Net dataset id between 1 and 999, got {dataset_id}")
    if not _NAME.fullmatch(name):
        raise SegshiftError(f"--name {name!r}: use letters, digits, '_', '-' and '.' (e.g. MSCMR_LGE)")
    return f"Dataset{int(dataset_id):03d}_{name}"


def export_nnunet(
    domain: Domain,
    out: str | Path,
    dataset_id: int,
    name: str,
    cases: Sequence[str] | None = None,
    split: tuple[Sequence[str], Sequence[str]] | None = None,
    split_source: str = "",
    overwrite: bool = False,
    folds: Sequence[tuple[Sequence[str], Sequence[str]]] = (),
    folds_source: str = "",
) -> NnunetExport:
    """Write ``domain`` (or its ``cases``) as the nnU-Net v2 raw dataset ``out/DatasetNNN_NAME``.

    Args:
        domain: the domain to export.
        out: the ``nnUNet_raw`` folder (created if needed); the dataset folder is built in it
            atomically and replaced only with ``overwrite``.
        dataset_id, name: nnU-Net's dataset id (1-999) and name.
        cases: the cases to export (default: all).
        split: ``(train, val)`` labelled case ids for ``splits_final.json`` (fold 0); cases
            outside the export are left out of it.
        split_source: where the split comes from, recorded in ``dataset.json``.
        folds: further ``(train, val)`` folds (1, 2, ...) after ``split``, each covering
            every exported labelled case; ``folds_source`` says where they come from.

    Raises:
        InputFileError: an exported case breaks the domain contract (checked before writing).
    """
    out = Path(out)
    folder = out / dataset_folder_name(dataset_id, name)
    check_disjoint(folder, [domain.root], "nnU-Net dataset folder")
    if out.is_dir():
        clash = sorted(p.name for p in out.iterdir() if p.name.startswith(f"Dataset{int(dataset_id):03d}_") and p.name != folder.name)
        if clash:
            raise SegshiftError(
                f"{out}: dataset id {int(dataset_id):03d} is already taken by {', '.join(clash)}; "
                "nnU-Net finds datasets by id: choose another --id"
            )
    chosen = list(domain.cases) if cases is None else list(cases)
    training = [c for c in chosen if domain.label_path(c) is not None]
    test = [c for c in chosen if domain.label_path(c) is None]
    if not training:
        raise SegshiftError(f"{domain.root}: none of the exported cases is labelled; nnU-Net needs labelled training cases")
    labels = dict(domain.spec.labels)
    ordered = sorted(labels.items(), key=lambda kv: kv[1])
    new_ids = {k: i for i, (k, _) in enumerate(ordered)}
    notes: list[str] = []
    lut = None
    if new_ids != labels:
        lut = np.zeros(max(labels.values()) + 1, dtype=np.uint8 if len(new_ids) < 256 else np.uint16)
        for k, v in labels.items():
            lut[v] = new_ids[k]
        notes.append(f"label ids renumbered to be consecutive, as nnU-Net requires: {labels} -> {new_ids} (segshift import restores them)")
    fold = None
    all_folds: list[dict[str, list[str]]] = []
    if split is not None:
        train_ids = [c for c in split[0] if c in set(training)]
        val_ids = [c for c in split[1] if c in set(training)]
        left = sorted(set(training) - set(train_ids) - set(val_ids))
        dropped = len(split[0]) + len(split[1]) - len(train_ids) - len(val_ids)
        if dropped:
            notes.append(f"{dropped} case(s) of the split are not exported and left out of splits_final.json")
        if left:
            raise SegshiftError(
                f"exported labelled case(s) {', '.join(left[:8])} are in neither side of the split "
                f"({split_source or 'given'}); export only the split's cases (--cases) or drop --run"
            )
        if not val_ids:
            notes.append("the validation side of the split is empty; nnU-Net needs at least one validation case")
        fold = {"train": train_ids, "val": val_ids}
        all_folds = [fold]
        for i, (tr, va) in enumerate(folds, start=1):
            if sorted([*tr, *va]) != sorted(training):
                raise SegshiftError(f"fold {i} ({folds_source or 'given'}) does not split exactly the exported labelled cases")
            all_folds.append({"train": list(tr), "val": list(va)})
        if len(all_folds) < 5:
            notes.append(f"splits_final.json has {len(all_folds)} fold(s), not nnU-Net's 5: train folds 0-{len(all_folds) - 1} only")
    elif folds:
        raise SegshiftError("folds after fold 0 need fold 0 (split)")
    domain.validate(chosen)  # NaN, undeclared label ids, label geometry: refused before anything is written
    spec = domain.spec
    meta: dict[str, Any] = {
        "name": name,
        "description": spec.description or f"segshift domain {spec.name}",
        "channel_names": {"0": spec.modality or "MR"},
        "labels": new_ids,
        "numTraining": len(training),
        "file_ending": ".nii.gz",
        "segshift": {
            "domain": {k: v for k, v in spec.to_dict().items() if k != "provenance"},
            "labels": labels,
            "source": str(domain.root.resolve()),
            "split": split_source or None,
            "folds": folds_source or None,
        },
    }
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr") + (("imagesTs",) if test else ()):
            (tmp / sub).mkdir()
        for case in chosen:
            dest = tmp / ("imagesTr" if case in set(training) else "imagesTs") / f"{case}_0000.nii.gz"
            _copy_volume(domain.image_path(case), dest)
            lab = domain.label_path(case)
            if lab is not None:
                if lut is None:
                    _copy_volume(lab, tmp / "labelsTr" / f"{case}.nii.gz")
                else:
                    vol = domain.load_label(case)
                    write_nifti(tmp / "labelsTr" / f"{case}.nii.gz", lut[vol.array], vol.affine)
        write_json(tmp / "dataset.json", meta)
        if fold is not None:
            write_json(tmp / "splits_final.json", all_folds)
    return NnunetExport(dataset=folder, training=training, test=test, labels=new_ids, split=fold, notes=notes, folds=all_folds)


def _copy_volume(src: Path, dest: Path) -> None:
    """A domain's ``.nii.gz`` byte for byte; a ``.nii`` rewritten compressed (same array and affine)."""
    if src.name.endswith(".nii.gz"):
        shutil.copyfile(src, dest)
    else:
        vol = read_volume(src)
        write_nifti(dest, vol.array, vol.affine)


def splits_of(path: str | Path) -> list[Mapping[str, list[str]]]:
    """The folds of a ``splits_final.json`` (a list of ``{"train": [...], "val": [...]}``)."""
    path = Path(path)
    try:
        folds = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(path, f"unreadable ({exc})") from exc
    if not isinstance(folds, list) or not all(isinstance(f, dict) and {"train", "val"} <= set(f) for f in folds):
        raise InputFileError(path, 'expected a list of {"train": [...], "val": [...]} folds')
    return folds
