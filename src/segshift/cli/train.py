"""``segshift train`` and ``segshift methods``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from segshift.errors import SegshiftError


def methods_command(
    config: str | None = typer.Option(None, "--config", help="Print this method's full default config (YAML) instead."),
    hparams: str | None = typer.Option(
        None, "--hparams", help="Print this method's hyper-parameters: key, default, allowed values, meaning."
    ),
    markdown: bool = typer.Option(False, "--markdown", help="Print every method's hyper-parameters as Markdown (docs/hparams.md)."),
) -> None:
    """List every registered method with a one-line description and its paper."""
    from segshift.methods import available_methods, get_method

    if config is not None:
        from segshift.engine.config import dump, resolve

        typer.echo(dump(resolve(config)), nl=False)
        return
    if markdown:
        from segshift.methods.hparams import markdown as md

        typer.echo(md(available_methods()), nl=False)
        return
    if hparams is not None:
        from segshift.methods.hparams import table

        rows = table(get_method(hparams).hparams)
        if not rows:
            typer.echo(f"{hparams} has no hyper-parameters of its own (the engine's config sections apply)")
        for key, default, allowed, doc in rows:
            typer.echo(f"method.{key} = {default}  ({allowed})\n    {doc}")
        return
    for name, cls in available_methods().items():
        typer.echo(f"{name:16s} {cls.describe()}")


def train_command(
    method: str = typer.Option(..., "--method", "-m", help="Method name (see `segshift methods`)."),
    source: list[Path] = typer.Option([], "--source", "-s", help="Labelled source domain folder (repeatable)."),
    target: Path | None = typer.Option(
        None, "--target", "-t", help="Target domain folder (its labels are never read, except by oracle methods)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to create."),
    config: list[Path] = typer.Option([], "--config", "-c", help="YAML config file(s) overriding the defaults."),
    set_: list[str] = typer.Option([], "--set", help="Override one value, e.g. --set train.steps=200 (repeatable)."),
    init: Path | None = typer.Option(
        None,
        "--init",
        help="Warm start: a finished run whose networks (and preprocessing, "
        "source split) this run starts from, e.g. a source-only run for an adaptation method.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    stop_after: int | None = typer.Option(
        None, "--stop-after", min=1, help="Stop (with a checkpoint) after this step; --resume continues."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 [default: GPU if available]."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Train METHOD on labelled SOURCE domain(s) and (for adaptation methods) an unlabelled TARGET."""
    from segshift.engine.config import resolve
    from segshift.engine.trainer import train
    from segshift.report.method_figures import draw_run_figures

    if resume and (config or set_ or init):
        raise SegshiftError("--resume re-uses the run's saved config.yaml; do not pass --config/--set/--init with it")
    cfg = resolve(method, config, set_)
    if init is not None:
        cfg["init"] = str(init)
    summary = train(
        cfg, source, target, out, resume=resume, overwrite=overwrite, stop_after=stop_after, device=device, progress=not no_progress
    )
    draw_run_figures(out)  # what the method learnt, from the data the finished run keeps
    tag = " [ORACLE: uses target labels]" if summary["oracle"] else ""
    start = f" from {init}" if init is not None else ""
    typer.echo(f"{summary['method']}{tag}{start}: {summary['steps_done']}/{summary['steps_total']} steps; {_selected(summary)}")
    typer.echo(f"run folder: {out}")


def _selected(summary: dict[str, Any]) -> str:
    """The summary's model selection in words: the best step and its validation Dice, or that there is none yet."""
    if summary["best_step"] is None:
        return "no validation yet, so no best model (--resume continues; predict with --checkpoint last meanwhile)"
    score = summary["best_val_mean_dice"]
    dice = f", val mean Dice {score:.4f}" if isinstance(score, float) and math.isfinite(score) else ""
    return f"best step {summary['best_step']} (selection: {summary['selection']}){dice}"


def register(app: typer.Typer) -> None:
    app.command("methods")(methods_command)
    app.command("train")(train_command)
