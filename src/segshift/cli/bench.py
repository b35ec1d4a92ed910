"""``segshift bench speed``: training/inference throughput and achieved FLOP/s per network."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks of this machine (run them on a quiet machine).",
    no_args_is_help=True,
    add_completion=False,
)


@bench_app.command("speed")
def speed_command(
    nets: str = typer.Option("unet,resunet,attention_unet", help="Comma-separated network names."),
    size: int = typer.Option(160, min=8, help="Slice height and width."),
    batch: int = typer.Option(16, min=1, help="Slices per training step."),
    iters: int = typer.Option(20, min=1, help="Timed steps (the median is reported)."),
    warmup: int = typer.Option(5, min=0, help="Untimed steps before them."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads [default: torch's choice]."),
    compile_: bool = typer.Option(False, "--compile/--no-compile", help="Add the torch.compile variants."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... [default: GPU if available]."),
    slices: int = typer.Option(10, min=1, help="Slices per cine volume for the inference timing."),
    peak_size: int = typer.Option(2048, min=64, help="n of the n x n peak matmul."),
    run: Optional[Path] = typer.Option(None, help="A run folder to time end to end (with --volume)."),
    volume: Optional[Path] = typer.Option(None, help="A NIfTI volume for --run."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write every figure to this JSON file."),
) -> None:
    """Training slices/s (fp32, bf16, bf16+channels_last[, +compile]), GFLOP/s vs peak, inference s/volume."""
    from segshift.bench.speed import format_report, run_speed_bench
    from segshift.utils.atomic import write_json

    names = [n.strip() for n in nets.split(",") if n.strip()]
    result = run_speed_bench(
        names,
        size=size,
        batch=batch,
        iters=iters,
        warmup=warmup,
        threads=threads,
        compile=compile_,
        device=device,
        slices=slices,
        run=run,
        volume=volume,
        peak_n=peak_size,
        progress=lambda msg: typer.echo(f"... {msg}", err=True),
    )
    typer.echo(format_report(result))
    if json_out is not None:
        write_json(json_out, result)
        typer.echo(f"results written to {json_out}")
    if result["errors"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
