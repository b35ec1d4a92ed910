"""``segshift demo``: the main job on the embedded default (the synthetic phantom)."""

from __future__ import annotations

from pathlib import Path

import typer


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Output folder."),
    cases: int = typer.Option(16, help="Cases per phantom domain."),
    test_cases: int = typer.Option(6, help="Held-out test cases per domain."),
    steps: int = typer.Option(400, help="Training steps per method."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Phantom domain shift: source-only vs target oracle, evaluated on held-out cases in mm."""
    from segshift.bench.demo import run_demo

    run_demo(out, cases=cases, test_cases=test_cases, steps=steps, seed=seed, echo=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
