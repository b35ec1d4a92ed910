"""``segshift evaluate``: score predicted label maps against reference label maps."""

from __future__ import annotations

import enum
from pathlib import Path

import typer


class EmptyDistance(str, enum.Enum):
    """ASSD/HD95 of a structure present in only one of prediction and reference."""

    diagonal = "diagonal"
    nan = "nan"


def evaluate(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted label maps (<case>.nii.gz)."),
    label_dir: Path = typer.Argument(
        ..., help="Folder of reference label maps, or a domain folder (its labels/ and domain.json are used)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write per_case.csv and summary.json into."),
    labels: str | None = typer.Option(
        None,
        "--labels",
        help='Label names and ids, e.g. "LV=1,MYO=2,RV=3" (default: the domain\'s labels, else LV=1,MYO=2,RV=3).',
    ),
    label_suffix: str = typer.Option("", "--label-suffix", help="Reference files are named <case><suffix>.nii.gz, e.g. _gt."),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Score a reference without a prediction as an empty prediction instead of failing."
    ),
    cases: str | None = typer.Option(
        None, "--cases", help="Evaluate only these reference cases: a regex, or a comma-separated list of ids."
    ),
    empty_distance: EmptyDistance = typer.Option(
        EmptyDistance.diagonal,
        "--empty-distance",
        help="ASSD/HD95 when a structure is in only one map: the volume diagonal in mm, or NaN (counted as undefined).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an existing --out folder."),
) -> None:
    """Compute Dice, Jaccard, ASSD and HD95 (mm) per case and structure, and summarise them."""
    from rich.console import Console

    from segshift.data.domain import parse_label_names
    from segshift.errors import SegshiftError
    from segshift.metrics.evaluate import evaluate_folders, format_table, write_evaluation
    from segshift.utils.atomic import check_disjoint

    check_disjoint(out, [pred_dir, label_dir], "--out folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SegshiftError(f"{out}: exists and is not empty (use --overwrite to replace its per_case.csv and summary.json)")
    label_set = parse_label_names(labels) if labels is not None else None
    result = evaluate_folders(
        pred_dir,
        label_dir,
        labels=label_set,
        label_suffix=label_suffix,
        allow_missing=allow_missing,
        empty_distance=empty_distance.value,
        cases=(cases.split(",") if cases and "," in cases else cases),
    )
    csv_path, json_path = write_evaluation(result, out)
    console = Console(width=max(Console().width, 110))  # keep the table unwrapped in logs and narrow terminals
    console.print(format_table(result.summary))
    if result.missing_predictions:
        console.print(f"missing predictions scored as empty ({len(result.missing_predictions)}): " + ", ".join(result.missing_predictions))
    if result.unmatched_predictions:
        console.print(
            f"predictions without a reference, ignored ({len(result.unmatched_predictions)}): " + ", ".join(result.unmatched_predictions)
        )
    if result.ignored_label_files:
        console.print(
            f"reference-folder files not ending in {label_suffix!r}, ignored ({len(result.ignored_label_files)}): "
            + ", ".join(result.ignored_label_files)
        )
    console.print(f"{len(result.cases)} cases evaluated; wrote {csv_path} and {json_path}")


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app``."""
    app.command("evaluate")(evaluate)
