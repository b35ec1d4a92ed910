"""``segshift check DOMAIN``: validate a domain folder against the contract."""

from __future__ import annotations

from pathlib import Path

import typer

from segshift.data.domain import Domain


def check_command(domain: Path = typer.Argument(..., help="Domain folder to validate.")) -> None:
    """Read every case of a domain folder and check the contract (geometry, label ids, finiteness)."""
    for line in Domain(domain).validate():
        typer.echo(line)
    typer.echo("ok")


def register(app: typer.Typer) -> None:
    app.command("check")(check_command)
