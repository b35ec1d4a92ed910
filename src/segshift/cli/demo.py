"""``segshift demo``: the main job on the embedded default (the synthetic phantom)."""

from __future__ import annotations

from pathlib import Path

import typer


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Output folder."),
    cases: int = typer.Option(16, min=4, help="Cases per phantom domain."),
    test_cases: int = typer.Option(6, min=1, help="Held-out test cases per domain."),
    steps: int = typer.Option(400, min=1, help="Training steps of source-only (the init) and of the oracle."),
    adapt_steps: int = typer.Option(200, "--adapt-steps", min=1, help="Steps of the adaptation stage, warm-started from the init."),
    method: str = typer.Option(None, "--method", help="Adaptation method [default: the demo's, chosen on the phantom]."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
) -> None:
    """Phantom domain shift: source-only (the init), an adaptation method warm-started from it, and the target oracle,
    evaluated on held-out cases in mm, with the gap and how much of it adaptation recovers.
    """
    from segshift.bench.demo import DEMO_METHOD, run_demo
    from segshift.report.figures import domain_comparison_figure

    run_demo(
        out,
        cases=cases,
        test_cases=test_cases,
        steps=steps,
        adapt_steps=adapt_steps,
        method=method or DEMO_METHOD,
        seed=seed,
        echo=typer.echo,
        figure=domain_comparison_figure,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
