"""``segshift demo``: the main job on the embedded default (the synthetic phantom).

For now (foundation stage): generate the phantom domains, validate them, and write a figure
comparing them (montage with label contours and intensity histograms per domain).
"""

from __future__ import annotations

from pathlib import Path

import typer

DEMO_PRESETS = ("bssfp", "bssfp_vendorB", "bssfp_vendorC", "lge", "t2")


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Output folder."),
    cases: int = typer.Option(8, help="Cases per phantom domain."),
    seed: int = typer.Option(0, help="Random seed."),
    overwrite: bool = typer.Option(True, "--overwrite/--keep", help="Regenerate existing phantom domains."),
) -> None:
    """Generate the phantom domains and a figure comparing them."""
    from segshift.data.domain import Domain
    from segshift.data.phantom import generate_phantom
    from segshift.report.figures import domain_comparison_figure

    paths = generate_phantom(out / "phantom", presets=list(DEMO_PRESETS), n_cases=cases, seed=seed, overwrite=overwrite)
    domains = [Domain(p) for p in paths.values()]
    for dom in domains:
        typer.echo("  " + "; ".join(dom.validate()))
    fig = domain_comparison_figure(domains, out / "phantom_domains.png")
    typer.echo(f"figure: {fig}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
