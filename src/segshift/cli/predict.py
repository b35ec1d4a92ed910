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
    translate: str = typer.Option("auto", "--translate",
                                  help="Translation methods (cyclegan, unetgan, attent) translate inputs of the run's target domain "
                                       "to the source look before segmenting. auto: a domain folder is translated only if it is the "
                                       "run's target domain; other inputs are taken to be of it (said on screen); yes | no: force."),
) -> None:
    """Segment volumes with a trained run; masks keep each input's exact geometry."""
    from rich.console import Console

    from segshift.errors import SegshiftError
    from segshift.inference.predict_files import predict_paths
    from segshift.inference.predictor import Predictor, is_run_target

    if translate not in ("auto", "yes", "no"):
        raise SegshiftError(f"--translate must be auto, yes or no, got {translate!r}")
    predictor = Predictor(run, checkpoint=checkpoint, device=device, batch_size=batch_size, translate=translate != "no")
    if translate == "auto" and predictor.method.can_translate():
        if (inputs / "domain.json").is_file():
            predictor.method.translate_at_predict = is_run_target(predictor.run_info, inputs)
            typer.echo(f"{inputs} is {'' if predictor.method.translate_at_predict else 'not '}the run's target domain: "
                       f"{'translated' if predictor.method.translate_at_predict else 'segmented untranslated'} "
                       f"(--translate yes|no to force)", err=True)
        else:
            typer.echo(f"inputs taken to be of the run's target domain ({predictor.run_info.get('target')}) and translated "
                       "to the source look first; --translate no for images of any other domain", err=True)
    console = Console(stderr=True)
    with console.status("predicting") as status:
        rows = predict_paths(predictor, inputs, out, overwrite=overwrite, progress=lambda c: status.update(f"predicting {c}"),
                             cases=(cases.split(",") if cases and "," in cases else cases))
    tag = " (ORACLE model: trained with target labels)" if predictor.oracle else ""
    secs = sum(r["seconds"] for r in rows)
    typer.echo(f"{len(rows)} mask(s) written to {out}{tag}; {secs / len(rows):.2f} s per volume; QC in {out / 'qc.csv'}")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
