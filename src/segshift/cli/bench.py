"""``segshift bench speed`` and ``segshift bench profile``: the performance measurements of :mod:`segshift.perf`."""

from __future__ import annotations

from pathlib import Path

import typer

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks of this machine (run them on a quiet machine).",
    no_args_is_help=True,
    add_completion=False,
)


@bench_app.command("speed")
def speed_command(
    nets: str | None = typer.Option(None, help="Comma-separated network names [default: every segmentation network (segshift.nets.NETS)]."),
    size: int = typer.Option(160, min=8, help="Slice height and width."),
    batch: int = typer.Option(16, min=1, help="Slices per training step."),
    iters: int = typer.Option(20, min=1, help="Timed steps (the median is reported)."),
    warmup: int = typer.Option(5, min=0, help="Untimed steps before them."),
    threads: int | None = typer.Option(None, min=1, help="torch CPU threads [default: torch's choice]."),
    compile_: bool = typer.Option(False, "--compile/--no-compile", help="Add the torch.compile variants."),
    device: str | None = typer.Option(None, help="cpu, cuda, ... [default: GPU if available]."),
    slices: int = typer.Option(10, min=1, help="Slices per cine volume for the inference timing."),
    peak_size: int = typer.Option(2048, min=64, help="n of the n x n peak matmul."),
    run: Path | None = typer.Option(None, help="A run folder to time end to end (with --volume)."),
    volume: Path | None = typer.Option(None, help="A NIfTI volume for --run."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write every figure to this JSON file."),
) -> None:
    """Training slices/s (fp32, bf16, bf16+channels_last[, +compile]), GFLOP/s vs peak, inference s/volume."""
    from segshift.perf.speed import format_report, run_speed_bench
    from segshift.utils.atomic import write_json

    names = None if nets is None else [n.strip() for n in nets.split(",") if n.strip()]
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


@bench_app.command("profile")
def profile_command(
    method: str = typer.Option(..., "--method", "-m", help="Method name (see `segshift methods`)."),
    source: list[Path] = typer.Option([], "--source", "-s", help="Labelled source domain (repeatable)."),
    target: Path | None = typer.Option(None, "--target", "-t", help="Target domain (methods that adapt)."),
    steps: int = typer.Option(10, min=1, help="Counted training steps."),
    warmup: int = typer.Option(2, min=0, help="Steps run before them, not counted."),
    config: list[Path] = typer.Option([], "--config", "-c", help="YAML config file(s)."),
    set_: list[str] = typer.Option([], "--set", help="Override one value (repeatable), as for `segshift train`."),
    torch_profile: bool = typer.Option(False, "--torch-profile", help="Also run torch.profiler and list the top operators."),
    trace: Path | None = typer.Option(None, "--trace", help="With --torch-profile: write a Chrome trace here."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, ... [default: GPU if available]."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the profile to this JSON file."),
) -> None:
    """Where a training step's time goes: data, augmentation, each network's forward and backward,
    the optimisers, validation and checkpoints (trains a few steps in a temporary folder).
    """
    from segshift.errors import SegshiftError
    from segshift.perf.profile import format_profile, profile_method
    from segshift.utils.atomic import write_json

    if not source:
        raise SegshiftError("give at least one --source domain (e.g. one made by `segshift phantom`)")
    result = profile_method(
        method,
        source,
        target,
        steps=steps,
        warmup=warmup,
        config_files=config,
        sets=set_,
        device=device,
        torch_profile=torch_profile or trace is not None,
        trace=trace,
    )
    typer.echo(format_profile(result))
    if json_out is not None:
        write_json(json_out, result)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
