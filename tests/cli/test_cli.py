"""The console script: commands exist, user errors exit 2 with one clear line and no output."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from segshift.cli.main import main
from segshift.data.volume import write_nifti
from tests.conftest import toy_case


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("import", "check", "phantom", "evaluate", "demo"):
        assert cmd in out


def test_console_script_runs_as_module():
    res = subprocess.run([sys.executable, "-m", "segshift", "--help"], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert res.returncode == 0 and "import" in res.stdout


def test_usage_error_exits_2(capsys):
    assert main(["import"]) == 2


def test_import_error_names_file_and_writes_nothing(tmp_path, capsys):
    img, lab = toy_case()
    write_nifti(tmp_path / "raw" / "a.nii.gz", img, np.eye(4))
    write_nifti(tmp_path / "raw" / "a_gt.nii.gz", lab.astype(np.uint16) * 100, np.eye(4))
    code = main(["import", str(tmp_path / "raw"), str(tmp_path / "out"), "--labels", ".", "--label-suffix", "_gt"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "a_gt.nii.gz: unknown label code(s) [100, 200, 300]" in err
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_import_then_check(tmp_path, capsys):
    img, lab = toy_case()
    write_nifti(tmp_path / "raw" / "a.nii.gz", img, np.eye(4))
    write_nifti(tmp_path / "raw" / "a_gt.nii.gz", lab.astype(np.uint16) * 100, np.eye(4))
    args = [
        "import",
        str(tmp_path / "raw"),
        str(tmp_path / "out"),
        "--labels",
        ".",
        "--label-suffix",
        "_gt",
        "--label-map",
        "100=LV,200=MYO,300=RV",
        "--sequence",
        "bSSFP",
    ]
    assert main(args) == 0
    assert "1 cases (1 labelled, 0 unlabelled)" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")
    assert main(args) == 2  # exists already
    assert "--overwrite" in capsys.readouterr().err


def test_check_reports_a_broken_domain(tmp_path, capsys):
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "domain.json").write_text("{not json")
    assert main(["check", str(tmp_path / "d")]) == 2
    assert "domain.json: is not valid JSON" in capsys.readouterr().err


def test_unknown_import_preset(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    assert main(["import", str(tmp_path / "raw"), str(tmp_path / "out"), "--preset", "kaggle"]) == 2
    assert "unknown import preset 'kaggle'; available: acdc, mscmr_bssfp, mscmr_lge, nnunet" in capsys.readouterr().err
