"""``segshift export``: a trained model for other runtimes, or a domain as an nnU-Net dataset.

Two forms::

    segshift export RUN --format onnx|torchscript OUT      # the model (segshift.inference.export)
    segshift export nnunet DOMAIN OUT --id N --name NAME   # an nnU-Net v2 raw dataset (segshift.data.nnunet)
"""

from __future__ import annotations

from pathlib import Path

import typer

from segshift.errors import SegshiftError


def export_command(
    first: str = typer.Argument(
        ..., metavar="RUN|nnunet", help="A run or `segshift adapt` recipe folder (model export), or the word nnunet."
    ),
    second: Path = typer.Argument(..., metavar="OUT|DOMAIN", help="Model export: the folder to write. nnunet: the domain."),
    third: Path | None = typer.Argument(None, metavar="[OUT]", help="nnunet: the nnUNet_raw folder to write DatasetNNN_NAME into."),
    fmt: str | None = typer.Option(None, "--format", "-f", help="Model export: onnx | torchscript."),
    checkpoint: str = typer.Option("best", help="Model export: best (model selection) or last."),
    target_domain: str = typer.Option(
        "yes",
        "--target-domain",
        help="Model export: yes (default): the model is for "
        "images of the run's target domain, so a translator (cyclegan, unetgan, attent) "
        "and target batch-norm statistics are part of the graph where the method has them; "
        "no: the segmenter alone, for images of any other domain.",
    ),
    dataset_id: int | None = typer.Option(None, "--id", help="nnunet: the dataset id (1-999)."),
    name: str | None = typer.Option(None, "--name", help="nnunet: the dataset name (DatasetNNN_NAME)."),
    cases: str | None = typer.Option(None, "--cases", help="nnunet: only these cases (a regex or a comma-separated list)."),
    run: Path | None = typer.Option(
        None,
        "--run",
        help="nnunet: take the train/validation split recorded in this "
        "run's run.json (default: segshift's split of the exported "
        "labelled cases with --val-fraction and --seed).",
    ),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", min=0.0, max=0.9, help="nnunet: validation share (default: data.val_fraction of base.yaml)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="nnunet: seed of the split and of folds 1-4 (default: seed of base.yaml)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Export a trained model (ONNX/TorchScript, with its preprocessing) or a domain as an nnU-Net dataset.

    segshift export RUN --format onnx|torchscript OUT: the prediction path as one fp32 graph (docs/export.md).

    segshift export nnunet DOMAIN OUT --id N --name NAME: OUT/DatasetNNN_NAME with splits_final.json (five folds
    grouped by patient; fold 0 is segshift's split).
    """
    nn_opts = {"--id": dataset_id, "--name": name, "--cases": cases, "--run": run, "--val-fraction": val_fraction, "--seed": seed}
    if first == "nnunet":
        if third is None:
            raise SegshiftError("usage: segshift export nnunet DOMAIN OUT --id N --name NAME (OUT is missing)")
        if fmt is not None:
            raise SegshiftError("--format is for a model export (segshift export RUN --format onnx OUT), not nnunet")
        _nnunet(second, third, dataset_id, name, cases, run, val_fraction, seed, overwrite)
        return
    if third is not None:
        raise SegshiftError(
            f"usage: segshift export RUN --format onnx|torchscript OUT (got a third argument {third}; "
            "for a domain: segshift export nnunet DOMAIN OUT)"
        )
    given = [k for k, v in nn_opts.items() if v is not None]
    if given:
        raise SegshiftError(f"{', '.join(given)} belong to segshift export nnunet DOMAIN OUT, not to a model export")
    if fmt is None:
        raise SegshiftError("a model export needs --format onnx or --format torchscript")
    if target_domain not in ("yes", "no"):
        raise SegshiftError(f"--target-domain must be yes or no, got {target_domain!r}")
    from segshift.bench.recipe import is_recipe, model_folder
    from segshift.inference.export import export_model

    run_dir = Path(first)
    if is_recipe(run_dir):  # segshift adapt's folder: export the model it predicts with
        run_dir, recorded = model_folder(run_dir)
        if recorded.get("mode", "none") != "none":
            typer.echo(
                f"warning: the recipe's prediction policy (--tta {recorded['mode']}) is not part of an exported graph; "
                "apply it yourself, or use segshift predict",
                err=True,
            )
    report = export_model(run_dir, second, fmt=fmt, checkpoint=checkpoint, target_domain=target_domain == "yes", overwrite=overwrite)
    for w in report.warnings:
        typer.echo(f"warning: {w}", err=True)
    for line in report.lines():
        typer.echo(line)


def _nnunet(
    domain_dir: Path,
    out: Path,
    dataset_id: int | None,
    name: str | None,
    cases: str | None,
    run: Path | None,
    val_fraction: float | None,
    seed: int | None,
    overwrite: bool,
) -> None:
    from segshift.data.domain import Domain
    from segshift.data.nnunet import export_nnunet
    from segshift.engine.config import base_defaults
    from segshift.engine.splits import group_folds, recorded_split, select, split

    if dataset_id is None or name is None:
        raise SegshiftError("segshift export nnunet needs --id N and --name NAME (the dataset becomes DatasetNNN_NAME)")
    domain = Domain(domain_dir)
    chosen = select(domain.cases, cases.split(",") if cases and "," in cases else cases, "--cases")
    labelled = [c for c in chosen if domain.label_path(c) is not None]
    base = base_defaults()
    sd = int(base["seed"]) if seed is None else seed
    if run is not None:
        if val_fraction is not None or seed is not None:
            raise SegshiftError("--run takes the run's recorded split: drop --val-fraction/--seed")
        parts = recorded_split(run, domain.root, domain.identity())
        source = f"run {Path(run).resolve()} (run.json plan)"
    elif labelled:
        vf = float(base["data"]["val_fraction"]) if val_fraction is None else val_fraction
        parts = split(labelled, vf, sd, what=domain.name)
        source = f"segshift.engine.splits.split(val_fraction={vf:g}, seed={sd})"
    else:
        parts, source = None, ""
    folds = group_folds(labelled, 4, sd) if parts is not None else []
    report = export_nnunet(
        domain,
        out,
        dataset_id,
        name,
        cases=chosen,
        split=parts,
        split_source=source,
        overwrite=overwrite,
        folds=folds,
        folds_source=f"folds 1-{len(folds)}: segshift.engine.splits.group_folds(k=4, seed={sd})" if folds else "",
    )
    for line in report.lines():
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
