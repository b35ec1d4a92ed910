"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Matching is by case name: a case is a file name with ``.nii.gz``/``.nii`` stripped. A
reference file ``X{label_suffix}.nii.gz`` matches the prediction ``X.nii.gz`` (e.g. with
``label_suffix="_gt"``, ``patient001_gt.nii.gz`` matches ``patient001.nii.gz``).

The reference folder is either a plain folder of NIfTI label maps, or a *domain folder*
(it holds ``domain.json``; see :mod:`segshift.data.domain`): then the reference maps are its
``labels/`` files and the label names come from its ``domain.json``.

Every problem with the inputs raises :class:`~segshift.errors.SegshiftError` (or
:class:`~segshift.errors.InputFileError` naming the file) before anything is written:

* a folder that does not exist or holds no NIfTI files;
* reference labels without a prediction (all are listed) - unless ``allow_missing``, in
  which case each missing prediction is scored as an all-background prediction and listed
  as missing in the summary;
* a prediction whose shape or affine differs from its reference;
* a label id, in a prediction or a reference, that is not in the label set;
* an unreadable or corrupt file.

Predictions without a reference are not an error: they are listed in
:attr:`EvaluationResult.unmatched_predictions` (and in ``summary.json``) and ignored.
Distances use the reference's voxel spacing (column norms of its affine).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segshift.data.domain import CARDIAC_LABELS, Domain, parse_label_names, to_label_array
from segshift.data.volume import Volume, read_volume, same_geometry, strip_suffix
from segshift.errors import InputFileError, SegshiftError
from segshift.metrics.stats import csv_value, is_defined, nan_to_none
from segshift.metrics.surface import EMPTY_DISTANCE_POLICIES, METRICS, case_metrics, summarise
from segshift.utils.atomic import write_text

if TYPE_CHECKING:
    from rich.table import Table

CSV_COLUMNS: tuple[str, ...] = (
    "case",
    "structure",
    "dice",
    "jaccard",
    "assd_mm",
    "hd95_mm",
    "pred_voxels",
    "ref_voxels",
    "status",
)
"""Columns of ``per_case.csv``, in order."""

SUMMARY_FORMAT = "segshift-evaluation"


