"""``segshift adapt``: the recommended recipe, as ordinary runs chained into stages.

1. **Source stage**: :data:`SOURCE_METHOD` (GIN-IPA, Ouyang et al. IEEE TMI 2022) trained from
   scratch on the labelled source domain(s): a model that generalises to unseen domains.
2. **Target stage** (with ``--target`` and ``target_stage="self-train"`` only): :data:`TARGET_METHOD`,
   warm-started from stage 1 (``init``), on the *unlabelled* target images: target batch-norm
   statistics and confidence-filtered pseudo-labels from a mean teacher (``methods/self_train.py``).
   Off by default (:data:`DEFAULT_TARGET_STAGE`): on a GIN-IPA model it did not add accuracy on
   real LGE (3 seeds) or on the phantom (docs/generalisation.md, "What each ingredient was
   measured to add"); the target then serves the report (4.) only.
3. **Prediction policy**: the test-time adaptation the recipe records (:data:`RECIPE_TTA`),
   used by ``segshift predict RUN`` unless ``--tta`` says otherwise.
4. **Target report** (with ``--target``): the target images predicted in their own geometry,
   and per case the structure volumes against the source labels' distribution, the
   prediction entropy and a flag (:mod:`segshift.bench.qc`'s label-free scores). No target
   label is read, by training, model selection or the report.

Each stage is a run folder (``RUN/1-source``, ``RUN/2-target``) that resumes on its own;
``RUN/recipe.json`` records the plan, and the model to predict with (``model``: the last
stage's folder). Model selection: source validation Dice for stage 1, the last step for
the warm-started stage 2 (the engine's ``train.select: auto``); never target labels.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segshift.errors import InputFileError, SegshiftError
from segshift.utils.atomic import atomic_dir, check_disjoint, write_json, write_text

RECIPE_VERSION = 1
"""Version of ``recipe.json``'s layout."""
SOURCE_METHOD = "gin-ipa"
"""Stage 1: domain generalisation from the labelled source(s)."""
TARGET_METHOD = "self-train"
"""Stage 2: adaptation to the unlabelled target, warm-started from stage 1."""
TARGET_STAGES = ("none", TARGET_METHOD)
"""The choices of ``--target-stage``: no target stage, or :data:`TARGET_METHOD`."""
DEFAULT_TARGET_STAGE = "none"
"""No target stage unless asked: it did not add accuracy to a GIN-IPA model where measured."""
SOURCE_STEPS = 1500
"""Stage 1's training steps (the engine's default configuration otherwise)."""
TARGET_STEPS = 300
"""Stage 2's training steps."""
TARGET_STAGE_SET = ["train.lr=0.0001"]
"""Stage 2 fine-tunes: a tenth of the source stage's learning rate (as every staged suite row)."""
RECIPE_TTA: dict[str, Any] = {"mode": "none"}
"""The prediction policy recorded in ``recipe.json`` (``segshift predict RUN`` uses it by default)."""
FLAG_VOLUME_Z = 3.0
"""A target case is flagged when a structure's log volume lies this many source standard deviations away."""
RECIPE_FILE = "recipe.json"
STAGE_FOLDERS = {"source": "1-source", "target": "2-target"}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the recipe: a ``segshift train`` run inside the recipe folder."""

    name: str
    method: str
    steps: int
    sets: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        return STAGE_FOLDERS[self.name]


def plan(
    target: bool, steps: int = SOURCE_STEPS, target_steps: int = TARGET_STEPS, target_stage: str = DEFAULT_TARGET_STAGE
) -> list[Stage]:
    """The recipe's stages: the source stage, then the target stage when there is a target and ``target_stage`` names one."""
    if steps < 1 or target_steps < 1:
        raise SegshiftError(f"--steps and --target-steps must be at least 1, got {steps} and {target_steps}")
    if target_stage not in TARGET_STAGES:
        raise SegshiftError(f"--target-stage must be one of {', '.join(TARGET_STAGES)}, got {target_stage!r}")
    if target_stage != "none" and not target:
        raise SegshiftError(f"--target-stage {target_stage} adapts to a target: give --target")
    stages = [Stage("source", SOURCE_METHOD, steps)]
    if target and target_stage != "none":
        stages.append(Stage("target", TARGET_METHOD, target_steps, tuple(TARGET_STAGE_SET)))
    return stages


