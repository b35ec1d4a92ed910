"""The one predict -> evaluate pipeline: the target-domain decision, the files, the numbers, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from segshift.bench.pipeline import RunTester, TestSet, predict_and_evaluate
from segshift.cli.main import main
from segshift.errors import SegshiftError
from segshift.metrics.evaluate import evaluate_folders
from tests.conftest import FAST


@pytest.fixture(scope="module")
def adabn_run(phantom, tmp_path_factory):
    """adabn on phantom bSSFP -> LGE, a few steps: a run with target batch-norm statistics (applied to LGE only)."""
    from segshift.engine.config import resolve
    from segshift.engine.trainer import train

    run = tmp_path_factory.mktemp("pipeline") / "adabn"
    sets = FAST + [
        "train.steps=6",
        "train.eval_every=6",
        "data.val_cases=[case006, case007]",
        "data.train_cases=[case000, case001, case002, case003, case004, case005]",
        "data.target_cases=[case000, case001, case002, case003, case004, case005]",
    ]
    train(resolve("adabn", sets=sets), [phantom["bssfp"]], phantom["lge"], run, progress=False)
    return run


def _qc(folder):
    return list(csv.DictReader((folder / "qc.csv").open()))


def test_target_parts_apply_to_the_runs_own_target_only_and_numbers_equal_evaluate_folders(adabn_run, phantom, tmp_path):
    tester = RunTester(adabn_run, device="cpu")
    lge = tester.run(TestSet("lge", phantom["lge"], ["case008", "case009"]), tmp_path / "p" / "lge", tmp_path / "e" / "lge")
    bssfp = tester.run(TestSet("bssfp", phantom["bssfp"], ["case008", "case009"]), tmp_path / "p" / "bssfp")
    assert (lge.translate, bssfp.translate) == (True, False)
    assert [r["target_norm"] for r in _qc(tmp_path / "p" / "lge")] == ["True", "True"]  # the run's target: its statistics
    assert [r["target_norm"] for r in _qc(tmp_path / "p" / "bssfp")] == ["False", "False"]  # any other domain: the source's
    assert sorted(p.name for p in (tmp_path / "p" / "lge").glob("*.nii.gz")) == ["case008.nii.gz", "case009.nii.gz"]
    assert len(tester._predictors) == 2  # one predictor per decision, reused across test sets
    # the rows are those of evaluate_folders on the written masks, and the files hold them
    again = evaluate_folders(tmp_path / "p" / "lge", phantom["lge"], cases=["case008", "case009"])
    assert [(r["case"], r["structure"], r["dice"], r["hd95_mm"]) for r in lge.rows] == [
        (r["case"], r["structure"], r["dice"], r["hd95_mm"]) for r in again.rows
    ]
    assert {r["case"] for r in lge.rows} == {"case008", "case009"} and len(lge.rows) == 6  # 2 cases x LV, MYO, RV
    mean = sum(r["dice"] for r in lge.rows) / 6  # every structure present in the reference: the overall mean is the plain mean
    assert lge.mean_dice == pytest.approx(mean) == again.summary["overall"]["dice"]["mean"]
    saved = json.loads((tmp_path / "e" / "lge" / "summary.json").read_text())["summary"]
    assert saved["overall"]["dice"]["mean"] == pytest.approx(lge.mean_dice)
    assert [float(r["dice"]) for r in csv.DictReader((tmp_path / "e" / "lge" / "per_case.csv").open())] == [r["dice"] for r in lge.rows]
    assert not (tmp_path / "e" / "bssfp").exists() and lge.predict_s > 0 and lge.evaluate_s > 0
    # forcing the decision: LGE segmented as source-like
    forced = tester.run(TestSet("lge", phantom["lge"], ["case009"]), tmp_path / "p" / "forced", target_domain=False)
    assert not forced.translate and _qc(tmp_path / "p" / "forced")[0]["target_norm"] == "False"


def test_predict_and_evaluate_writes_both_folders_and_refuses_what_it_cannot_score(adabn_run, phantom, tmp_path):
    out = tmp_path / "t"
    res = predict_and_evaluate(adabn_run, phantom["lge"], "case00[89]", out, device="cpu")
    assert res.test.cases == ["case008", "case009"] and res.test.name == "lge" and res.translate
    assert (out / "predictions" / "qc.csv").is_file() and (out / "evaluation" / "summary.json").is_file()
    with pytest.raises(SegshiftError, match="exists and is not empty"):
        predict_and_evaluate(adabn_run, phantom["lge"], ["case008"], out)
    with pytest.raises(SegshiftError, match="unknown case"):
        predict_and_evaluate(adabn_run, phantom["lge"], ["case042"], tmp_path / "u")
    with pytest.raises(SegshiftError, match="the --out folder lies inside the input"):
        predict_and_evaluate(adabn_run, phantom["lge"], ["case008"], adabn_run / "test")
    assert not (tmp_path / "u").exists()


def _segshift_test_case009(run: Path, domain: Path, out: Path, *options: str) -> int:
    """``segshift test`` of ``run`` on case009 of ``domain`` into ``out`` (overwritten), on the CPU, with ``options``."""
    return main(["test", str(run), str(domain), "--out", str(out), "--cases", "case009", "--overwrite", *options, "--device", "cpu"])


def test_cli_test_command(adabn_run, phantom, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["test", str(adabn_run), str(phantom["bssfp"]), "--out", str(out), "--cases", "case008,case009", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "not its target domain" in text and "mean Dice" in text
    s = json.loads((out / "evaluation" / "summary.json").read_text())
    assert s["cases"] == ["case008", "case009"]
    direct = evaluate_folders(out / "predictions", phantom["bssfp"], cases=["case008", "case009"])
    assert s["summary"]["overall"]["dice"]["mean"] == pytest.approx(direct.summary["overall"]["dice"]["mean"])
    assert main(["test", str(adabn_run), str(phantom["bssfp"]), "--out", str(out)]) == 2  # not empty, no --overwrite
    assert "exists and is not empty" in capsys.readouterr().err
    assert _segshift_test_case009(adabn_run, phantom["lge"], out, "--target-domain", "no") == 0
    assert "not its target domain" in capsys.readouterr().out
    assert [r["target_norm"] for r in _qc(out / "predictions")] == ["False"]
    assert _segshift_test_case009(adabn_run, phantom["lge"], out, "--tta", "flip") == 0  # TTA options reach the predictor
    assert "with TTA flip" in capsys.readouterr().out
    qc = _qc(out / "predictions")
    assert qc[0]["target_norm"] == "True" and "mean_entropy_before_tta" in qc[0]
