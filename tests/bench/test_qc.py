"""QC validation (segshift.bench.qc): oriented scores, rho and AUC with expected numbers, the source volume reference."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from segshift.bench import qc as QC
from segshift.bench.suite import builtin_suites, parse_suite
from segshift.errors import InputFileError

NAN = math.nan
DICE = [0.95, 0.9, 0.85, 0.6, 0.4, 0.1]  # three cases below 0.7


@pytest.mark.parametrize(
    ("scores", "rho", "auc"),
    [
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], -1.0, 1.0),  # perfectly informative: rises as Dice falls
        ([0.6, 0.5, 0.4, 0.3, 0.2, 0.1], 1.0, 0.0),  # points the wrong way
        # ranks (1, 2, 5, 3, 4, 6) vs Dice ranks (6, 5, 4, 3, 2, 1): d = (-5, -3, 1, 0, 2, 5), rho = 1 - 6 * 64 / (6 * 35);
        # a good case (0.5) above two bad ones (0.3, 0.4): 2 of the 9 (bad, good) pairs wrong
        ([0.1, 0.2, 0.5, 0.3, 0.4, 0.6], -29 / 35, 7 / 9),
        ([0.3, 0.3, 0.3, 0.3, 0.3, 0.3], NAN, 0.5),  # constant: no ranking (rho undefined), every pair tied
    ],
)
def test_validate_gives_rho_and_auc_by_hand(scores, rho, auc):
    v = QC.validate(scores, DICE, 0.7)
    assert (v["n"], v["n_below"], v["n_nan"]) == (6, 3, 0)
    assert v["spearman"] == pytest.approx(rho, nan_ok=True)
    assert v["auc"] == pytest.approx(auc)
    assert ("rho undefined" in v["note"]) == math.isnan(rho)


@pytest.mark.parametrize(
    ("dice", "threshold", "note"),
    [
        ([0.9, 0.8, 0.3, 0.2], 0.7, "n = 4 < 5 cases: undefined"),
        ([0.9, 0.8, 0.85, 0.95, 0.75], 0.7, "no case below Dice 0.7: AUC undefined"),
        ([0.1, 0.2, 0.3, 0.4, 0.5], 0.7, "every case below Dice 0.7: AUC undefined"),
    ],
)
def test_small_or_one_sided_samples_are_undefined_with_a_note(dice, threshold, note):
    v = QC.validate(np.linspace(1, 0, len(dice)), dice, threshold)
    assert math.isnan(v["auc"]) and v["note"] == note
    assert math.isnan(v["spearman"]) == (len(dice) < QC.MIN_CASES)


def test_undefined_scores_are_left_out_and_counted():
    v = QC.validate([0.1, NAN, 0.2, 0.3, 0.4, 0.5, 0.6], [0.95, 0.5, 0.9, 0.85, 0.6, 0.4, 0.1], 0.7)
    assert (v["n"], v["n_nan"], v["spearman"], v["auc"]) == (6, 1, pytest.approx(-1.0), pytest.approx(1.0))


def test_threshold_is_strict():
    assert QC.validate([1, 2, 3, 4, 5], [0.9, 0.8, 0.7, 0.6, 0.5], 0.7)["n_below"] == 2  # 0.7 itself is not below


# -- the scores of one qc.csv row -----------------------------------------------------------------------------------
REF_ML = {"LV": [10.0, 20.0, 40.0], "RV": [30.0, 30.0, 60.0]}


def _reference():
    return QC.volume_reference([{s: REF_ML[s][i] for s in REF_ML} for i in range(3)], ["LV", "RV"])


def test_volume_reference_and_z_by_hand():
    ref = _reference()
    lv = np.log(np.array([11.0, 21.0, 41.0]))
    assert ref["LV"]["mean"] == pytest.approx(lv.mean()) and ref["LV"]["std"] == pytest.approx(lv.std(ddof=1))
    assert ref["LV"]["n"] == 3
    row = {"mean_entropy": "0.2", "fg_entropy": "0.35", "LV_ml": "80", "RV_ml": "35"}
    s = QC.case_scores(row, ref, ["LV", "RV"])
    z_lv = abs(math.log(81) - lv.mean()) / lv.std(ddof=1)
    rv = np.log(np.array([31.0, 31.0, 61.0]))
    z_rv = abs(math.log(36) - rv.mean()) / rv.std(ddof=1)
    assert s == pytest.approx(
        {"mean_entropy": 0.2, "fg_entropy": 0.35, "volume_z_LV": z_lv, "volume_z_RV": z_rv, "volume_z_max": max(z_lv, z_rv)}
    )
    # too small is as suspicious as too large: the z of a volume as far below the mean (in log) is the same
    low = math.exp(lv.mean() - (math.log(81) - lv.mean())) - 1
    assert QC.case_scores({**row, "LV_ml": str(low)}, ref, ["LV", "RV"])["volume_z_LV"] == pytest.approx(z_lv)


def test_an_empty_prediction_is_the_most_suspicious():
    s = QC.case_scores({"mean_entropy": "0.1", "fg_entropy": "nan", "LV_ml": "0", "RV_ml": "0"}, _reference(), ["LV", "RV"])
    assert s["fg_entropy"] == 1.0  # no foreground to measure: the maximum
    assert s["volume_z_LV"] == pytest.approx(abs(0 - np.log([11.0, 21.0, 41.0]).mean()) / np.log([11.0, 21.0, 41.0]).std(ddof=1))


def test_without_a_reference_the_volume_scores_are_undefined():
    row = {"mean_entropy": "0.2", "fg_entropy": "0.3", "LV_ml": "10", "RV_ml": "5"}
    s = QC.case_scores(row, None, ["LV", "RV"])
    assert s["mean_entropy"] == 0.2 and all(math.isnan(s[k]) for k in ("volume_z_LV", "volume_z_RV", "volume_z_max"))
    one = QC.volume_reference([{"LV": 10.0, "RV": 3.0}], ["LV", "RV"])  # one case: no spread
    assert math.isnan(one["LV"]["std"]) and math.isnan(QC.case_scores(row, one, ["LV", "RV"])["volume_z_max"])


# -- the suite key ----------------------------------------------------------------------------------------------------
def test_suite_qc_threshold_default_and_checks(tmp_path):
    text = builtin_suites()["phantom-tiny"]
    assert parse_suite(text, tmp_path / "s.yaml").qc_threshold == QC.DEFAULT_THRESHOLD == 0.7
    assert parse_suite(text + "qc_threshold: 0.8\n", tmp_path / "s.yaml").qc_threshold == 0.8
    for bad in ("0", "1.5", "yes", "'high'"):
        with pytest.raises(InputFileError, match="qc_threshold: expected a mean Dice in"):
            parse_suite(text + f"qc_threshold: {bad}\n", tmp_path / "s.yaml")


# -- a benchmark folder made by hand: the oracle borrows the source reference, no target label is read -----------------
def _domain(root: Path, name: str, lv_voxels: list[int], rv_voxels: list[int]) -> Path:
    from segshift.data.domain import DomainSpec, DomainWriter

    w = DomainWriter(root / name, DomainSpec(name, labels={"background": 0, "LV": 1, "RV": 2}))
    aff = np.diag([1.0, 1.0, 10.0, 1.0])  # 0.01 mL voxels
    for i, (n, m) in enumerate(zip(lv_voxels, rv_voxels)):
        lab = np.zeros((40, 40, 4), np.uint8)
        lab.reshape(-1)[:n] = 1
        lab.reshape(-1)[n : n + m] = 2
        w.add(f"case{i}", np.ones(lab.shape, np.float32), aff, lab)
    w.close()
    return (root / name).resolve()


def _run(out: Path, key: str, sources: list[Path], train: dict[Path, list[str]], qc_rows: list[dict], oracle: bool) -> dict:
    task, mid, seed = key.split("/")
    folder = out / "runs" / task / mid / seed
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "run.json").write_text(
        json.dumps({"sources": [str(s) for s in sources], "plan": {"train": {str(k): v for k, v in train.items()}}})
    )
    (folder / "bench.json").write_text(json.dumps({"tests": {"t": [r["case"] for r in qc_rows]}}))
    (folder / "predictions" / "t").mkdir(parents=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(qc_rows[0]))
    w.writeheader()
    w.writerows(qc_rows)
    (folder / "predictions" / "t" / "qc.csv").write_text(buf.getvalue())
    return {
        "key": key,
        "task": task,
        "method_id": mid,
        "seed": int(seed[4:]),
        "oracle": oracle,
        "state": "done",
        "skipped": None,
        "folder": str(folder.relative_to(out)),
        "label": f"{mid} (ORACLE)" if oracle else mid,
    }


def test_compute_qc_on_a_hand_made_folder(tmp_path, monkeypatch):
    src = _domain(tmp_path / "data", "src", [1000, 2000, 4000], [1500, 1500, 3000])  # LV 10, 20, 40 mL; RV 15, 15, 30 mL
    tgt = _domain(tmp_path / "data", "tgt", [500, 500, 500], [500, 500, 500])
    read: list[str] = []
    real = QC.label_volumes
    monkeypatch.setattr(QC, "label_volumes", lambda d, c, s: read.append(Path(d).name) or real(d, c, s))
    out = tmp_path / "bench"
    cases = [f"c{i}" for i in range(6)]
    dice = dict(zip(cases, DICE))
    qc_rows = [
        {"case": c, "mean_entropy": 0.1 * (i + 1), "fg_entropy": 0.6 - 0.1 * i, "LV_ml": 20.0 * (i + 1), "RV_ml": 15.0}
        for i, c in enumerate(cases)
    ]
    runs = [
        _run(out, "t1/m/seed0", [src], {src: ["case0", "case1", "case2"]}, qc_rows, False),
        _run(out, "t1/oracle/seed0", [src], {tgt: ["case0", "case1"]}, qc_rows, True),
    ]
    rows = [
        {"task": "t1", "test": "t", "method_id": r["method_id"], "seed": 0, "case": c, "structure": s, "dice": dice[c]}
        for r in runs
        for c in cases
        for s in ("LV", "RV")
    ]
    res = QC.compute_qc(out, rows, runs, ["LV", "RV"], threshold=0.7)
    assert set(read) == {"src"}  # the oracle's (target) training labels were never read
    assert res["references"]["t1/oracle/seed0"]["structures"] == res["references"]["t1/m/seed0"]["structures"]
    assert "source training labels of t1/m/seed0" in res["references"]["t1/oracle/seed0"]["from"]
    val = {(v["method_id"], v["score"]): v for v in res["validation"]}
    assert val["m", "mean_entropy"]["auc"] == 1.0 and val["m", "mean_entropy"]["spearman"] == pytest.approx(-1.0)
    assert val["m", "fg_entropy"]["auc"] == 0.0 and val["m", "fg_entropy"]["spearman"] == pytest.approx(1.0)  # wrong way
    # LV 20..120 mL against 10, 20, 40: z grows with the volume, so it ranks like mean_entropy here; RV 15 mL always: constant z
    assert val["m", "volume_z_LV"]["auc"] == 1.0 and val["m", "volume_z_LV"]["spearman"] == pytest.approx(-1.0)
    assert math.isnan(val["m", "volume_z_RV"]["spearman"]) and val["m", "volume_z_RV"]["auc"] == 0.5
    lv = np.log([11.0, 21.0, 41.0])
    z_lv0 = abs(math.log(21.0) - lv.mean()) / lv.std(ddof=1)
    got = next(c for c in res["cases"] if c["method_id"] == "m" and c["case"] == "c0")
    assert got["volume_z_LV"] == pytest.approx(z_lv0) and got["volume_z_max"] == max(got["volume_z_LV"], got["volume_z_RV"])
    pooled = val[QC.POOLED, "mean_entropy"]
    assert (pooled["n"], pooled["n_below"], pooled["auc"]) == (12, 6, 1.0)
    # the tables
    lines = list(csv.DictReader(io.StringIO(QC.validation_csv(res))))
    assert len(lines) == 3 * len(QC.score_names(["LV", "RV"])) and lines[0]["auc"] == "1.0"
    case_lines = list(csv.DictReader(io.StringIO(QC.cases_csv(res))))
    assert [float(r["dice"]) for r in case_lines[:6]] == DICE and case_lines[0]["volume_z_LV"] != "nan"
    head, body = QC.table_rows(res, "t1", "t")
    assert head[:4] == ["row", "seed", "n", "n < 0.7"] and head[4] == "mean_entropy: rho / AUC"
    assert [r[0] for r in body] == ["m", "oracle (ORACLE)", QC.POOLED] and body[0][4] == "-1.00 / 1.00"
    assert body[0][-1] == "rho undefined (constant score or Dice): volume_z_RV"  # the constant score is named
    md = QC.markdown(res)
    assert "## QC validation (evaluation against test labels)" in md and "higher = more suspicious" in md


# -- the tiny phantom benchmark (tests/conftest.py): the tables, the report's table and figure ---------------------------
def test_a_missing_source_domain_leaves_the_volume_scores_undefined(tmp_path):
    out = tmp_path / "bench"
    gone = tmp_path / "moved-away"
    rows_qc = [{"case": f"c{i}", "mean_entropy": 0.1 * i, "fg_entropy": 0.2, "LV_ml": 10.0, "RV_ml": 5.0} for i in range(6)]
    run = _run(out, "t1/m/seed0", [gone], {gone: ["case0", "case1"]}, rows_qc, False)
    rows = [
        {"task": "t1", "test": "t", "method_id": "m", "seed": 0, "case": f"c{i}", "structure": "LV", "dice": d} for i, d in enumerate(DICE)
    ]
    res = QC.compute_qc(out, rows, [run], ["LV", "RV"])
    assert res["references"]["t1/m/seed0"]["structures"] is None
    assert res["references"]["t1/m/seed0"]["from"].startswith("source labels unreadable")
    assert all(math.isnan(c["volume_z_max"]) for c in res["cases"]) and res["cases"][1]["mean_entropy"] == pytest.approx(0.1)


def test_tiny_benchmark_writes_the_qc_tables(tiny_benchmark):
    from segshift.bench.tables import collect_rows
    from segshift.metrics.stats import roc_auc, spearman

    out = tiny_benchmark
    doc = json.loads((out / "benchmark.json").read_text())
    assert doc["qc_threshold"] == 0.5  # the suite's qc_threshold
    res = json.loads((out / "results" / "results.json").read_text())["qc"]
    assert res["threshold"] == 0.5
    assert res["scores"] == ["mean_entropy", "fg_entropy", "volume_z_max", "volume_z_LV", "volume_z_MYO", "volume_z_RV"]
    cases = list(csv.DictReader((out / "results" / "qc_cases.csv").open()))
    assert len(cases) == 4 * 4 + 3 * 2  # lge: init, source-only, adaptseg, oracle x 4 cases; t2-unseen: 3 rows x 2 cases
    # each case's Dice is its mean over structures in per_case.csv, each score the run's qc.csv value
    per: dict[tuple, list[float]] = {}
    for r in csv.DictReader((out / "results" / "per_case.csv").open()):
        per.setdefault((r["test"], r["method_id"], r["case"]), []).append(float(r["dice"]))
    for c in cases:
        assert float(c["dice"]) == pytest.approx(np.mean(per[c["test"], c["method_id"], c["case"]]))
    qc_csv = out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "predictions" / "lge" / "qc.csv"
    qc_rows = {r["case"]: r for r in csv.DictReader(qc_csv.open())}
    for c in (c for c in cases if c["method_id"] == "adaptseg" and c["test"] == "lge"):
        assert float(c["mean_entropy"]) == pytest.approx(float(qc_rows[c["case"]]["mean_entropy"]))
        assert float(c["volume_z_max"]) == pytest.approx(max(float(c[f"volume_z_{s}"]) for s in ("LV", "MYO", "RV")))
    # 4 cases per run: undefined, said so; the pooled line has 16
    val = list(csv.DictReader((out / "results" / "qc_validation.csv").open()))
    init = next(v for v in val if v["test"] == "lge" and v["method_id"] == "init" and v["score"] == "mean_entropy")
    assert (init["n"], init["spearman"], init["auc"], init["note"]) == ("4", "nan", "nan", "n = 4 < 5 cases: undefined")
    pooled = next(v for v in val if v["test"] == "lge" and v["method_id"] == QC.POOLED and v["score"] == "mean_entropy")
    lge = [c for c in cases if c["test"] == "lge"]
    ent, dice = [float(c["mean_entropy"]) for c in lge], np.array([float(c["dice"]) for c in lge])
    assert pooled["n"] == "16" and float(pooled["spearman"]) == pytest.approx(spearman(ent, dice))
    # the tiny models score below 0.5: AUC undefined, said so (else it is the ROC AUC)
    if (dice < 0.5).all():
        assert pooled["auc"] == "nan" and pooled["note"] == "every case below Dice 0.5: AUC undefined"
    else:
        assert float(pooled["auc"]) == pytest.approx(roc_auc(ent, dice < 0.5))
    # at the median Dice, half the cases are below: the AUC is defined and is the ROC AUC of the pooled cases
    median = float(np.median(dice))
    again = QC.compute_qc(out, collect_rows(out), doc["runs"], ["LV", "MYO", "RV"], threshold=median)
    at = next(v for v in again["validation"] if v["test"] == "lge" and v["method_id"] == QC.POOLED and v["score"] == "mean_entropy")
    assert at["n_below"] == int((dice < median).sum()) > 0
    assert at["auc"] == pytest.approx(roc_auc(ent, dice < median))
    # the volume reference: the source (bSSFP) training labels, 6 cases (8 minus 2 validation); the oracle borrows the init's
    refs = res["references"]
    assert refs["bssfp2lge/init/seed0"]["from"] == "6 source training labels of bssfp2lge/init/seed0"
    assert refs["bssfp2lge/target-oracle/seed0"]["from"] == "6 source training labels of bssfp2lge/init/seed0"
    # both test sets together: each run's 6 cases (4 lge + 2 t2; the oracle's 4), pooled 22
    both = {v["method_id"]: v for v in val if v["test"] == QC.ALL_TESTS and v["score"] == "volume_z_max"}
    assert {k: v["n"] for k, v in both.items()} == {"init": "6", "source-only": "6", "adaptseg": "6", "target-oracle": "4", QC.POOLED: "22"}
    md = (out / "results" / "results.md").read_text()
    assert "## QC validation (evaluation against test labels)" in md and "| pooled (all rows) |  | 16 | " in md
    assert "### Task `bssfp2lge`, all test sets together" in md and "| pooled (all rows) |  | 22 | " in md
    report = (out / "report.html").read_text()
    assert "QC validation (evaluation against test labels)</h2>" in report
    for unit in ("test set lge", "test set t2-unseen", "all test sets together"):
        assert f'<img alt="QC scores against Dice, task bssfp2lge, {unit} (one point per run and case)"' in report