def is_recipe(folder: str | Path) -> bool:
    """Whether ``folder`` was written by ``segshift adapt``."""
    return (Path(folder) / RECIPE_FILE).is_file()


def read_recipe(folder: str | Path) -> dict[str, Any]:
    """``recipe.json`` of a recipe folder (a clear error when it is missing or unreadable)."""
    path = Path(folder) / RECIPE_FILE
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputFileError(folder, f"is not a segshift adapt folder (no {RECIPE_FILE})") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(path, f"unreadable ({exc})") from exc
    if not isinstance(rec, dict) or rec.get("version") != RECIPE_VERSION or not isinstance(rec.get("stages"), list):
        raise InputFileError(path, f"is not a version-{RECIPE_VERSION} recipe record; re-run segshift adapt into a new folder")
    return rec


def model_folder(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    """The run folder a recipe predicts with, and its recorded TTA (``{"mode": ...}``)."""
    rec = read_recipe(folder)
    if not rec.get("finished"):
        raise InputFileError(folder, "is an unfinished segshift adapt run: continue it with segshift adapt --resume --out FOLDER")
    return Path(folder) / rec["model"], dict(rec.get("tta") or {"mode": "none"})


def resolve_model(
    run: str | Path, tta: str | None, steps: int | None = None, lr: float | None = None, alpha: float | None = None
) -> tuple[Path, Any]:
    """The run folder to predict with and its :class:`~segshift.inference.tta.TTAConfig`.

    A recipe folder (``segshift adapt``) gives its model and the prediction policy it recorded, unless ``tta``
    names another; the TENT settings given win over the recorded ones. A run folder gives itself and ``tta``
    (``none`` when not given). Shared by ``segshift predict`` and ``segshift test``.
    """
    from segshift.inference.tta import TTAConfig

    recorded: dict[str, Any] = {}
    folder = Path(run)
    if is_recipe(folder):
        folder, recorded = model_folder(folder)
    cfg = TTAConfig.from_options(tta if tta is not None else recorded.get("mode", "none"), steps, lr, alpha)
    if tta is None and recorded:
        given = {k: v for k, v in (("steps", steps), ("lr", lr), ("alpha", alpha)) if v is not None}
        cfg = TTAConfig(**{**recorded, **given})
    return folder, cfg


def _finished(run: Path) -> bool:
    return (run / "summary.json").is_file()


def _start(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse what would lose or mix work before anything is written."""
    if resume and overwrite:
        raise SegshiftError("--resume continues the recipe in --out; --overwrite would replace it: pass one of them")
    if resume:
        read_recipe(out)
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise InputFileError(out, "exists; pass --resume to continue it, --overwrite to replace it, or choose another --out")
        if not is_recipe(out):
            raise InputFileError(out, "exists and is not a segshift adapt folder: --overwrite replaces only a recipe's own folder")


def run_recipe(
    sources: Sequence[str | Path],
    target: str | Path | None,
    out: str | Path,
    steps: int = SOURCE_STEPS,
    target_steps: int = TARGET_STEPS,
    target_stage: str | None = None,
    sets: Sequence[str] = (),
    configs: Sequence[str | Path] = (),
    tta: dict[str, Any] | None = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the recipe into ``out`` (see the module docstring); returns ``recipe.json``'s content.

    Args:
        sources: labelled source domain folders.
        target: the unlabelled target domain folder, or ``None`` (generalisation only).
        out: the recipe folder.
        steps, target_steps: training steps of the source and the target stage.
        target_stage: ``self-train`` or ``none`` (default :data:`DEFAULT_TARGET_STAGE`); with a target.
        sets, configs: ``--set`` overrides and ``--config`` files applied to every stage.
        tta: the prediction policy to record (default :data:`RECIPE_TTA`).
        seed: the training seed of every stage.
        resume: continue an interrupted recipe with its recorded plan (finished stages are kept).
        overwrite: replace an earlier recipe folder (each stage's old run is kept until its new one finishes).
        device: ``cpu``, ``cuda``, ... (default: a GPU if there is one).
    """
    from segshift.engine.config import resolve
    from segshift.engine.trainer import train
    from segshift.inference.tta import TTAConfig

    out = Path(out)
    _start(out, resume, overwrite)

    def stage_config(stage: Stage) -> dict[str, Any]:
        """A stage's run config: the recipe's --config files and --set values, then the stage's own (read when called)."""
        return resolve(stage.method, list(configs), [*sets, *stage.sets, f"seed={seed}", f"train.steps={stage.steps}"])

    if resume:
        if sets or configs or tta is not None or target_stage is not None:
            raise SegshiftError(
                "--resume continues with the recipe's recorded settings; do not pass --set/--config/--tta/--target-stage with it"
            )
        rec = read_recipe(out)
        sources, target = rec["sources"], rec["target"]
        stages = [Stage(s["name"], s["method"], int(s["steps"]), tuple(s["set"])) for s in rec["stages"]]
        sets, configs, seed = rec["set"], rec["config"], int(rec["seed"])
    else:
        if not sources:
            raise SegshiftError("give at least one labelled --source domain")
        check_disjoint(out, [*sources, target], what="recipe folder")
        stages = plan(target is not None, steps, target_steps, target_stage if target_stage is not None else DEFAULT_TARGET_STAGE)
        tta = dict(tta if tta is not None else RECIPE_TTA)
        TTAConfig(**tta)  # checked before anything trains
        rec = {
            "version": RECIPE_VERSION,
            "sources": [str(Path(s).resolve()) for s in sources],
            "target": str(Path(target).resolve()) if target is not None else None,
            "seed": seed,
            "set": list(sets),
            "config": [str(Path(c).resolve()) for c in configs],
            "stages": [{"name": s.name, "method": s.method, "steps": s.steps, "set": list(s.sets), "run": s.folder} for s in stages],
            "model": stages[-1].folder,
            "tta": tta,
            "finished": False,
        }
        # every stage's config is resolved (and so checked) before the first one trains
        for s in stages:
            stage_config(s)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / RECIPE_FILE, rec)
    init: Path | None = None
    for i, s in enumerate(stages, 1):
        run = out / s.folder
        what = f"[{i}/{len(stages) + (1 if target is not None else 0)}] {s.name} stage: {s.method}, {s.steps} steps"
        if resume and _finished(run):
            echo(f"{what}: finished earlier, kept ({run})")
        else:
            echo(f"{what} ({run})")
            cfg = stage_config(s)
            if init is not None:
                cfg["init"] = str(init.resolve())
            again = resume and (run / "config.yaml").is_file()
            train(
                cfg,
                list(sources),
                target if s.name == "target" else None,
                run,
                resume=again,
                overwrite=overwrite and not again,
                device=device,
                progress=progress,
            )
        init = run
    if target is not None:
        echo(f"[{len(stages) + 1}/{len(stages) + 1}] predict the target's images and write the target report")
        target_report(out, sources, target, TTAConfig(**rec["tta"]), device=device)
    rec["finished"] = True
    write_json(out / RECIPE_FILE, rec)
    return rec


def target_report(out: Path, sources: Sequence[str | Path], target: str | Path, tta: Any, device: str | None = None) -> dict[str, Any]:
    """Predict the target's images with the recipe's model and policy into ``out/target/``, and report
    per case the structure volumes against the source labels, the entropy, and a flag.
    """
    from segshift.bench.qc import case_scores, label_volumes, volume_reference
    from segshift.data.domain import Domain
    from segshift.inference.predict_files import predict_paths
    from segshift.inference.predictor import Predictor
    from segshift.metrics.stats import nan_to_none

    rec = read_recipe(out)
    predictor = Predictor(out / rec["model"], device=device, target_domain=True, tta=tta)
    structures = list(predictor.structures)
    ref_volumes = []
    for src in sources:
        dom = Domain(src)
        names = [s for s in structures if s in dom.spec.labels]
        ref_volumes += [label_volumes(src, c, names) for c in dom.labelled_cases]
    reference = volume_reference(ref_volumes, structures)
    folder = out / "target"
    with atomic_dir(folder, overwrite=True) as tmp:
        rows = predict_paths(predictor, target, tmp / "masks")
        cases = []
        for row in rows:
            scores = case_scores(row, reference, structures)
            z = scores["volume_z_max"]
            worst = max(structures, key=lambda s: scores[f"volume_z_{s}"] if math.isfinite(scores[f"volume_z_{s}"]) else -1.0)
            empty = all(float(row[f"{s}_ml"]) == 0 for s in structures)
            flag = (math.isfinite(z) and z > FLAG_VOLUME_Z) or empty
            cases.append(
                {
                    "case": row["case"],
                    **{f"{s}_ml": row.get(f"{s}_ml") for s in structures},
                    "mean_entropy": row.get("mean_entropy"),
                    "fg_entropy": row.get("fg_entropy"),
                    "volume_z_max": z,
                    "flagged": bool(flag),
                    "why": ("nothing segmented" if empty else f"{worst} volume {z:.1f} sd from the source labels'") if flag else "",
                }
            )
        report = {"model": rec["model"], "tta": rec["tta"], "reference": reference, "flag_volume_z": FLAG_VOLUME_Z, "cases": cases}
        write_json(tmp / "report.json", nan_to_none(report))
        write_text(tmp / "report.md", report_markdown(report, structures))
    return report


def report_markdown(report: dict[str, Any], structures: Sequence[str]) -> str:
    """The target report as Markdown: the source volume reference, then one row per target case."""

    def f(v: Any, fmt: str = ".1f") -> str:
        try:
            x = float(v)
        except (TypeError, ValueError):
            return "-"
        return format(x, fmt) if math.isfinite(x) else "-"

    ref = report["reference"]
    lines = [
        "# Target report (no target label read)",
        "",
        f"Model: `{report['model']}`; TTA: {report['tta']['mode']}. A case is flagged when a structure's log volume lies more "
        f"than {report['flag_volume_z']:g} standard deviations from the source labels' (or nothing is segmented); "
        "the volume score flagged the cases below Dice 0.7 best on the phantom (docs/benchmark.md, QC validation).",
        "",
        "Source labels' volumes (mL, geometric mean x/÷ geometric sd): "
        + ", ".join(f"{s} {f(math.exp(ref[s]['mean']) - 1)} x/÷ {f(math.exp(ref[s]['std']), '.2f')}" for s in structures),
        "",
        "| case | " + " | ".join(f"{s} mL" for s in structures) + " | mean entropy | fg entropy | volume z max | flagged |",
        "|---|" + "---|" * (len(structures) + 4),
    ]
    for c in report["cases"]:
        cells = [f(c[f"{s}_ml"]) for s in structures]
        flag = f"**yes**: {c['why']}" if c["flagged"] else "no"
        lines.append(
            f"| {c['case']} | "
            + " | ".join(cells)
            + f" | {f(c['mean_entropy'], '.3f')} | {f(c['fg_entropy'], '.3f')} | {f(c['volume_z_max'], '.2f')} | {flag} |"
        )
    n = sum(c["flagged"] for c in report["cases"])
    lines += ["", f"{n} of {len(report['cases'])} case(s) flagged for review."]
    return "\n".join(lines) + "\n"
