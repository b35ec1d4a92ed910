"""``segshift benchmark``: run (or continue) a suite of tasks x methods x seeds."""

from __future__ import annotations

from pathlib import Path

import typer

from segshift.bench.suite import builtin_suites


def benchmark_command(
    suite: str = typer.Argument(..., help=f"Suite YAML file, or a built-in suite: {', '.join(builtin_suites())}."),
    out: Path = typer.Option(..., "--out", "-o", help="Benchmark folder (re-run the same command to continue it)."),
    root: Path | None = typer.Option(None, "--root", help="Resolve relative domain paths against this folder."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 [default: GPU if available]."),
    plan: bool = typer.Option(False, "--plan", help="Check the suite and list its runs; train nothing."),
) -> None:
    """Train, predict and evaluate every run of SUITE not done yet, then write the tables (OUT/results/)."""
    from segshift.bench.runner import run_benchmark
    from segshift.bench.suite import load_suite
    from segshift.report.method_figures import draw_figures_under

    doc = run_benchmark(load_suite(suite, root), out, device=device, echo=typer.echo, only_plan=plan)
    if plan:
        for r in doc["runs"]:
            what = f"skipped: {r['skipped']}" if r["skipped"] else r["folder"]
            mark = " [ORACLE]" if r["oracle"] else " [INIT]" if r.get("role") == "init" else ""
            steps = "" if r["skipped"] else f"  ({r['steps']} steps" + (f", warm-started from {r['init']})" if r.get("init") else ")")
            if r.get("shares_training"):
                steps = f"  (no training: the model of {r['shares_training']}, predicted with TTA {r['tta']['mode']})"
            typer.echo(f"{r['key']}{mark}  {what}{steps}")
        return
    draw_figures_under(out / "runs")  # the methods' figures, from the data each finished run keeps
    typer.echo(f"tables: {out / 'results' / 'results.md'}; report: segshift report {out}")


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark_command)