@dataclasses.dataclass
class EvaluationResult:
    """Everything :func:`evaluate_folders` computed; :func:`write_evaluation` writes it.

    Attributes:
        rows: one dict per (case, structure), with the keys of :data:`CSV_COLUMNS`.
        summary: :func:`segshift.metrics.surface.summarise` of ``rows``.
        labels: the label set used (name -> id, background included).
        cases: evaluated cases, sorted (missing predictions included).
        unmatched_predictions: prediction files with no reference, ignored.
        missing_predictions: cases whose prediction was missing and scored as empty
            (only with ``allow_missing``).
        ignored_label_files: files in the reference folder whose name does not end with
            ``label_suffix`` (so they are not reference labels), ignored.
        empty_distance: the policy for structures present in only one map.
        pred_dir: the prediction folder.
        label_dir: the reference folder.
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    labels: dict[str, int]
    cases: list[str]
    unmatched_predictions: list[str] = dataclasses.field(default_factory=list)
    missing_predictions: list[str] = dataclasses.field(default_factory=list)
    ignored_label_files: list[str] = dataclasses.field(default_factory=list)
    empty_distance: str = "diagonal"
    pred_dir: str = ""
    label_dir: str = ""

    def to_json(self) -> dict[str, Any]:
        """The content of ``summary.json`` (NaN written as ``null``)."""
        doc: dict[str, Any] = nan_to_none(
            {
                "format": SUMMARY_FORMAT,
                "version": 1,
                "pred_dir": self.pred_dir,
                "label_dir": self.label_dir,
                "labels": self.labels,
                "empty_distance": self.empty_distance,
                "empty_distance_meaning": (
                    "structures present in only one of prediction/reference get ASSD = HD95 = the volume diagonal in mm"
                    if self.empty_distance == "diagonal"
                    else "structures present in only one of prediction/reference get ASSD = HD95 = NaN, "
                    "excluded from mean/std and counted in n_nan"
                ),
                "std": "population standard deviation (ddof=0)",
                "cases": self.cases,
                "unmatched_predictions": self.unmatched_predictions,
                "missing_predictions": self.missing_predictions,
                "ignored_label_files": self.ignored_label_files,
                "summary": self.summary,
            }
        )
        return doc


def _nifti_files(folder: Path, what: str) -> list[Path]:
    if not folder.exists():
        raise InputFileError(folder, f"{what} folder does not exist")
    if not folder.is_dir():
        raise InputFileError(folder, f"{what} folder is not a folder")
    files = [
        p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith((".nii.gz", ".nii"))
    ]
    if not files:
        raise InputFileError(folder, f"{what} folder holds no .nii/.nii.gz files")
    return files


def _by_case(files: list[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in files:
        case = strip_suffix(path.name)
        if case in out:
            raise InputFileError(folder, f"two files for case {case!r}: {out[case].name} and {path.name}")
        out[case] = path
    return out


def _read_label_map(path: Path, labels: Mapping[str, int], role: str) -> Volume:
    vol = read_volume(path)
    if vol.array.ndim != 3:
        raise InputFileError(path, f"{role} label maps must be 3D, got shape {vol.array.shape}")
    vol.array = to_label_array(vol.array, path)
    unknown = sorted(set(np.unique(vol.array).tolist()) - set(labels.values()))
    if unknown:
        raise InputFileError(path, f"{role} contains label ids {unknown} that are not in the label set {dict(labels)}")
    return vol


def evaluate_folders(
    pred_dir: str | Path,
    label_dir: str | Path,
    labels: Mapping[str, int] | None = None,
    label_suffix: str = "",
    allow_missing: bool = False,
    empty_distance: str = "diagonal",
    cases: str | Sequence[str] | None = None,
) -> EvaluationResult:
    """Score every prediction that has a reference label map.

    Args:
        pred_dir: folder of predicted label maps (``<case>.nii.gz``/``.nii``).
        label_dir: folder of reference label maps, or a domain folder (with
            ``domain.json``), whose ``labels/`` are used.
        labels: structure name -> id (background 0 is added if absent). Defaults to the
            domain's labels for a domain folder, else
            :data:`segshift.data.domain.CARDIAC_LABELS`. With a domain folder, a given
            ``labels`` must equal the domain's.
        label_suffix: reference files are named ``<case>{label_suffix}.nii.gz``. Must be
            empty for a domain folder.
        allow_missing: score a reference without a prediction as an all-background
            prediction (listed in ``missing_predictions``) instead of raising.
        empty_distance: ``"diagonal"`` or ``"nan"``; see :mod:`segshift.metrics.surface`.
        cases: evaluate only these reference cases (a list of ids or a regex matched in
            full), e.g. the held-out cases of a domain; the others are ignored, and a
            chosen case without prediction is still missing.

    Returns:
        The per-case rows, their summary and the bookkeeping lists. Nothing is written.

    Raises:
        SegshiftError: on any problem with the inputs (see the module docstring); file
            problems are :class:`~segshift.errors.InputFileError` naming the file.
    """
    if empty_distance not in EMPTY_DISTANCE_POLICIES:
        raise SegshiftError(f"empty distance policy must be one of {', '.join(EMPTY_DISTANCE_POLICIES)}, got {empty_distance!r}")
    pred_dir = Path(pred_dir)
    label_dir = Path(label_dir)
    label_set = parse_label_names(labels) if labels is not None else None
    ignored: list[str] = []

    if (label_dir / "domain.json").is_file():
        domain = Domain(label_dir)
        if label_suffix:
            raise SegshiftError(f"{label_dir}: is a domain folder; its labels/ are named like its images, so no label suffix applies")
        if label_set is not None and label_set != domain.spec.labels:
            raise SegshiftError(f"labels {label_set} differ from {label_dir / 'domain.json'} labels {domain.spec.labels}")
        label_set = dict(domain.spec.labels)
        # every labelled case has a label path; the walrus narrows Path | None for the type checker
        references: dict[str, Path] = {c: p for c in domain.labelled_cases if (p := domain.label_path(c)) is not None}
        if not references:
            raise InputFileError(label_dir / "labels", "domain folder has no label files to evaluate against")
    else:
        if label_set is None:
            label_set = dict(CARDIAC_LABELS)
        references = {}
        for case, path in _by_case(_nifti_files(label_dir, "reference label"), label_dir).items():
            if label_suffix and not case.endswith(label_suffix):
                ignored.append(path.name)
                continue
            references[case[: len(case) - len(label_suffix)]] = path
        if not references:
            raise InputFileError(label_dir, f"no reference label file ends with the suffix {label_suffix!r}")
    if cases is not None:
        from segshift.engine.splits import select

        references = {c: references[c] for c in select(sorted(references), cases, "cases")}
    predictions = _by_case(_nifti_files(pred_dir, "prediction"), pred_dir)

    unmatched = sorted(predictions[c].name for c in set(predictions) - set(references))
    missing = sorted(set(references) - set(predictions))
    if missing and not allow_missing:
        listed = ", ".join(f"{c} ({references[c].name})" for c in missing)
        raise InputFileError(
            pred_dir,
            f"no prediction for {len(missing)} reference label(s): {listed}; "
            "expected <case>.nii.gz here (or allow missing predictions to score them as empty)",
        )

    rows: list[dict[str, Any]] = []
    for case in sorted(references):
        ref = _read_label_map(references[case], label_set, "reference")
        if case in predictions:
            pred_path = predictions[case]
            pred = _read_label_map(pred_path, label_set, "prediction")
            if pred.shape != ref.shape:
                raise InputFileError(pred_path, f"shape {pred.shape} differs from its reference {references[case]} shape {ref.shape}")
            if not same_geometry(pred, ref):
                raise InputFileError(
                    pred_path,
                    f"affine differs from its reference {references[case]} "
                    f"(prediction:\n{np.round(pred.affine, 4)}\nreference:\n{np.round(ref.affine, 4)})",
                )
            pred_array = pred.array
        else:
            pred_array = np.zeros_like(ref.array)
        for row in case_metrics(pred_array, ref.array, ref.spacing, label_set, empty_distance):
            rows.append({"case": case, **row})

    return EvaluationResult(
        rows=rows,
        summary=summarise(rows, label_set),
        labels=label_set,
        cases=sorted(references),
        unmatched_predictions=unmatched,
        missing_predictions=missing,
        ignored_label_files=ignored,
        empty_distance=empty_distance,
        pred_dir=str(pred_dir),
        label_dir=str(label_dir),
    )


def per_case_csv(result: EvaluationResult) -> str:
    """The text of ``per_case.csv`` (floats at full precision, NaN as ``nan``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in result.rows:
        writer.writerow([csv_value(row[col]) for col in CSV_COLUMNS])
    return buf.getvalue()


def write_evaluation(result: EvaluationResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``per_case.csv`` and ``summary.json`` into ``out_dir`` (each atomically).

    Both texts are built before either file is written.

    Args:
        result: what :func:`evaluate_folders` returned.
        out_dir: destination folder (created if needed; existing files are replaced).

    Returns:
        The paths of ``per_case.csv`` and ``summary.json``.
    """
    import json

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(out_dir, "output path exists and is not a folder")
    csv_text = per_case_csv(result)
    json_text = json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n"
    csv_path, json_path = out_dir / "per_case.csv", out_dir / "summary.json"
    write_text(csv_path, csv_text)
    write_text(json_path, json_text)
    return csv_path, json_path


_HEADERS = {"dice": "Dice", "jaccard": "Jaccard", "assd_mm": "ASSD (mm)", "hd95_mm": "HD95 (mm)"}


def _cell(stats: Mapping[str, Any], digits: int) -> str:
    mean, std = stats.get("mean"), stats.get("std")
    if not is_defined(mean):
        text = "n/a"
    else:
        text = f"{mean:.{digits}f} ± {std:.{digits}f}"
    if stats.get("n_nan"):
        text += f" ({stats['n_nan']} NaN)"
    return text


def format_table(summary: Mapping[str, Any]) -> Table:
    """A rich table of a summary: one row per structure and one overall row.

    Args:
        summary: :attr:`EvaluationResult.summary` (as from :func:`summarise`).

    Returns:
        A :class:`rich.table.Table` with columns Structure, Dice, Jaccard, ASSD (mm),
        HD95 (mm) (each ``mean ± std``, followed by ``(k NaN)`` when ``k`` undefined
        values were excluded) and n (cases).
    """
    from rich.table import Table

    table = Table(title="Evaluation")
    table.add_column("Structure")
    for metric in METRICS:
        table.add_column(_HEADERS[metric], justify="right")
    table.add_column("n", justify="right")
    entries = list(summary["structures"].items()) + [("overall", summary["overall"])]
    for i, (name, entry) in enumerate(entries):
        cells = [_cell(entry[m], 3 if m in ("dice", "jaccard") else 2) for m in METRICS]
        table.add_row(name, *cells, str(entry["n_cases"]), end_section=(i == len(entries) - 2))
    return table
