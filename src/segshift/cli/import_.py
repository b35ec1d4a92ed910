"""``segshift import``: raw folder -> domain folder (see :mod:`segshift.data.importer`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console

from segshift.data.domain import parse_label_names
from segshift.data.importer import ImportConfig, parse_frames, parse_label_map, run_import
from segshift.data.presets import IMPORT_PRESETS, get_preset
from segshift.errors import SegshiftError


def _spacing(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise SegshiftError(f"--spacing: expected numbers like 1.25,1.25,8, got {text!r}") from exc
    if len(values) not in (2, 3) or any(v <= 0 for v in values):
        raise SegshiftError(f"--spacing: expected 2 or 3 positive numbers, got {text!r}")
    return values


def import_command(
    raw: Path = typer.Argument(..., help="Raw folder (the root that --images/--labels are relative to)."),
    out: Path = typer.Argument(..., help="Domain folder to create."),
    preset: str | None = typer.Option(
        None, help=f"Dataset preset: {', '.join(IMPORT_PRESETS)} (nnunet: RAW is an nnU-Net v2 raw dataset DatasetNNN_Name)."
    ),
    images: list[str] | None = typer.Option(None, "--images", help="Image folder(s), relative to RAW [default: RAW itself]."),
    labels: str | None = typer.Option(None, "--labels", help="Label folder (may be the image folder)."),
    unlabelled: list[str] | None = typer.Option(None, "--unlabelled", help="Folder(s) of images that have no labels."),
    image_pattern: str | None = typer.Option(None, help="Regex with (?P<case>...) matched against image names."),
    label_pattern: str | None = typer.Option(None, help="Regex with (?P<case>...) matched against label names."),
    label_suffix: str | None = typer.Option(None, help="Label name = image name + suffix, e.g. _gt."),
    case_template: str | None = typer.Option(None, help="Output case id, e.g. 'patient{case:0>2}'."),
    label_names: str | None = typer.Option(None, help="Domain label set, e.g. 'LV=1,MYO=2,RV=3' [default: cardiac]."),
    label_map: str | None = typer.Option(None, help="Raw code -> label, e.g. '500=LV,200=MYO,600=RV'."),
    frames: str | None = typer.Option(None, help="Frames to keep from 4D images, e.g. '0,12'."),
    spacing: str | None = typer.Option(None, help="Voxel size in mm for NumPy/HDF5 arrays, e.g. '1.25,1.25,8'."),
    key: str | None = typer.Option(None, help="Array name inside .npz/HDF5 files."),
    label_key: str | None = typer.Option(None, help="Label array name inside the same .npz/HDF5 file."),
    require_labels: bool | None = typer.Option(None, "--require-labels/--allow-unlabelled", help="Every image must have a label."),
    recursive: bool | None = typer.Option(None, "--recursive/--flat", help="Search folders recursively."),
    name: str | None = typer.Option(None, help="Domain name [default: OUT's folder name]."),
    sequence: str | None = typer.Option(None, help="MR sequence, e.g. bSSFP or LGE."),
    vendor: str | None = typer.Option(None, help="Scanner vendor."),
    centre: str | None = typer.Option(None, help="Centre."),
    channel: int | None = typer.Option(
        None, "--channel", min=0, help="--preset nnunet: the channel to import (files CASE_000K) of a multi-channel dataset."
    ),
    label_geometry: str | None = typer.Option(
        None,
        "--label-geometry",
        help="strict (default): a label's affine must match "
        "its image's; image: a label with the image's shape and voxel sizes but "
        "another affine lies on the image's voxel grid (listed in the report).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Import NIfTI/DICOM/NumPy/HDF5 images (and labels) into a domain folder.

    --preset nnunet reads an nnU-Net v2 raw dataset (RAW = DatasetNNN_Name with dataset.json):
    imagesTr/labelsTr become labelled cases, imagesTs unlabelled ones, labels map by name.
    """
    overrides = dict(
        images=tuple(images) if images else None,
        labels=labels,
        unlabelled=tuple(unlabelled) if unlabelled else None,
        image_pattern=image_pattern,
        label_pattern=label_pattern,
        label_suffix=label_suffix,
        case_template=case_template,
        label_names=parse_label_names(label_names) if label_names else None,
        label_map=parse_label_map(label_map) if label_map else None,
        frames=parse_frames(frames) if frames else None,
        spacing=_spacing(spacing),
        key=key,
        label_key=label_key,
        require_labels=require_labels,
        recursive=recursive,
        name=name,
        sequence=sequence,
        vendor=vendor,
        centre=centre,
        label_geometry=label_geometry,
    )
    if channel is not None and preset != "nnunet":
        raise SegshiftError("--channel chooses a channel of an nnU-Net dataset: use it with --preset nnunet")
    if preset == "nnunet":
        from segshift.data.nnunet import nnunet_import_config

        config = nnunet_import_config(raw, name or out.name, channel=channel, **{k: v for k, v in overrides.items() if k != "name"})
    elif preset is not None:
        config = get_preset(preset, **overrides)
    else:
        config = ImportConfig(name=name or out.name)
        config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    console = Console(stderr=True)
    with console.status("importing") as status:
        report = run_import(raw, out, config, overwrite=overwrite, progress=lambda c: status.update(f"importing {c}"))
    for line in report.lines():
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
