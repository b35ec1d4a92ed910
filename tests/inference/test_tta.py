"""Test-time adaptation at prediction: TENT (reset per volume, norm affine parameters only, deterministic,
source Dice kept) and flip averaging; the QC columns; the CLI's bounds."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

from segshift.cli.main import main
from segshift.data.domain import Domain
from segshift.errors import SegshiftError
from segshift.inference.predictor import Predictor
from segshift.inference.tta import TTA, TTAConfig
from segshift.metrics import evaluate_folders
from tests.methods.conftest import built_method


def _state(p: Predictor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in p.method.nets["seg"].state_dict().items()}


def test_tent_resets_between_volumes(trained_run, phantom):
    dom = Domain(phantom["lge"])
    a, b = dom.load_image("case000"), dom.load_image("case001")
    p = Predictor(trained_run, tta=TTAConfig("tent", steps=5, lr=0.005))
    before = _state(p)
    p.predict_volume(a)
    after_a = p.predict_volume(b)
    alone = Predictor(trained_run, tta=TTAConfig("tent", steps=5, lr=0.005)).predict_volume(b)
    assert np.array_equal(after_a.mask, alone.mask)
    assert after_a.qc["mean_entropy"] == alone.qc["mean_entropy"]  # bit for bit: deterministic, nothing leaked
    assert all(torch.equal(before[k], v) for k, v in _state(p).items())


def test_tent_keeps_a_runs_target_statistics(phantom, tmp_path):
    """With per-domain batch norm (adabn), target inputs are normalised with the target statistics, which TENT
    blends with each volume's and must give back intact: A then B equals B alone, and the store is unchanged."""
    from segshift.engine.config import resolve
    from segshift.engine.trainer import train
    from tests.conftest import FAST

    cfg = resolve("adabn", sets=FAST + ["train.steps=3", "train.eval_every=3"])
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "run", progress=False)
    dom = Domain(phantom["lge"])
    p = Predictor(tmp_path / "run", tta=TTAConfig("tent", steps=3, lr=0.005), target_domain=True)
    assert p.target_norm
    store = {k: v.clone() for k, v in p.method.nets["seg_target_norm"].state_dict().items()}
    seg = _state(p)
    p.predict_volume(dom.load_image("case000"))
    b = p.predict_volume(dom.load_image("case001"))
    alone = Predictor(tmp_path / "run", tta=TTAConfig("tent", steps=3, lr=0.005), target_domain=True).predict_volume(
        dom.load_image("case001")
    )
    assert np.array_equal(b.mask, alone.mask) and b.qc["mean_entropy"] == alone.qc["mean_entropy"]
    assert all(torch.equal(store[k], v) for k, v in p.method.nets["seg_target_norm"].state_dict().items())
    assert all(torch.equal(seg[k], v) for k, v in _state(p).items())


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_tent_changes_only_the_normalisation_affine_parameters(trained_run, phantom, alpha):
    """Only norm scales and shifts learn; with alpha > 0 the batch-norm statistics are also blended with the
    volume's for the duration of the volume; convolution weights never change, and reset() undoes everything."""
    p = Predictor(trained_run, tta=TTAConfig("tent", steps=5, lr=0.005, alpha=alpha))
    slices = torch.from_numpy(p.pre.apply(Domain(phantom["lge"]).load_image("case002")).image)[:, None]
    before = _state(p)
    p.tta.adapt(slices)  # the core of probs(), without its resets
    after = _state(p)
    norms = {n for n, m in p.method.nets["seg"].named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    learnt = {k for k in changed if k.rsplit(".", 1)[1] in ("weight", "bias")}
    assert learnt and all(k.rsplit(".", 1)[0] in norms for k in learnt), learnt
    stats = changed - learnt
    if alpha == 0:
        assert not stats, stats
    else:
        assert stats and all(k.rsplit(".", 1)[0] in norms for k in stats), stats
    first, last = p.tta.last_entropy
    assert last < first  # it minimised the entropy
    assert all(param.requires_grad for param in p.method.nets["seg"].parameters())  # flags restored
    p.tta.reset()
    assert all(torch.equal(before[k], v) for k, v in _state(p).items())


def test_tent_keeps_the_in_domain_dice(trained_run, phantom, tmp_path):
    """On held-out source-domain volumes, TENT at its defaults costs at most 0.01 mean Dice."""
    src = tmp_path / "in"
    src.mkdir()
    for c in ("case008", "case009"):
        shutil.copy(Domain(phantom["bssfp"]).image_path(c), src / f"{c}.nii.gz")
    dice = {}
    for mode in ("none", "tent"):
        assert main(["predict", str(trained_run), str(src), "--out", str(tmp_path / mode), "--tta", mode]) == 0
        dice[mode] = evaluate_folders(tmp_path / mode, phantom["bssfp"], cases=["case008", "case009"]).summary["overall"]["dice"]["mean"]
    assert dice["none"] > 0.8
    assert dice["tent"] >= dice["none"] - 0.01, dice
    rows = list(csv.DictReader((tmp_path / "tent" / "qc.csv").read_text(encoding="utf-8").splitlines()))
    assert rows[0]["tta"] == "tent (10 steps, lr 0.001, alpha 0.5)"
    for r in rows:  # what TTA changed: entropy and volumes before and after
        assert float(r["mean_entropy"]) <= float(r["mean_entropy_before_tta"])
        assert all(float(r[f"{s}_ml_before_tta"]) > 0 for s in ("LV", "MYO", "RV"))


def test_flip_averages_the_four_mirrorings_and_warns(trained_run, phantom, capsys):
    p = Predictor(trained_run, tta=TTAConfig("flip"))
    assert p.warnings and "trained without flips" in p.warnings[0]
    x = torch.from_numpy(p.pre.apply(Domain(phantom["lge"]).load_image("case000")).image)[:, None]
    got = p.tta.probs(x, p.method.predict_logits)
    want = (
        sum(
            torch.softmax(p.method.predict_logits(x.flip(d) if d else x), 1).flip(d) if d else torch.softmax(p.method.predict_logits(x), 1)
            for d in ((), (-1,), (-2,), (-2, -1))
        )
        / 4
    )
    torch.testing.assert_close(got, want)


def test_tent_refuses_a_segmenter_without_normalisation_layers():
    m = built_method("source-only", ["model.kwargs={features: [4, 8], norm: none}"])
    with pytest.raises(SegshiftError, match="has none; use --tta flip"):
        TTA(m, TTAConfig("tent"))


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--tta", "tent", "--tta-steps", "0"], "--tta-steps"),
        (["--tta", "tent", "--tta-lr", "1"], "--tta-lr"),
        (["--tta", "bogus"], "--tta must"),
    ],
)
def test_cli_bounds(trained_run, phantom, tmp_path, capsys, args, msg):
    assert main(["predict", str(trained_run), str(phantom["lge"]), "--out", str(tmp_path / "o"), *args]) != 0
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
