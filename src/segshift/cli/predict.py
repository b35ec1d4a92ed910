"""``segshift predict RUN INPUT --out DIR``."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def predict_command(
    run: Path = typer.Argument(..., help="Run folder written by `segshift train`, or a recipe folder written by `segshift adapt`."),
    inputs: Path = typer.Argument(..., help="A NIfTI file, a DICOM series folder, a domain folder, or a folder of volumes."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks (<case>.nii.gz, or <case>.dcm) and qc.csv."),
    checkpoint: str = typer.Option("best", help="best (model selection) or last."),
    device: str | None = typer.Option(None, help="cpu, cuda, ... [default: GPU if available]."),
    batch_size: int = typer.Option(32, min=1, max=4096, help="Slices per forward pass."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Stop at the first bad input (default: predict the others, list the bad ones in failures.csv, exit non-zero).",
    ),
    cases: str | None = typer.Option(None, "--cases", help="Only these cases: a regex, or a comma-separated list."),
    fmt: str = typer.Option(
        "nifti",
        "--format",
        help="Mask format: nifti (<case>.nii.gz, the input's header) | dicom-seg "
        "(<case>.dcm, a DICOM Segmentation referencing its source series: "
        "DICOM series inputs only; needs highdicom).",
    ),
    target_domain: str = typer.Option(
        "auto",
        "--target-domain",
        help="Whether the inputs are of the run's target domain: only then do domain-specific parts "
        "apply (a translator of cyclegan/unetgan/attent, target batch-norm statistics). auto: a domain "
        "folder is compared with the run's target; other inputs are taken to be of it (said on "
        "screen); yes | no: say so.",
    ),
    precision: str = typer.Option(
        "run",
        "--precision",
        help="run (the run's train.precision, resolved for this machine) | auto | fp32 | bf16: "
        "fp32 reproduces an fp32 export (segshift export) to 1e-4; bf16 where the CPU has it is faster.",
    ),
    tta: str | None = typer.Option(
        None,
        "--tta",
        help="Test-time adaptation per volume: none | flip (softmax averaged over 4 "
        "mirrorings) | tent (entropy minimisation on the normalisation layers' "
        "scale and shift, reset for every volume; Wang et al. ICLR 2021) "
        "[default: a recipe folder's recorded policy, else none].",
    ),
    tta_steps: int | None = typer.Option(None, "--tta-steps", help="TENT: Adam steps per volume (1-50) [default: 10]."),
    tta_lr: float | None = typer.Option(None, "--tta-lr", help="TENT: learning rate (at most 0.01) [default: 0.001]."),
    tta_alpha: float | None = typer.Option(
        None,
        "--tta-alpha",
        help="TENT: weight of the volume's own batch-norm statistics against the trained ones "
        "(0-1; 1: TENT's test-batch statistics) [default: 0.5].",
    ),
) -> None:
    """Segment volumes with a trained run; masks keep each input's exact geometry."""
    from rich.console import Console

    from segshift.bench.recipe import resolve_model
    from segshift.errors import SegshiftError
    from segshift.inference.predict_files import predict_paths
    from segshift.inference.predictor import Predictor, is_run_target
    from segshift.utils.execution import PRECISIONS

    if target_domain not in ("auto", "yes", "no"):
        raise SegshiftError(f"--target-domain must be auto, yes or no, got {target_domain!r}")
    run, tta_cfg = resolve_model(run, tta, tta_steps, tta_lr, tta_alpha)
    is_target = target_domain == "yes"
    if target_domain == "auto":
        if (inputs / "domain.json").is_file():
            is_target = is_run_target(json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}, inputs)
        else:
            is_target = True
    if precision != "run" and precision not in PRECISIONS:
        raise SegshiftError(f"--precision must be run, {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got {precision!r}")
    predictor = Predictor(
        run,
        checkpoint=checkpoint,
        device=device,
        batch_size=batch_size,
        target_domain=is_target,
        tta=tta_cfg,
        precision=None if precision == "run" else precision,
    )
    for w in predictor.warnings:
        typer.echo(f"warning: {w}", err=True)
    parts = [
        p
        for p, on in (
            ("translated to the source look", predictor.method.can_translate()),
            ("normalised with the target's batch-norm statistics", predictor.method.uses_target_norm()),
        )
        if on
    ]
    if parts and target_domain == "auto":
        target = predictor.run_info.get("target")
        if (inputs / "domain.json").is_file():
            typer.echo(
                f"{inputs} is {'' if is_target else 'not '}the run's target domain ({target}): "
                f"{' and '.join(parts) if is_target else 'none of ' + ' / '.join(parts)} (--target-domain yes|no to say otherwise)",
                err=True,
            )
        else:
            typer.echo(
                f"inputs taken to be of the run's target domain ({target}): {' and '.join(parts)}; "
                "--target-domain no for images of any other domain",
                err=True,
            )
    console = Console(stderr=True)
    with console.status("predicting") as status:
        rows = predict_paths(
            predictor,
            inputs,
            out,
            overwrite=overwrite,
            progress=lambda c: status.update(f"predicting {c}"),
            cases=(cases.split(",") if cases and "," in cases else cases),
            strict=strict,
            fmt=fmt,
        )
    tag = " (ORACLE model: trained with target labels)" if predictor.oracle else ""
    secs = sum(r["seconds"] for r in rows)
    how = f" with TTA {tta_cfg.describe()}" if tta_cfg.mode != "none" else ""
    typer.echo(f"{len(rows)} mask(s) written to {out}{tag}{how}; {secs / len(rows):.2f} s per volume; QC in {out / 'qc.csv'}")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
