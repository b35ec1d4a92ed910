"""``segshift report``: one self-contained HTML page of a benchmark folder."""

from __future__ import annotations

from pathlib import Path

import typer


def report_command(
    folder: Path = typer.Argument(..., help="A benchmark folder written by `segshift benchmark`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="The HTML file [default: FOLDER/report.html]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Write the tables, box plots, overlays, method figures, training curves and configs as one HTML page."""
    from segshift.report.html import write_report

    path = write_report(folder, out, overwrite=overwrite)
    typer.echo(f"report: {path}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
