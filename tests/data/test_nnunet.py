"""nnU-Net v2 raw datasets: import (--preset nnunet), export (segshift export nnunet), the round trip, the split file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from segshift.cli.main import main
from segshift.data.domain import Domain, DomainSpec, DomainWriter
from segshift.data.importer import run_import
from segshift.data.nnunet import export_nnunet, nnunet_import_config, splits_of
from segshift.data.volume import read_volume, write_nifti
from segshift.engine.splits import group_of, split
from segshift.errors import InputFileError
from tests.conftest import FAST, oblique_affine, toy_case, train_argv

AFF = oblique_affine()


def nnunet_raw(root: Path, labels: dict, channels: dict | None = None, train=(1, 2, 3), test=(7,), codes=None) -> Path:
    """A hand-made nnU-Net v2 raw dataset; label files hold ``codes[canonical id]``."""
    channels = channels or {"0": "MRI"}
    codes = codes or {0: 0, 1: 1, 2: 2, 3: 3}
    for n in train + test:
        img, lab = toy_case(seed=n)
        for ch in channels:
            tagged = img.copy()
            tagged[0, 0, 0] = 1000 * (int(ch) + 1) + n  # which channel and case went where
            folder = "imagesTr" if n in train else "imagesTs"
            write_nifti(root / folder / f"case{n:02d}_{int(ch):04d}.nii.gz", tagged, AFF)
        if n in train:
            write_nifti(root / "labelsTr" / f"case{n:02d}.nii.gz", np.vectorize(codes.get)(lab).astype(np.uint8), AFF)
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": channels, "labels": labels, "numTraining": len(train), "file_ending": ".nii.gz"})
    )
    return root


def _import(raw: Path, out: Path, **kw):
    return run_import(raw, out, nnunet_import_config(raw, out.name, **kw))


def test_cardiac_names_map_to_canonical_ids_whatever_the_dataset_ids(tmp_path):
    # the nnU-Net ACDC dataset's order: RV 1, MYO 2, LV 3
    raw = nnunet_raw(tmp_path / "Dataset027_ACDC", {"background": 0, "RV": 1, "MYO": 2, "LV": 3}, codes={0: 0, 1: 3, 2: 2, 3: 1})
    report = _import(raw, tmp_path / "acdc")
    assert report.labelled == ["case01", "case02", "case03"] and report.unlabelled == ["case07"]
    dom = Domain(tmp_path / "acdc")
    assert dom.spec.labels == {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    img, lab = dom.load("case02")
    np.testing.assert_array_equal(lab.array, toy_case(seed=2)[1])
    assert img.array[0, 0, 0] == 1002
    np.testing.assert_allclose(img.affine, AFF, atol=1e-5)
    assert dom.load("case07")[0].array[0, 0, 0] == 1007 and dom.label_path("case07") is None
    notes = dom.spec.provenance["notes"]
    assert notes[0].startswith("nnU-Net dataset Dataset027_ACDC: channel 0 (MRI)")
    assert any("mapped by name onto the canonical ids" in n for n in notes)


def test_any_other_label_set_keeps_its_names_and_ids(tmp_path):
    raw = nnunet_raw(tmp_path / "Dataset009_Spleen", {"background": 0, "organ": 1, "lesion": 2}, test=(), codes={0: 0, 1: 1, 2: 2, 3: 1})
    _import(raw, tmp_path / "spleen")
    dom = Domain(tmp_path / "spleen")
    assert dom.spec.labels == {"background": 0, "organ": 1, "lesion": 2}
    _, lab = dom.load("case01")
    assert set(np.unique(lab.array)) == {0, 1, 2}


def test_label_map_override_for_other_cardiac_names(tmp_path):
    raw = nnunet_raw(tmp_path / "Dataset027_ACDC", {"background": 0, "RV": 1, "MLV": 2, "LVC": 3}, test=(), codes={0: 0, 1: 3, 2: 2, 3: 1})
    assert main(["import", str(raw), str(tmp_path / "acdc"), "--preset", "nnunet", "--label-map", "1=RV,2=MYO,3=LV"]) == 0
    dom = Domain(tmp_path / "acdc")
    assert dom.spec.labels == {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    np.testing.assert_array_equal(dom.load("case03")[1].array, toy_case(seed=3)[1])


def test_multichannel_needs_channel_and_imports_only_that_channel(tmp_path, capsys):
    raw = nnunet_raw(
        tmp_path / "Dataset004_Multi", {"background": 0, "LV": 1, "MYO": 2, "RV": 3}, channels={"0": "T2", "1": "ADC"}, test=()
    )
    out = tmp_path / "multi"
    assert main(["import", str(raw), str(out), "--preset", "nnunet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{raw / 'dataset.json'}: declares 2 channels (0 (T2), 1 (ADC))" in err and "--channel K" in err
    assert not out.exists()
    assert main(["import", str(raw), str(out), "--preset", "nnunet", "--channel", "1"]) == 0
    dom = Domain(out)
    assert dom.cases == ["case01", "case02", "case03"]
    assert dom.load("case01")[0].array[0, 0, 0] == 2001  # channel 1's file
    assert "3 file(s) matching" in " ".join(dom.spec.provenance["notes"])  # the channel-0 files, skipped
    assert not dom.spec.provenance["unmatched"]
    with pytest.raises(InputFileError, match="has no channel 5"):
        nnunet_import_config(raw, "x", channel=5)


@pytest.mark.parametrize(
    "meta, message",
    [
        (None, "dataset.json: missing: --preset nnunet reads an nnU-Net v2 raw dataset folder"),
        ("{not json", "dataset.json: is not valid JSON"),
        ({"channel_names": {"0": "MRI"}, "file_ending": ".nii.gz"}, "'labels' (an object of label name -> integer id) is required"),
        ({"channel_names": {"0": "MRI"}, "labels": {"0": "background", "1": "LV"}, "file_ending": ".nii.gz"}, "nnU-Net v1 dataset.json"),
        ({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "heart": [1, 2]}, "file_ending": ".nii.gz"}, "are regions"),
        ({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "LV": 1, "ignore": 2}, "file_ending": ".nii.gz"}, "'ignore' label"),
        (
            {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "LV": 1}, "file_ending": ".png"},
            "file_ending '.png' is not a 3D format",
        ),
        ({"labels": {"background": 0, "LV": 1}, "file_ending": ".nii.gz"}, "'channel_names'"),
        ({"channel_names": {"0": "MRI"}, "labels": {"background": 1, "LV": 0}, "file_ending": ".nii.gz"}, "id 0 must be 'background'"),
    ],
)
def test_bad_dataset_json_is_one_clear_error_and_writes_nothing(tmp_path, capsys, meta, message):
    raw = nnunet_raw(tmp_path / "Dataset001_X", {"background": 0, "LV": 1, "MYO": 2, "RV": 3}, test=())
    if meta is None:
        (raw / "dataset.json").unlink()
    else:
        (raw / "dataset.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    assert main(["import", str(raw), str(tmp_path / "out"), "--preset", "nnunet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_label_code_not_in_dataset_json_names_the_file(tmp_path):
    raw = nnunet_raw(tmp_path / "Dataset001_X", {"background": 0, "LV": 1, "MYO": 2}, test=())  # files hold RV=3
    with pytest.raises(InputFileError, match=r"case01\.nii\.gz: unknown label code\(s\) \[3\]"):
        _import(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_channel_without_nnunet_preset_is_refused(tmp_path, capsys):
    assert main(["import", str(tmp_path), str(tmp_path / "out"), "--channel", "1"]) == 2
    assert "--channel chooses a channel of an nnU-Net dataset" in capsys.readouterr().err


# -- export and the round trip -------------------------------------------------------------------------


def _with_unlabelled(phantom_domain: Path, dest: Path, unlabelled=("case008", "case009")) -> Path:
    shutil.copytree(phantom_domain, dest)
    for c in unlabelled:
        (dest / "labels" / f"{c}.nii.gz").unlink()
    return dest


def test_round_trip_on_the_phantom_is_voxel_for_voxel(phantom, tmp_path):
    src = Domain(_with_unlabelled(phantom["lge"], tmp_path / "lge"))
    assert main(["export", "nnunet", str(src.root), str(tmp_path / "raw"), "--id", "501", "--name", "LGE"]) == 0
    ds = tmp_path / "raw" / "Dataset501_LGE"
    assert sorted(p.name for p in ds.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr", "splits_final.json"]
    assert sorted(p.name for p in (ds / "imagesTs").iterdir()) == ["case008_0000.nii.gz", "case009_0000.nii.gz"]
    assert len(list((ds / "imagesTr").iterdir())) == len(list((ds / "labelsTr").iterdir())) == 8
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    assert meta["numTraining"] == 8 and meta["file_ending"] == ".nii.gz" and meta["channel_names"] == {"0": "MR"}

    assert main(["import", str(ds), str(tmp_path / "back"), "--preset", "nnunet"]) == 0
    back = Domain(tmp_path / "back")
    assert back.cases == src.cases and back.labelled_cases == src.labelled_cases
    assert back.spec.labels == src.spec.labels
    assert (back.spec.sequence, back.spec.vendor) == (src.spec.sequence, src.spec.vendor)
    for case in src.cases:
        (a, la), (b, lb) = src.load(case), back.load(case)
        assert a.array.dtype == b.array.dtype
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_array_equal(a.affine, b.affine)
        if la is None:
            assert lb is None
        else:
            np.testing.assert_array_equal(la.array, lb.array)
            np.testing.assert_array_equal(la.affine, lb.affine)


def test_split_without_run_is_segshifts_split_of_the_labelled_cases(phantom, tmp_path):
    src = Domain(_with_unlabelled(phantom["bssfp"], tmp_path / "b"))
    assert main(["export", "nnunet", str(src.root), str(tmp_path / "raw"), "--id", "7", "--name", "B", "--seed", "4"]) == 0
    fold = splits_of(tmp_path / "raw" / "Dataset007_B" / "splits_final.json")[0]
    train, val = split(src.labelled_cases, 0.2, 4)
    assert fold == {"train": train, "val": val} and len(val) == 2
    assert "case008" not in fold["train"] + fold["val"]  # unlabelled cases are not nnU-Net training cases


def test_gapped_label_ids_are_renumbered_and_restored(tmp_path):
    spec = DomainSpec(name="gaps", labels={"background": 0, "liver": 2, "tumour": 5})
    root = tmp_path / "gaps"
    w = DomainWriter(root, spec)
    for n in (1, 2):
        img, lab = toy_case(seed=n)
        w.add(f"c{n}", img, AFF, np.choose(np.clip(lab, 0, 2), [0, 2, 5]).astype(np.uint8))
    w.close()
    report = export_nnunet(Domain(root), tmp_path / "raw", 3, "Gaps", split=(["c1"], ["c2"]))
    ds = report.dataset
    assert json.loads((ds / "dataset.json").read_text())["labels"] == {"background": 0, "liver": 1, "tumour": 2}
    assert set(np.unique(read_volume(ds / "labelsTr" / "c1.nii.gz").array)) == {0, 1, 2}
    assert "renumbered" in report.notes[0]
    _import(ds, tmp_path / "back")
    back = Domain(tmp_path / "back")
    assert back.spec.labels == spec.labels
    np.testing.assert_array_equal(back.load("c2")[1].array, Domain(root).load("c2")[1].array)


def test_export_refuses_bad_arguments_and_keeps_what_exists(phantom, tmp_path, capsys):
    raw = tmp_path / "raw"
    (raw / "Dataset010_Other").mkdir(parents=True)
    cases = [
        (["--id", "10", "--name", "B"], "dataset id 010 is already taken by Dataset010_Other"),
        (["--id", "1000", "--name", "B"], "--id must be an nnU-Net dataset id between 1 and 999"),
        (["--id", "11", "--name", "a b"], "--name 'a b'"),
        (["--name", "B"], "needs --id N and --name NAME"),
        (["--id", "11", "--name", "B", "--cases", "nope"], "--cases: regex 'nope' matches no case"),
        (["--id", "11", "--name", "B", "--format", "onnx"], "--format is for a model export"),
    ]
    for extra, message in cases:
        assert main(["export", "nnunet", str(phantom["bssfp"]), str(raw), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset010_Other"]
    assert main(["export", "nnunet", str(phantom["bssfp"]), str(phantom["bssfp"] / "x"), "--id", "3", "--name", "B"]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert main(["export", "nnunet", str(phantom["bssfp"]), str(raw), "--id", "12", "--name", "B"]) == 0
    assert main(["export", "nnunet", str(phantom["bssfp"]), str(raw), "--id", "12", "--name", "B"]) == 2
    assert "use --overwrite" in capsys.readouterr().err


@pytest.fixture(scope="module")
def split_run(phantom, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("nnunet") / "run"
    sets = ["seed=5", "data.val_fraction=0.3", "train.steps=1", "train.eval_every=1", "train.checkpoint_every=1", *FAST]
    assert main(train_argv("source-only", phantom["bssfp"], run, sets=sets)) == 0
    return run


def test_split_with_run_equals_the_runs_plan(phantom, split_run, tmp_path, capsys):
    plan = json.loads((split_run / "run.json").read_text())["plan"]
    key = str(Path(phantom["bssfp"]).resolve())
    assert (
        main(["export", "nnunet", str(phantom["bssfp"]), str(tmp_path / "raw"), "--id", "20", "--name", "B", "--run", str(split_run)]) == 0
    )
    ds = tmp_path / "raw" / "Dataset020_B"
    folds = splits_of(ds / "splits_final.json")
    assert folds[0] == {"train": plan["train"][key], "val": plan["val"][key]} and len(folds) == 5
    assert len(plan["val"][key]) == 3  # the run's own val_fraction and seed, not the defaults
    assert "run.json plan" in json.loads((ds / "dataset.json").read_text())["segshift"]["split"]
    # a copy of the domain (another folder, same identity) finds the run's split too
    copy = tmp_path / "copy"
    shutil.copytree(phantom["bssfp"], copy)
    assert main(["export", "nnunet", str(copy), str(tmp_path / "raw"), "--id", "21", "--name", "C", "--run", str(split_run)]) == 0
    assert splits_of(tmp_path / "raw" / "Dataset021_C" / "splits_final.json")[0]["val"] == plan["val"][key]
    capsys.readouterr()
    assert main(["export", "nnunet", str(phantom["lge"]), str(tmp_path / "raw"), "--id", "22", "--name", "L", "--run", str(split_run)]) == 2
    assert "is not a labelled domain of the run" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "nnunet",
                str(phantom["bssfp"]),
                str(tmp_path / "raw"),
                "--id",
                "23",
                "--name",
                "B",
                "--run",
                str(split_run),
                "--seed",
                "1",
            ]
        )
        == 2
    )
    assert "drop --val-fraction/--seed" in capsys.readouterr().err


def test_five_folds_grouped_by_patient_with_segshifts_split_as_fold_0(tmp_path, capsys):
    """ACDC-like cases (two frames per patient, one patient with one): nnU-Net's five folds never split a patient."""
    root = tmp_path / "acdc"
    w = DomainWriter(root, DomainSpec(name="acdc"))
    cases = [f"patient{p:03d}_frame{f:02d}" for p in range(1, 9) for f in (1, 12) if (p, f) != (8, 12)]
    for n, case in enumerate(cases):
        img, lab = toy_case(shape=(24, 24, 2), seed=n, scale=0.4)
        w.add(case, img, AFF, lab)
    w.close()
    assert main(["export", "nnunet", str(root), str(tmp_path / "raw"), "--id", "27", "--name", "ACDC", "--seed", "3"]) == 0
    assert "splits_final.json: 5 fold(s); fold 0 = segshift's split" in capsys.readouterr().out
    ds = tmp_path / "raw" / "Dataset027_ACDC"
    folds = splits_of(ds / "splits_final.json")
    assert len(folds) == 5
    train, val = split(cases, 0.2, 3)
    assert folds[0] == {"train": train, "val": val}  # segshift's own split, as a run with seed 3 makes it
    for fold in folds:
        assert sorted(fold["train"] + fold["val"]) == sorted(cases)  # every case once per fold
        assert {group_of(c) for c in fold["train"]}.isdisjoint({group_of(c) for c in fold["val"]})  # no patient on both sides
        assert fold["val"]
    validated = sorted(c for fold in folds[1:] for c in fold["val"])
    assert validated == sorted(cases)  # folds 1-4: each case validated exactly once
    sizes = [len(f["val"]) for f in folds[1:]]
    assert max(sizes) - min(sizes) <= 2  # balanced to within one patient
    assert "group_folds(k=4, seed=3)" in json.loads((ds / "dataset.json").read_text())["segshift"]["folds"]
    # fewer patients than folds: one fold per patient; one patient: none
    from segshift.engine.splits import group_folds

    assert [v for _, v in group_folds(["a_frame01", "a_frame02", "b"], 4, 0)] in (
        [["a_frame01", "a_frame02"], ["b"]],
        [["b"], ["a_frame01", "a_frame02"]],
    )
    assert group_folds(["a_frame01", "a_frame02"], 4, 0) == []
