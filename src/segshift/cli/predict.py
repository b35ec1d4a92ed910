"""``segshift predict RUN INPUT --out DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def predict_command(
    run: Path = typer.Argument(..., help="Run folder written by `segshift train`."),
    inputs: Path = typer.Argument(..., help="A NIfTI file, a DICOM series folder, a domain folder, or a folder of volumes."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks (<case>.nii.gz) and qc.csv."),
    checkpoint: str = typer.Option("best", help="best (model selection) or last."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... [default: GPU if available]."),
    batch_size: int = typer.Option(32, help="Slices per forward pass."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    cases: Optional[str] = typer.Option(None, "--cases", help="Only these cases: a regex, or a comma-separated list."),
    translate: bool = typer.Option(True, "--translate/--no-translate",
                                   help="Translation methods (cyclegan, unetgan, attent): translate inputs to the source look first "
                                        "(the default, for target-domain images); --no-translate segments them as they are."),
) -> None:
    """Segment volumes with a trained run; masks keep each input's exact geometry."""
    from rich.console import Console

    from segshift.inference.predict_files import predict_paths
    from segshift.inference.predictor import Predictor

    predictor = Predictor(run, checkpoint=checkpoint, device=device, batch_size=batch_size, translate=translate)
    console = Console(stderr=True)
    with console.status("predicting") as status:
        rows = predict_paths(predictor, inputs, out, overwrite=overwrite, progress=lambda c: status.update(f"predicting {c}"),
                             cases=(cases.split(",") if cases and "," in cases else cases))
    tag = " (ORACLE model: trained with target labels)" if predictor.oracle else ""
    secs = sum(r["seconds"] for r in rows)
    typer.echo(f"{len(rows)} mask(s) written to {out}{tag}; {secs / len(rows):.2f} s per volume; QC in {out / 'qc.csv'}")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
