"""``segshift adapt``: the recommended recipe in one command (:mod:`segshift.bench.recipe`)."""

from __future__ import annotations

from pathlib import Path

import typer


def adapt_command(
    source: list[Path] = typer.Option([], "--source", "-s", help="Labelled source domain folder (repeatable)."),
    target: Path | None = typer.Option(
        None,
        "--target",
        "-t",
        help="Unlabelled target domain folder (its labels are never read). Without it the recipe generalises only.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Recipe folder to create (its stages' runs, recipe.json, target report)."),
    steps: int = typer.Option(1500, "--steps", help="Training steps of the source stage (GIN-IPA)."),
    target_steps: int = typer.Option(300, "--target-steps", help="Training steps of the target stage (self-training)."),
    target_stage: str | None = typer.Option(
        None,
        "--target-stage",
        help="With --target: self-train (adapt GIN-IPA to the unlabelled target by mean-teacher self-training) or none "
        "(the target is predicted and reported on only) [default: none; self-training did not add accuracy to GIN-IPA "
        "where measured: docs/generalisation.md].",
    ),
    config: list[Path] = typer.Option([], "--config", "-c", help="YAML config file(s) applied to every stage."),
    set_: list[str] = typer.Option([], "--set", help="Override one value in every stage, e.g. --set train.batch_size=8."),
    tta: str | None = typer.Option(
        None, "--tta", help="Prediction policy to record: none | flip | tent [default: the recipe's]. `--tta none` turns it off."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Training seed of every stage."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted recipe (finished stages are kept)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier recipe folder."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 [default: GPU if available]."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Train the recommended model for a target domain: GIN-IPA on the labelled SOURCE(s); with --target, a
    report on the target's predictions (and, with --target-stage self-train, self-training on the unlabelled TARGET first).
    """
    from segshift.bench.recipe import run_recipe

    rec = run_recipe(
        source,
        target,
        out,
        steps=steps,
        target_steps=target_steps,
        target_stage=target_stage,
        sets=set_,
        configs=config,
        tta={"mode": tta} if tta is not None else None,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        device=device,
        progress=not no_progress,
        echo=typer.echo,
    )
    typer.echo(f"model: {out / rec['model']} (predict with: segshift predict {out} IMAGES --out MASKS)")
    if rec["target"] is not None:
        typer.echo(f"target report: {out / 'target' / 'report.md'}; target masks: {out / 'target' / 'masks'}")


def register(app: typer.Typer) -> None:
    app.command("adapt")(adapt_command)
