"""Tests of segshift.metrics.evaluate and the ``segshift evaluate`` command."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from segshift.data.domain import DomainSpec, DomainWriter
from segshift.data.volume import write_nifti
from segshift.errors import InputFileError, SegshiftError
from segshift.metrics.evaluate import CSV_COLUMNS, evaluate_folders, format_table, write_evaluation

SHAPE = (6, 6, 3)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # spacing (1, 1, 2) mm
DIAG = math.sqrt(6**2 + 6**2 + 6**2)  # extent 6 x 6 x 6 mm


def ref_map() -> np.ndarray:
    """LV, MYO and RV as disjoint single-slice blocks."""
    a = np.zeros(SHAPE, np.uint8)
    a[0:2, 0:2, 1] = 1  # LV: 4 voxels
    a[3:5, 0:2, 1] = 2  # MYO: 4 voxels
    a[0:2, 4:6, 1] = 3  # RV: 4 voxels
    return a


def pred_b() -> np.ndarray:
    """Case b: LV exact, MYO moved one slice (2 mm) up, RV missing."""
    a = np.zeros(SHAPE, np.uint8)
    a[0:2, 0:2, 1] = 1
    a[3:5, 0:2, 2] = 2
    return a


@pytest.fixture
def folders(tmp_path):
    preds, labels = tmp_path / "preds", tmp_path / "labels"
    write_nifti(labels / "a.nii.gz", ref_map(), AFFINE)
    write_nifti(labels / "b.nii.gz", ref_map(), AFFINE)
    write_nifti(preds / "a.nii.gz", ref_map(), AFFINE)
    write_nifti(preds / "b.nii.gz", pred_b(), AFFINE)
    return preds, labels


# (case, structure) -> dice, jaccard, assd, hd95, pred_voxels, ref_voxels, status
EXPECTED = {
    ("a", "LV"): (1.0, 1.0, 0.0, 0.0, 4, 4, "ok"),
    ("a", "MYO"): (1.0, 1.0, 0.0, 0.0, 4, 4, "ok"),
    ("a", "RV"): (1.0, 1.0, 0.0, 0.0, 4, 4, "ok"),
    ("b", "LV"): (1.0, 1.0, 0.0, 0.0, 4, 4, "ok"),
    ("b", "MYO"): (0.0, 0.0, 2.0, 2.0, 4, 4, "ok"),
    ("b", "RV"): (0.0, 0.0, DIAG, DIAG, 0, 4, "empty_prediction"),
}


def test_csv_and_json_content(folders, tmp_path):
    preds, labels = folders
    result = evaluate_folders(preds, labels)
    out = tmp_path / "out"
    write_evaluation(result, out)
    with open(out / "per_case.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert [(r["case"], r["structure"]) for r in rows] == list(EXPECTED)
    for r in rows:
        dice, jac, assd, hd95, npred, nref, status = EXPECTED[(r["case"], r["structure"])]
        assert float(r["dice"]) == pytest.approx(dice)
        assert float(r["jaccard"]) == pytest.approx(jac)
        assert float(r["assd_mm"]) == pytest.approx(assd)
        assert float(r["hd95_mm"]) == pytest.approx(hd95)
        assert (int(r["pred_voxels"]), int(r["ref_voxels"]), r["status"]) == (npred, nref, status)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == ["a", "b"]
    assert summary["labels"] == {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    assert summary["empty_distance"] == "diagonal"
    assert summary["unmatched_predictions"] == [] and summary["missing_predictions"] == []
    s = summary["summary"]
    assert s["structures"]["MYO"]["dice"] == {"mean": 0.5, "std": 0.5, "n": 2, "n_nan": 0}
    assert s["structures"]["RV"]["hd95_mm"]["mean"] == pytest.approx(DIAG / 2)
    assert s["structures"]["RV"]["status_counts"]["empty_prediction"] == 1
    # overall Dice per case: a = 1, b = 1/3 -> mean 2/3, population std 1/3
    assert s["overall"]["dice"]["mean"] == pytest.approx(2 / 3)
    assert s["overall"]["dice"]["std"] == pytest.approx(1 / 3)
    assert s["overall"]["assd_mm"]["mean"] == pytest.approx((2.0 + DIAG) / 3 / 2)


def test_nan_policy_is_written_as_null_and_counted(folders, tmp_path):
    preds, labels = folders
    result = evaluate_folders(preds, labels, empty_distance="nan")
    write_evaluation(result, tmp_path / "out")
    text = (tmp_path / "out" / "summary.json").read_text()

    def reject(constant):
        raise AssertionError(f"summary.json is not strict JSON: {constant}")

    s = json.loads(text, parse_constant=reject)["summary"]
    assert s["structures"]["RV"]["assd_mm"] == {"mean": 0.0, "std": 0.0, "n": 1, "n_nan": 1}
    assert s["overall"]["hd95_mm"]["n_nan"] == 1
    rows = list(csv.DictReader((tmp_path / "out" / "per_case.csv").read_text(encoding="utf-8").splitlines()))
    assert rows[-1]["assd_mm"] == "nan"


def test_label_suffix_and_unmatched_predictions(tmp_path):
    preds, labels = tmp_path / "p", tmp_path / "l"
    write_nifti(labels / "pat1_gt.nii.gz", ref_map(), AFFINE)
    write_nifti(labels / "pat1_image.nii.gz", ref_map(), AFFINE)  # not a label: no _gt suffix
    write_nifti(preds / "pat1.nii", ref_map(), AFFINE)
    write_nifti(preds / "extra.nii.gz", ref_map(), AFFINE)
    result = evaluate_folders(preds, labels, label_suffix="_gt")
    assert result.cases == ["pat1"]
    assert result.unmatched_predictions == ["extra.nii.gz"]
    assert result.ignored_label_files == ["pat1_image.nii.gz"]
    assert all(r["dice"] == 1.0 for r in result.rows)


def test_domain_folder_labels(tmp_path):
    spec = DomainSpec(name="liver_ct", labels={"background": 0, "liver": 1, "tumour": 2})
    writer = DomainWriter(tmp_path / "dom", spec)
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:4, 1:4, 0:2] = 1
    lab[2, 2, 1] = 2
    writer.add("c1", np.zeros(SHAPE, np.float32), AFFINE, lab)
    writer.add("c2", np.zeros(SHAPE, np.float32), AFFINE)  # unlabelled: not evaluated
    writer.close()
    write_nifti(tmp_path / "p" / "c1.nii.gz", lab, AFFINE)
    result = evaluate_folders(tmp_path / "p", tmp_path / "dom")
    assert result.labels == {"background": 0, "liver": 1, "tumour": 2}
    assert [r["structure"] for r in result.rows] == ["liver", "tumour"]
    assert result.cases == ["c1"]
    with pytest.raises(SegshiftError, match="differ"):
        evaluate_folders(tmp_path / "p", tmp_path / "dom", labels={"LV": 1})


def test_custom_labels_and_table(folders):
    preds, labels = folders
    result = evaluate_folders(preds, labels, labels={"LV": 1, "MYO": 2, "RV": 3})
    table = format_table(result.summary)
    assert [c.header for c in table.columns] == ["Structure", "Dice", "Jaccard", "ASSD (mm)", "HD95 (mm)", "n"]
    assert table.row_count == 4
    assert list(table.columns[1].cells)[1] == "0.500 ± 0.500"


def test_allow_missing_scores_empty_prediction(folders):
    preds, labels = folders
    (preds / "b.nii.gz").unlink()
    with pytest.raises(InputFileError, match=r"b \(b\.nii\.gz\)"):
        evaluate_folders(preds, labels)
    result = evaluate_folders(preds, labels, allow_missing=True)
    assert result.missing_predictions == ["b"]
    rows_b = [r for r in result.rows if r["case"] == "b"]
    assert [r["status"] for r in rows_b] == ["empty_prediction"] * 3
    assert result.to_json()["missing_predictions"] == ["b"]


def _write_bad(kind, preds, labels):
    if kind == "shape":
        write_nifti(preds / "b.nii.gz", np.zeros((6, 6, 4), np.uint8), AFFINE)
    elif kind == "affine":
        write_nifti(preds / "b.nii.gz", pred_b(), np.diag([1.0, 1.0, 3.0, 1.0]))
    elif kind == "unknown id":
        bad = pred_b()
        bad[5, 5, 0] = 7
        write_nifti(preds / "b.nii.gz", bad, AFFINE)
    elif kind == "non-integer":
        write_nifti(preds / "b.nii.gz", pred_b().astype(np.float32) + 0.5, AFFINE)
    elif kind == "corrupt":
        (preds / "b.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    elif kind == "unknown id in reference":
        bad = ref_map()
        bad[5, 5, 0] = 9
        write_nifti(labels / "b.nii.gz", bad, AFFINE)
        return "labels/b.nii.gz"
    return "preds/b.nii.gz"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("shape", "shape"),
        ("affine", "affine"),
        ("unknown id", r"\[7\]"),
        ("non-integer", "non-integer"),
        ("corrupt", "cannot be read"),
        ("unknown id in reference", r"\[9\]"),
    ],
)
def test_file_errors_name_the_file(folders, kind, message):
    preds, labels = folders
    bad = _write_bad(kind, preds, labels)
    with pytest.raises(InputFileError, match=message) as info:
        evaluate_folders(preds, labels)
    assert str(info.value.path).endswith(bad)


@pytest.mark.parametrize("which", ["preds", "labels", "absent"])
def test_empty_or_missing_folder(tmp_path, which):
    preds, labels = tmp_path / "preds", tmp_path / "labels"
    write_nifti(preds / "a.nii.gz", ref_map(), AFFINE)
    write_nifti(labels / "a.nii.gz", ref_map(), AFFINE)
    target = tmp_path / which
    if which == "absent":
        preds = target
    else:
        for p in target.iterdir():
            p.unlink()
        (target / "notes.txt").write_text("not a volume")
    with pytest.raises(InputFileError) as info:
        evaluate_folders(preds, labels)
    assert info.value.path == target


def test_invalid_empty_distance(folders):
    with pytest.raises(SegshiftError, match="empty distance"):
        evaluate_folders(*folders, empty_distance="zero")


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_main(monkeypatch):
    """The real ``segshift.cli.main.main`` with only ``evaluate`` (plus a no-op command, so
    that typer keeps sub-command parsing) registered: other command modules may not exist."""
    import sys
    import types

    import segshift.cli.main as cli

    noop = types.ModuleType("segshift.cli._noop_for_tests")
    noop.register = lambda app: app.command("noop")(lambda: None)
    monkeypatch.setitem(sys.modules, noop.__name__, noop)
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("evaluate", "_noop_for_tests"))
    return cli.main


def test_cli_success(folders, tmp_path, cli_main, capsys):
    preds, labels = folders
    out = tmp_path / "out"
    code = cli_main(["evaluate", str(preds), str(labels), "--out", str(out), "--labels", "LV=1,MYO=2,RV=3", "--empty-distance", "nan"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "HD95" in captured.out and "overall" in captured.out and "summary.json" in captured.out
    assert json.loads((out / "summary.json").read_text())["empty_distance"] == "nan"
    assert (out / "per_case.csv").read_text().count("\n") == 7


def test_cli_missing_prediction_is_an_error_and_writes_nothing(folders, tmp_path, cli_main, capsys):
    preds, labels = folders
    (preds / "a.nii.gz").unlink()
    out = tmp_path / "out"
    code = cli_main(["evaluate", str(preds), str(labels), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error:") and "a.nii.gz" in err
    assert not out.exists() or not any(out.iterdir())


def test_cli_with_runner_and_bad_choice(folders, tmp_path):
    import typer
    from typer.testing import CliRunner

    from segshift.cli.evaluate import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep "evaluate" as a named sub-command
        pass

    preds, labels = folders
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(preds), str(labels), "--out", str(tmp_path / "o"), "--label-suffix", "", "--allow-missing"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", str(preds), str(labels), "--out", str(tmp_path / "o2"), "--empty-distance", "zero"])
    assert res.exit_code == 2
    assert not (tmp_path / "o2").exists()
