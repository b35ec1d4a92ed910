"""``segshift adapt``: the recipe end to end on the phantom, with and without a target; resume; bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

import segshift.engine.trainer as trainer_module
from segshift.bench import recipe
from segshift.cli.main import main
from segshift.data.domain import Domain
from tests.cli.test_bad_inputs import _digest
from tests.conftest import FAST, set_args
from tests.methods.conftest import refuse_label_reads

SETS = [*FAST, "train.eval_every=4", "train.checkpoint_every=4", "train.batch_size=4", "data.val_cases=[case008, case009]"]


def _adapt(source: Path, target: Path | None, out: Path, *extra: str) -> int:
    argv = ["adapt", "-s", str(source), "-o", str(out), "--steps", "6", "--target-steps", "4", "--no-progress", *set_args(SETS)]
    return main([*argv, *(["-t", str(target)] if target is not None else []), *extra])


@pytest.fixture(scope="module")
def adapted(phantom, tmp_path_factory) -> Path:
    """The recipe with a target and its target stage, trained once for the module (target labels guarded)."""
    out = tmp_path_factory.mktemp("adapt") / "recipe"
    with pytest.MonkeyPatch.context() as mp:
        refuse_label_reads(mp, phantom["lge"], "segshift adapt")
        assert _adapt(phantom["bssfp"], phantom["lge"], out, "--target-stage", "self-train") == 0
    return out


def test_adapt_with_a_target_chains_its_stages_and_reports_on_the_target(adapted, phantom):
    rec = json.loads((adapted / "recipe.json").read_text())
    assert rec["finished"] and rec["model"] == "2-target" and rec["tta"] == recipe.RECIPE_TTA
    assert [(s["method"], s["steps"]) for s in rec["stages"]] == [(recipe.SOURCE_METHOD, 6), (recipe.TARGET_METHOD, 4)]
    for stage in ("1-source", "2-target"):
        assert json.loads((adapted / stage / "summary.json").read_text())["finished"]
    cfg2 = yaml.safe_load((adapted / "2-target" / "config.yaml").read_text())
    assert Path(cfg2["init"]) == (adapted / "1-source").resolve()  # the target stage starts from the source stage
    assert cfg2["method_name"] == recipe.TARGET_METHOD and cfg2["train"]["lr"] == pytest.approx(1e-4)
    cases = Domain(phantom["lge"]).cases
    assert sorted(p.name for p in (adapted / "target" / "masks").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases]
    report = json.loads((adapted / "target" / "report.json").read_text())
    qc = {r["case"]: r for r in csv.DictReader((adapted / "target" / "masks" / "qc.csv").open())}
    assert [c["case"] for c in report["cases"]] == cases
    for c in report["cases"]:  # the report's volumes are the predicted masks'
        assert c["LV_ml"] == pytest.approx(float(qc[c["case"]]["LV_ml"]))
        assert (
            c["flagged"] == (c["volume_z_max"] is not None and c["volume_z_max"] > recipe.FLAG_VOLUME_Z) or c["why"] == "nothing segmented"
        )
    # the reference is the source labels' log volumes (10 labelled bSSFP cases)
    assert report["reference"]["MYO"]["n"] == 10
    md = (adapted / "target" / "report.md").read_text()
    assert "no target label read" in md and all(c in md for c in cases)


def test_predict_on_a_recipe_folder_uses_its_model_and_recorded_tta(adapted, phantom, tmp_path):
    rec = json.loads((adapted / "recipe.json").read_text())
    rec["tta"] = {"mode": "flip"}
    (adapted / "recipe.json").write_text(json.dumps(rec))
    try:
        assert main(["predict", str(adapted), str(Domain(phantom["lge"]).image_path("case000")), "--out", str(tmp_path / "m")]) == 0
        row = next(csv.DictReader((tmp_path / "m" / "qc.csv").open()))
        assert row["model"] == recipe.TARGET_METHOD and row["tta"].startswith("flip")
        assert (
            main(
                ["predict", str(adapted), str(Domain(phantom["lge"]).image_path("case000")), "--out", str(tmp_path / "n"), "--tta", "none"]
            )
            == 0
        )
        assert next(csv.DictReader((tmp_path / "n" / "qc.csv").open())).get("tta", "none") in ("none", "")
    finally:
        rec["tta"] = recipe.RECIPE_TTA
        (adapted / "recipe.json").write_text(json.dumps(rec))


def test_adapt_with_a_target_and_no_target_stage_trains_gin_ipa_and_reports_on_the_target(phantom, tmp_path, monkeypatch):
    """The default (DEFAULT_TARGET_STAGE none): one GIN-IPA stage, its model predicts and reports on the target images."""
    assert recipe.DEFAULT_TARGET_STAGE == "none"
    out = tmp_path / "gin"
    refuse_label_reads(monkeypatch, phantom["lge"], "segshift adapt")
    assert _adapt(phantom["bssfp"], phantom["lge"], out) == 0
    rec = json.loads((out / "recipe.json").read_text())
    assert rec["finished"] and rec["model"] == "1-source" and [s["method"] for s in rec["stages"]] == [recipe.SOURCE_METHOD]
    assert not (out / "2-target").exists()
    report = json.loads((out / "target" / "report.json").read_text())
    assert report["model"] == "1-source" and [c["case"] for c in report["cases"]] == Domain(phantom["lge"]).cases


def test_a_target_stage_without_a_target_or_of_an_unknown_kind_is_refused_before_anything_is_written(phantom, tmp_path, capsys):
    assert _adapt(phantom["bssfp"], None, tmp_path / "a", "--target-stage", "self-train") != 0
    assert "--target-stage self-train adapts to a target: give --target" in capsys.readouterr().err
    assert _adapt(phantom["bssfp"], phantom["lge"], tmp_path / "b", "--target-stage", "tent") != 0
    assert "--target-stage must be one of none, self-train, got 'tent'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_adapt_without_a_target_generalises_only(phantom, tmp_path):
    out = tmp_path / "dg"
    assert _adapt(phantom["bssfp"], None, out) == 0
    rec = json.loads((out / "recipe.json").read_text())
    assert rec["model"] == "1-source" and rec["target"] is None and len(rec["stages"]) == 1
    assert not (out / "2-target").exists() and not (out / "target").exists()


def test_adapt_resumes_an_interrupted_recipe_keeping_its_finished_stage(phantom, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    real = trainer_module.train

    def interrupted(cfg, sources, target, run, **kw):  # Ctrl-C after the target stage's second step
        if Path(run).name == "2-target":
            real(cfg, sources, target, run, **{**kw, "stop_after": 2})
            raise KeyboardInterrupt
        return real(cfg, sources, target, run, **kw)

    monkeypatch.setattr(trainer_module, "train", interrupted)
    assert _adapt(phantom["bssfp"], phantom["lge"], out, "--target-stage", "self-train") != 0
    monkeypatch.setattr(trainer_module, "train", real)
    assert not json.loads((out / "recipe.json").read_text())["finished"]
    assert not (out / "2-target" / "summary.json").exists() and (out / "2-target" / "config.yaml").is_file()
    stage1 = _digest(out / "1-source")
    assert main(["adapt", "-o", str(out), "--resume", "--no-progress"]) == 0
    assert "finished earlier, kept" in capsys.readouterr().out
    assert json.loads((out / "2-target" / "summary.json").read_text())["steps_done"] == 4
    assert _digest(out / "1-source") == stage1  # not retrained
    assert json.loads((out / "recipe.json").read_text())["finished"] and (out / "target" / "report.md").is_file()


def test_adapt_refuses_what_would_lose_or_mix_work(phantom, adapted, tmp_path, capsys):
    before = _digest(adapted)
    cases = [
        (["--resume", "--overwrite"], "pass one of them"),
        (["--resume", "--set", "train.lr=0.1"], "recorded settings"),
        ([], "exists; pass --resume"),
    ]
    for extra, msg in cases:
        assert main(["adapt", "-s", str(phantom["bssfp"]), "-o", str(adapted), *extra]) == 2
        assert msg in capsys.readouterr().err
    assert _digest(adapted) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    assert main(["adapt", "-s", str(phantom["bssfp"]), "-o", str(other), "--overwrite"]) == 2
    assert "not a segshift adapt folder" in capsys.readouterr().err and (other / "precious.txt").read_text() == "x"
    src = tmp_path / "src"
    shutil.copytree(phantom["bssfp"], src)
    assert main(["adapt", "-s", str(src), "-o", str(src / "out")]) == 2
    assert "lies inside" in capsys.readouterr().err and not (src / "out").exists()
    assert main(["adapt", "-s", str(phantom["bssfp"]), "-o", str(tmp_path / "t"), "--tta", "magic"]) == 2
    assert "--tta must be one of" in capsys.readouterr().err and not (tmp_path / "t").exists()
    assert main(["adapt", "-o", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "not a segshift adapt folder" in capsys.readouterr().err


def test_test_and_export_take_a_recipe_folder(adapted, phantom, tmp_path, capsys):
    lge = str(phantom["lge"])
    assert main(["test", str(adapted), lge, "--cases", "case004,case005", "--out", str(tmp_path / "t")]) == 0
    assert main(["test", str(adapted / "2-target"), lge, "--cases", "case004,case005", "--out", str(tmp_path / "u")]) == 0
    # the recipe folder is its model: the same scores as the stage's run folder
    assert (tmp_path / "t" / "evaluation" / "per_case.csv").read_text() == (tmp_path / "u" / "evaluation" / "per_case.csv").read_text()
    rec = json.loads((adapted / "recipe.json").read_text())
    rec["tta"] = {"mode": "flip"}
    (adapted / "recipe.json").write_text(json.dumps(rec))
    try:  # a recorded prediction policy applies to `segshift test` too, unless --tta overrides it
        assert main(["test", str(adapted), lge, "--cases", "case004", "--out", str(tmp_path / "f")]) == 0
        assert next(csv.DictReader((tmp_path / "f" / "predictions" / "qc.csv").open()))["tta"].startswith("flip")
        assert main(["test", str(adapted), lge, "--cases", "case004", "--out", str(tmp_path / "n"), "--tta", "none"]) == 0
        assert next(csv.DictReader((tmp_path / "n" / "predictions" / "qc.csv").open())).get("tta", "none") in ("none", "")
        capsys.readouterr()
        assert main(["export", str(adapted), "--format", "torchscript", str(tmp_path / "x")]) == 0
        assert "prediction policy (--tta flip) is not part of an exported graph" in capsys.readouterr().err
    finally:
        rec["tta"] = recipe.RECIPE_TTA
        (adapted / "recipe.json").write_text(json.dumps(rec))
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["method"] == recipe.TARGET_METHOD
