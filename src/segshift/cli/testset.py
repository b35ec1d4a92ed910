"""``segshift test RUN DOMAIN --out DIR``: predict a labelled test set and evaluate it, in one step."""

from __future__ import annotations

from pathlib import Path

import typer


def testset_command(
    run: Path = typer.Argument(
        ...,
        help="Run folder written by `segshift train` (or a benchmark run's train/ folder), or a recipe folder written by `segshift adapt`.",
    ),
    domain: Path = typer.Argument(..., help="A domain folder with labels (domain.json, images/, labels/)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for predictions/ (masks, qc.csv) and evaluation/ (per_case.csv, summary.json)."
    ),
    cases: str | None = typer.Option(
        None, "--cases", help="Only these cases: a regex, or a comma-separated list (default: every labelled case)."
    ),
    target_domain: str = typer.Option(
        "auto",
        "--target-domain",
        help="Whether DOMAIN is the run's target domain, so that its translator and target "
        "batch-norm statistics apply: auto (compare with the run's target), yes, no.",
    ),
    tta: str | None = typer.Option(
        None,
        "--tta",
        help="Test-time adaptation per volume: none | flip | tent (see `segshift predict`) "
        "[default: a recipe folder's recorded policy, else none].",
    ),
    tta_steps: int | None = typer.Option(None, "--tta-steps", help="TENT: Adam steps per volume (1-50) [default: 10]."),
    tta_lr: float | None = typer.Option(None, "--tta-lr", help="TENT: learning rate (at most 0.01) [default: 0.001]."),
    tta_alpha: float | None = typer.Option(
        None, "--tta-alpha", help="TENT: weight of the volume's own batch-norm statistics (0-1) [default: 0.5]."
    ),
    checkpoint: str = typer.Option("best", help="best (model selection) or last."),
    device: str | None = typer.Option(None, help="cpu, cuda, ... [default: GPU if available]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an existing --out folder."),
) -> None:
    """Predict DOMAIN's labelled cases with RUN and score them (Dice, Jaccard, ASSD, HD95 in mm).

    The same prediction and evaluation as every benchmark run (segshift.bench.pipeline).
    """
    from rich.console import Console

    from segshift.bench.pipeline import predict_and_evaluate
    from segshift.bench.recipe import resolve_model
    from segshift.errors import SegshiftError
    from segshift.metrics.evaluate import format_table

    if target_domain not in ("auto", "yes", "no"):
        raise SegshiftError(f"--target-domain must be auto, yes or no, got {target_domain!r}")
    run, tta_cfg = resolve_model(run, tta, tta_steps, tta_lr, tta_alpha)
    forced = None if target_domain == "auto" else target_domain == "yes"
    res = predict_and_evaluate(
        run,
        domain,
        cases.split(",") if cases and "," in cases else cases,
        out,
        device=device,
        tta=tta_cfg if tta_cfg.mode != "none" else None,
        target_domain=forced,
        checkpoint=checkpoint,
        overwrite=overwrite,
    )
    for w in res.warnings:
        typer.echo(f"warning: {w}", err=True)
    Console(width=max(Console().width, 110)).print(format_table(res.summary))  # unwrapped in logs, as `segshift evaluate`
    how = f" with TTA {tta_cfg.describe()}" if tta_cfg.mode != "none" else ""
    target = (
        "its target domain: translator / target statistics applied where the method has them"
        if res.translate
        else "not its target domain: segmented as source-like"
    )
    typer.echo(
        f"{len(res.test.cases)} case(s) of {res.test.domain} ({target}){how}: mean Dice {res.mean_dice:.3f}; "
        f"wrote {out / 'predictions'} and {out / 'evaluation'}"
    )


def register(app: typer.Typer) -> None:
    app.command("test")(testset_command)
