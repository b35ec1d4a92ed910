"""``segshift attack RUN DOMAIN --eps ... --out DIR``: the FGSM probe of Yan et al. 2019 (Fig. 1)."""

from __future__ import annotations

from pathlib import Path

import typer


def attack_command(
    run: Path = typer.Argument(..., help="Run folder written by `segshift train`."),
    domain: Path = typer.Argument(..., help="A labelled domain folder (the probe scores Dice against its labels)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for attack.csv, summary.json and examples.png."),
    eps: str = typer.Option("0,0.01,0.02,0.05,0.1,0.2", help="Comma-separated perturbation sizes (z-scored intensity units)."),
    cases: str | None = typer.Option(None, help="Only these labelled cases (comma-separated)."),
    checkpoint: str = typer.Option("best", help="best or last."),
    device: str | None = typer.Option(None, help="cpu, cuda, ... [default: GPU if available]."),
    seed: int = typer.Option(0, min=0, help="Seed of the random-sign control."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Dice against epsilon under FGSM and under random-sign perturbations of the same size."""
    from segshift.errors import SegshiftError
    from segshift.inference.attack import attack_probe, format_summary

    try:
        values = [float(e) for e in eps.split(",") if e.strip()]
    except ValueError:
        raise SegshiftError(f"--eps must be comma-separated numbers, got {eps!r}") from None
    summary = attack_probe(
        run,
        domain,
        values,
        out,
        cases=cases.split(",") if cases else None,
        checkpoint=checkpoint,
        device=device,
        seed=seed,
        overwrite=overwrite,
    )
    typer.echo(format_summary(summary))
    typer.echo(f"written to {out}")


def register(app: typer.Typer) -> None:
    app.command("attack")(attack_command)
