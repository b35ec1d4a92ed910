"""``segshift phantom``: write synthetic multi-domain cardiac MR domains (no data needed)."""

from __future__ import annotations

from pathlib import Path

import typer

DEFAULT_DOMAINS = "bssfp,bssfp_vendorB,bssfp_vendorC,lge,t2"


def phantom_command(
    out: Path = typer.Option(..., "--out", help="Parent folder; each domain is written to OUT/<preset>."),
    domains: str = typer.Option(DEFAULT_DOMAINS, "--domains", help="Comma-separated preset names."),
    cases: int = typer.Option(20, "--cases", min=1, help="Cases per domain."),
    seed: int = typer.Option(0, "--seed", min=0, help="Dataset seed (same seed, same data)."),
    paired: bool = typer.Option(False, "--paired", help="Same anatomies (patients) in every domain."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing domain folders."),
) -> None:
    """Generate phantom domains (bSSFP of three vendors, LGE, T2) with exact labels."""
    from segshift.data.phantom import PRESETS, generate_phantom
    from segshift.errors import SegshiftError

    names = [d.strip() for d in domains.split(",") if d.strip()]
    if not names:
        raise SegshiftError(f"--domains is empty (available presets: {', '.join(PRESETS)})")
    unknown = [d for d in names if d not in PRESETS]
    if unknown:
        raise SegshiftError(f"unknown phantom preset(s) {', '.join(unknown)} (available: {', '.join(PRESETS)})")
    paths = generate_phantom(out, presets=names, n_cases=cases, seed=seed, paired=paired, overwrite=overwrite)
    for name, path in paths.items():
        typer.echo(f"{name}: {cases} cases -> {path}")


def register(app: typer.Typer) -> None:
    """Add the ``phantom`` command to ``app``."""
    app.command("phantom")(phantom_command)
