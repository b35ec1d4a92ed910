"""Adversarial alignment: GAN losses, GFRM, adaptseg / advent / adanet.

What is checked: the two steps are isolated (the segmenter step leaves every discriminator
untouched and the discriminator step leaves the segmenter untouched), each adanet switch
changes exactly what it names, the methods train and predict through the engine, a NaN
stops the run at the right step with the last checkpoint intact, adaptseg beats
source-only on the phantom's target domain and full adanet aligns without losing the source
(target labels used for evaluation only).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from segshift.cli.main import main
from segshift.data.domain import Domain
from segshift.engine import checkpoint as ckpt
from segshift.engine.build import build_method
from segshift.engine.config import resolve
from segshift.engine.trainer import TrainingDiverged, train
from segshift.engine.validate import dice_3d
from segshift.errors import SegshiftError
from segshift.inference.predictor import Predictor
from segshift.losses import d_loss, frozen, g_loss, self_information_map
from segshift.methods import available_methods, get_method
from segshift.methods.adanet import ABLATIONS
from segshift.methods.base import TARGET_NORM, Batch
from segshift.nets import GroupFeatureRecalibration
from tests.conftest import torchrun_train
from tests.methods.conftest import FAST, built_method, random_batch

# small discriminators for CPU tests (the paper's widths are the defaults)
SMALL_D = ["method.d_channels=[16,32,64,64,1]"]
FULL_WEIGHT = 10_000  # a step past the default discriminator warm-up and ramp: the alignment weight is 1


def _method(name: str, sets=(), features=(4, 8, 16, 32)):
    model = "model.kwargs={features: [%s]}" % ",".join(map(str, features))
    return built_method(name, [model, *SMALL_D, *sets])


def _batch(n=4, size=32, seed=0):
    return random_batch(n, size, seed)


def _snapshot(modules):
    return [t.detach().clone() for m in modules for t in list(m.parameters()) + list(m.buffers())]


def _same(a, b):
    return len(a) == len(b) and all(x.equal(y) for x, y in zip(a, b))


# -- losses ---------------------------------------------------------------------------------
def test_gan_losses_follow_the_source_is_real_convention():
    big = torch.full((2, 1, 3, 3), 30.0)
    assert float(d_loss(big, -big)) < 1e-6  # D right: source scored 1, target 0
    assert float(d_loss(-big, big)) > 10  # D fooled
    assert float(g_loss(big)) < 1e-6 and float(g_loss(-big)) > 10  # target scored "source" is what G wants
    assert math.isclose(float(g_loss(torch.zeros(4))), math.log(2), rel_tol=1e-6)
    assert g_loss(torch.zeros(2, dtype=torch.bfloat16)).dtype == torch.float32


def test_frozen_blocks_parameter_gradients_but_not_input_gradients():
    d = torch.nn.Linear(3, 1)
    d.bias.requires_grad_(False)  # frozen elsewhere: must stay frozen after the block
    x = torch.randn(5, 3, requires_grad=True)
    with frozen(d, None):
        assert not any(p.requires_grad for p in d.parameters())
        d(x).sum().backward()
    assert x.grad is not None and d.weight.grad is None
    assert d.weight.requires_grad and not d.bias.requires_grad
    with pytest.raises(RuntimeError), frozen(d):
        raise RuntimeError("boom")
    assert d.weight.requires_grad


def test_self_information_sums_to_the_normalised_entropy():
    logits = torch.randn(2, 4, 5, 5) * 3
    info = self_information_map(logits)
    p = logits.softmax(1)
    ref = -(p * p.log()).sum(1, keepdim=True) / math.log(4)
    assert info.shape == logits.shape and info.min() >= 0
    torch.testing.assert_close(info.sum(1, keepdim=True), ref, rtol=1e-5, atol=1e-6)


# -- GFRM -------------------------------------------------------------------------------------
def test_gfrm_shape_grouping_and_attention_range():
    gfrm = GroupFeatureRecalibration([64, 32, 16, 8], channels=8, groups=4)
    feats = [torch.randn(2, c, s, s) for c, s in [(64, 5), (32, 10), (16, 20), (8, 40)]]
    out, ca, sa = gfrm(feats, return_attention=True)
    assert out.shape == (2, 32, 40, 40) and gfrm.out_channels == 32 and gfrm.group_channels == 8
    assert ca.shape == (2, 32, 1, 1) and sa.shape == (2, 4, 40, 40)
    for att in (ca, sa):
        assert att.min() >= 0 and att.max() <= 1
    # each group holds a slice of every level: zeroing one level's input changes every group
    fused = gfrm.fuse(feats)
    zeroed = gfrm.fuse([feats[0] * 0, *feats[1:]])
    changed = (fused - zeroed).abs().flatten(2).amax(-1)[0].reshape(4, 8).amax(-1)
    assert (changed > 0).all()
    assert gfrm(feats, size=(20, 20)).shape == (2, 32, 20, 20)
    with pytest.raises(ValueError, match="multiple of groups"):
        GroupFeatureRecalibration([8], channels=6, groups=4)
    with pytest.raises(ValueError, match="4 feature levels"):
        gfrm(feats[:3])


# -- registry and configuration ------------------------------------------------------------------
def test_methods_are_registered_with_their_defaults(capsys):
    assert {"adaptseg", "advent", "adanet"} <= set(available_methods())
    assert all(get_method(n).uses_target for n in ("adaptseg", "advent", "adanet"))
    assert main(["methods", "--config", "adanet"]) == 0
    out = capsys.readouterr().out
    for text in (
        "name: attention_unet",
        "histmatch: true",
        "optimizer: sgd",
        "lr: 0.01",
        "jaccard: 0.5",
        "lambda_g_mask: 0.005",
        "lambda_g_feat: 0.05",
        "lambda_d_feat: 1.0",
        "d_lr: 0.0002",
        "seg_lr_floor: 0.1",
        "gfrm: true",
        "d_warmup_steps: 50",
        "ramp_steps: 100",
    ):
        assert text in out, text
    assert main(["methods", "--config", "adaptseg"]) == 0
    assert "lambda_adv: 0.001" in capsys.readouterr().out
    with pytest.raises(Exception, match="method.mode"):
        _method("advent", ["method.mode=bogus"])


def _lrs(m, steps):
    sched, opt = m.schedulers["seg"], m.optimizers["seg"]
    out = []
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize(
    ("sets", "kind", "lr0"),
    [
        ([], torch.optim.SGD, 0.01),  # the paper: SGD 0.01 -> 0.001
        (["train.optimizer=adam", "train.lr=0.001"], torch.optim.Adam, 0.001),  # a tenth under Adam too: 0.001 -> 0.0001
    ],
)
def test_adanet_lr_decays_to_a_tenth_and_stays(sets, kind, lr0):
    m = _method("adanet", ["train.steps=100", "train.warmup_steps=0", *sets])
    opt = m.optimizers["seg"]
    assert isinstance(opt, kind) and opt.param_groups[0]["lr"] == pytest.approx(lr0)
    if kind is torch.optim.SGD:
        assert opt.defaults["nesterov"]
    lrs = _lrs(m, 100)
    assert lrs[10] < lr0 and lrs[10] > 0.1 * lr0  # decays...
    assert min(lrs) == pytest.approx(0.1 * lr0) and lrs[-1] == pytest.approx(0.1 * lr0)  # ...to the floor, and stays
    first = next(i for i, v in enumerate(lrs) if v <= 0.1 * lr0 * (1 + 1e-9))
    assert 50 < first < 99 and all(v == pytest.approx(0.1 * lr0) for v in lrs[first:])
    # seg_lr_floor=0: the plain train.schedule (poly to 0)
    assert _lrs(_method("adanet", ["train.steps=100", "train.warmup_steps=0", "method.seg_lr_floor=0", *sets]), 100)[-1] == 0.0
    with pytest.raises(SegshiftError, match="method.seg_lr_floor"):
        _method("adanet", ["method.seg_lr_floor=1.5"])


def test_adanet_rows_share_backbone_optimiser_and_schedule():
    """Every Table-1 row is adanet with switches: the same network, optimiser, lr schedule and loss."""
    cfgs = {row: resolve("adanet", sets=sets) for row, sets in ABLATIONS.items()}
    ref = cfgs["S2T+HM+MDA+FDA+GFRM"]
    for row, cfg in cfgs.items():
        assert cfg["model"] == ref["model"] and cfg["train"] == ref["train"], row
        assert cfg["method"]["seg_lr_floor"] == ref["method"]["seg_lr_floor"] == 0.1
    assert cfgs["S2T"]["method"]["mda"] is cfgs["S2T"]["method"]["fda"] is False
    assert cfgs["S2T"]["data"]["preprocess"]["histmatch"] is False and ref["data"]["preprocess"]["histmatch"] is True
    assert ref["model"]["name"] == "attention_unet" and ref["train"]["optimizer"] == "sgd"


# -- the two steps are isolated -------------------------------------------------------------------
@pytest.mark.parametrize(("name", "sets"), [("adaptseg", []), ("advent", []), ("adanet", []), ("adanet", ["method.gfrm=false"])])
def test_segmenter_and_discriminator_steps_are_isolated(name, sets):
    torch.manual_seed(0)
    m = _method(name, sets)
    d_nets = m.discriminator_nets()
    assert d_nets and list(m.inference_nets()) == ["seg"]
    seg0, d0 = _snapshot([m.nets["seg"]]), _snapshot(d_nets)
    values, inputs = m.segmenter_step(_batch(), FULL_WEIGHT)  # Step 1
    assert _same(d0, _snapshot(d_nets)), "the segmenter step changed a discriminator"
    assert all(p.grad is None for d in d_nets for p in d.parameters()), "the segmenter step left gradients in D"
    assert not _same(seg0, _snapshot([m.nets["seg"]]))
    assert all(
        not t.requires_grad
        for s, tt in inputs.values()
        for t in (s if isinstance(s, list) else [s]) + (tt if isinstance(tt, list) else [tt])
    )
    seg1 = _snapshot([m.nets["seg"]])
    grads1 = [p.grad.clone() for p in m.nets["seg"].parameters()]
    d_values = m.discriminator_step(inputs)  # Step 2
    assert _same(seg1, _snapshot([m.nets["seg"]])), "the discriminator step changed the segmenter"
    assert all(p.grad.equal(g) for p, g in zip(m.nets["seg"].parameters(), grads1))
    assert not _same(d0, _snapshot(d_nets))
    for v in {**values, **d_values}.values():
        assert type(v) is float and math.isfinite(v)


# -- adanet switches (Table 1 rows) ------------------------------------------------------------------
def _own(m):
    """The method's networks: ``m.nets`` without the target batch-norm statistics the build adds (``norm_stats=domain``)."""
    return {n for n in m.nets if not n.endswith(TARGET_NORM)}


def _first_conv(d):
    return next(mod for mod in d.modules() if isinstance(mod, torch.nn.Conv2d))


def test_each_adanet_switch_changes_what_it_names():
    rows = {row: _method("adanet", sets + ["method.gfrm_channels=8"], features=(4, 8, 16, 32)) for row, sets in ABLATIONS.items()}
    nets = {row: _own(m) for row, m in rows.items()}
    assert nets["S2T"] == nets["S2T+HM"] == {"seg"}
    assert nets["S2T+HM+MDA"] == {"seg", "d_mask"}
    assert nets["S2T+HM+MDA+FDA"] == {"seg", "d_mask", "d_feat"}
    assert nets["S2T+HM+MDA+FDA+GFRM"] == {"seg", "d_mask", "d_feat", "gfrm"}
    assert set(rows["S2T+HM+MDA+FDA+GFRM"].optimizers) == {"seg", "d_mask", "d_feat"}
    # D_m sees class probabilities; D_f the bottleneck (32 channels) or GFRM's 4 levels x 8 channels
    assert _first_conv(rows["S2T+HM+MDA"].nets["d_mask"]).in_channels == 4
    assert _first_conv(rows["S2T+HM+MDA+FDA"].nets["d_feat"]).in_channels == 32
    assert _first_conv(rows["S2T+HM+MDA+FDA+GFRM"].nets["d_feat"]).in_channels == 4 * 8
    # the GFRM optimiser is the feature discriminator's (GFRM is on the discriminator side)
    full = rows["S2T+HM+MDA+FDA+GFRM"]
    opt_params = {id(p) for g in full.optimizers["d_feat"].param_groups for p in g["params"]}
    assert {id(p) for p in full.nets["gfrm"].parameters()} <= opt_params
    # logged terms follow the switches; without alignment the target is not even forwarded
    keys = {}
    for row, m in rows.items():
        v, inputs = m.segmenter_step(_batch(), FULL_WEIGHT)
        v.update(m.discriminator_step(inputs))
        keys[row] = set(v)
    assert not any(k.startswith(("adv_", "loss_d", "d_acc_", "grad_ratio_")) for k in keys["S2T"])
    assert {"adv_d_mask", "loss_d_mask"} <= keys["S2T+HM+MDA"] and "adv_d_feat" not in keys["S2T+HM+MDA"]
    assert {"adv_d_mask", "adv_d_feat", "loss_d_feat"} <= keys["S2T+HM+MDA+FDA"]
    assert {"ce", "jaccard"} <= keys["S2T"]
    b = _batch()
    rows["S2T"].segmenter_step(Batch(b.source_image, b.source_label, b.source_domain, None), FULL_WEIGHT)
    # feature alignment without GFRM on the bottleneck only; GFRM without FDA builds nothing
    assert _own(_method("adanet", ["method.mda=false", "method.fda=false", "method.gfrm=true"])) == {"seg"}
    assert _own(_method("adanet", ["method.mda=false"])) == {"seg", "gfrm", "d_feat"}


def test_advent_modes():
    adv, ment = _method("advent"), _method("advent", ["method.mode=minent"])
    assert _first_conv(adv.nets["d"]).in_channels == 4 and _own(ment) == {"seg"} and set(ment.optimizers) == {"seg"}
    v, inputs = ment.segmenter_step(_batch(), FULL_WEIGHT)
    assert "ent_target" in v and inputs == {} and ment.discriminator_step(inputs) == {}


# -- through the engine: train, predict, HM switch, divergence -----------------------------------------
ENGINE = FAST + SMALL_D + ["train.steps=4", "train.eval_every=4", "train.batch_size=4"]


def _train(method, phantom, run, sets=()):
    cfg = resolve(method, sets=[*ENGINE, *sets])
    return train(cfg, [phantom["bssfp"]], phantom["lge"], run, progress=False)


@pytest.mark.parametrize(
    ("method", "sets"),
    [
        ("adaptseg", []),
        ("advent", []),
        ("advent", ["method.mode=minent"]),
        ("adanet", ["model.kwargs={features: [8,16,32,64]}", "method.gfrm_channels=8"]),
    ],
)
def test_methods_train_and_predict(phantom, tmp_path, method, sets):
    run = tmp_path / "run"
    summary = _train(method, phantom, run, sets)
    assert summary["finished"] and not summary["oracle"]
    header = (run / "logs" / "train.csv").read_text().splitlines()[0]
    assert "loss_seg" in header and ("loss_d" in header or "method.mode=minent" in sets)
    dom = Domain(phantom["lge"])
    img = dom.load_image(dom.cases[0])
    pred = Predictor(run, device="cpu").predict_volume(img)
    assert pred.mask.shape == img.shape and set(np.unique(pred.mask)) <= {0, 1, 2, 3}
    # the best checkpoint (prediction) holds only the segmenter (and its target-domain batch-norm statistics,
    # norm_stats=domain); last (resume) holds everything
    best = ckpt.read_state(run / "checkpoints" / "best")
    assert set(best["files"]) == {"weights.safetensors"}
    assert {k.split(".")[0] for k in load_file(str(run / "checkpoints" / "best" / "weights.safetensors"))} == {"seg", "seg_target_norm"}
    last = {k.split(".")[0] for k in load_file(str(run / "checkpoints" / "last" / "weights.safetensors"))} - {"seg_target_norm"}
    assert "seg" in last and (len(last) > 1) == ("method.mode=minent" not in sets)  # discriminators kept for resume
    hist = json.loads((run / "preprocess.json").read_text())["config"]["histmatch"]
    assert hist is (method == "adanet")


def test_adanet_trains_on_several_labelled_sources_at_once(phantom, tmp_path, monkeypatch):
    """Wang et al. train on bSSFP and T2 together: every batch mixes both sources, HM maps both to the first."""
    from segshift.data.phantom import generate_phantom

    t2 = generate_phantom(tmp_path / "ph", presets=["t2"], n_cases=4, seed=5)["t2"]
    cls = get_method("adanet")
    seen: list[set[int]] = []
    original = cls.train_step

    def spy(self, batch, step):
        seen.append(set(batch.source_domain.tolist()))
        assert batch.source_label.shape[0] == batch.source_image.shape[0] == 4
        return original(self, batch, step)

    monkeypatch.setattr(cls, "train_step", spy)
    cfg = resolve(
        "adanet", sets=[*ENGINE, "model.kwargs={features: [8,16,32,64]}", "method.gfrm_channels=8", "train.steps=2", "train.eval_every=2"]
    )
    summary = train(cfg, [phantom["bssfp"], t2], phantom["lge"], tmp_path / "run", progress=False)
    assert seen == [{0, 1}, {0, 1}]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert len(info["sources"]) == 2 and len(info["plan"]["train"]) == 2 and len(info["plan"]["val"]) == 2
    assert summary["finished"] and 0.0 <= summary["best_val_mean_dice"] <= 1.0  # validated on both sources' held-out cases


def test_adanet_hm_switch_is_the_preprocessing_key(phantom, tmp_path):
    sets = ["model.kwargs={features: [8,16,32,64]}", "train.steps=1", "train.eval_every=1", *ABLATIONS["S2T"]]
    _train("adanet", phantom, tmp_path / "s2t", sets)
    assert json.loads((tmp_path / "s2t" / "preprocess.json").read_text())["config"]["histmatch"] is False
    with pytest.raises(Exception, match="unknown key 'method.hm'"):
        resolve("adanet", sets=["method.hm=false"])


def test_nan_step_stops_the_run_and_keeps_the_last_checkpoint(phantom, tmp_path, monkeypatch):
    cls = get_method("adaptseg")
    original = cls.train_step

    def poisoned(self, batch, step):
        if step == 5:
            batch.source_image[:] = float("nan")
        return original(self, batch, step)

    monkeypatch.setattr(cls, "train_step", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="at step 5"):
        _train("adaptseg", phantom, run, ["train.steps=8", "train.eval_every=100", "train.checkpoint_every=2"])
    last = run / "checkpoints" / "last"
    state = ckpt.read_state(last)  # hashes checked: intact
    assert state["step"] == 4
    m = build_method(state["config"], "train", num_classes=4, load=lambda m: ckpt.load_weights(last, m.nets))
    ckpt.load_training_state(last, m.optimizers, m.schedulers)
    assert all(torch.isfinite(p).all() for p in m.nets.parameters())
    assert not (run / "summary.json").exists()


def test_adaptseg_resume_equals_uninterrupted(phantom, tmp_path):
    """Discriminators and their optimisers are checkpointed: a resumed run ends bit-identical."""
    cfg = resolve("adaptseg", sets=[*ENGINE, "train.steps=6", "train.eval_every=3", "train.checkpoint_every=100", "seed=5"])
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "full", progress=False)
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "part", stop_after=3, progress=False)
    train(cfg, [], None, tmp_path / "part", resume=True, progress=False)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / "last" / "weights.safetensors"))
    assert {k.split(".")[0] for k in a} == {"seg", "seg_target_norm", "d"} and a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)


@pytest.mark.slow  # ~16 s; with tests/engine/test_trainer.py's source-only torchrun test in make test-all
def test_adanet_under_torchrun_keeps_identical_replicas(phantom, tmp_path):
    """DDP: the segmenter is wrapped through forward_features, GFRM and both discriminators too; the run
    records its world size and saves rank 0's final state. make test checks the discriminator's DDP passes
    without processes (tests/methods/test_step_cost.py)"""
    sets = FAST + SMALL_D + ["train.steps=3", "train.batch_size=4", "train.eval_every=3", "method.gfrm_channels=8"]
    r0, r1 = torchrun_train("adanet", phantom["bssfp"], tmp_path / "ddp", target=phantom["lge"], sets=sets)
    assert {k.split(".")[0] for k in r0} == {"seg", "seg_target_norm", "gfrm", "d_feat", "d_mask"} and r0.keys() == r1.keys()
    assert all(r0[k].equal(r1[k]) for k in r0)
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["world_size"] == 2
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["finished"]
    last = load_file(str(tmp_path / "ddp" / "checkpoints" / "last" / "weights.safetensors"))
    assert last.keys() == r0.keys() and all(last[k].equal(r0[k]) for k in r0)  # the saved checkpoint is rank 0's final state


# -- adaptation helps on the phantom (target labels for evaluation only) --------------------------------
def _target_dice(run, phantom) -> float:
    pred = Predictor(run, device="cpu")
    dom = Domain(phantom["lge"])
    scores = []
    for case in dom.cases:
        img, lab = dom.load(case)
        scores.append(np.mean(list(dice_3d(pred.predict_volume(img).mask, lab.array, pred.structures).values())))
    return float(np.mean(scores))


@pytest.mark.slow
def test_adaptseg_beats_source_only_on_the_phantom_target(phantom, tmp_path):
    """bSSFP -> LGE phantom, 200 steps at FAST settings, seed 2 (about 70 s on 2 CPU cores).

    Measured (target mean Dice over the 10 LGE cases; same seed, so same initialisation,
    split and source batches): at 200 steps source-only 0.794, adaptseg 0.860; at 300 steps
    over seeds 0/2/3 source-only 0.789/0.790/0.835, adaptseg (lambda_adv 0.01) 0.839/0.872/0.882.
    Seed 1 is left out: there source-only and adaptseg alike miss one class on the *source*
    validation (Dice 0 for RV; a known early-training trap of the small U-Net) and the gain is
    only +0.01. The asserted margin, 0.02, is well below the gains seen when both learn the
    source; both must learn it, so the comparison is about adaptation, not a lucky class.

    Those numbers were measured with label-centred crops, one segmenter pass per domain
    (``train.norm_stats=separate``) and no discriminator warm-up. With the default
    schedule (50 warm-up + 100 ramp steps): source-only 0.806; adaptseg 0.861 under the
    default ``domain`` policy (target statistics of its own), 0.851 under ``separate``, 0.041
    under ``joint`` (one batch-norm pass over source and target: the target collapses, 0.138
    even with ``lambda_adv`` 0).
    """
    sets = FAST + SMALL_D + ["train.steps=200", "train.eval_every=200", "train.checkpoint_every=200", "seed=2", "method.lambda_adv=0.01"]
    scores, val = {}, {}
    for method in ("source-only", "adaptseg"):
        cfg = resolve(method, sets=[s for s in sets if not (s.startswith("method.") and method == "source-only")])
        summary = train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / method, progress=False)
        val[method] = summary["best_val_mean_dice"]
        scores[method] = _target_dice(tmp_path / method, phantom)
    assert min(val.values()) > 0.85, f"a run did not learn the source; source validation Dice {val}"
    assert scores["adaptseg"] > scores["source-only"] + 0.02, scores


@pytest.mark.slow
def test_full_adanet_aligns_without_losing_the_source_on_the_phantom(phantom, tmp_path):
    """bSSFP -> LGE phantom, full adanet (HM + MDA + FDA + GFRM), 200 steps at FAST settings, seed 2, fp32
    (about 80 s on 2 CPU cores): the alignment at full weight must not cost the source task or collapse the target.

    The default discriminator warm-up (50 steps) and ramp (100) put the alignment at full weight for the
    last 50 steps. Measured (fp32, seed 2): source validation Dice 0.917 (0.914 with AVX2 kernels), target
    mean Dice over the 10 LGE cases 0.848 (0.850); S2T at the same settings 0.934 and 0.823. A collapse of
    the kind ``joint`` gives (one batch-norm pass over both domains: target 0.04) fails it. fp32 is pinned
    because a gain over S2T changes sign with the precision and the CPU's kernels
    (docs/training.md); seed 0 is not used: there S2T and adanet alike miss RV on the source.
    """
    sets = (
        FAST
        + SMALL_D
        + [
            "train.optimizer=adam",
            "method.seg_lr_floor=0",
            "train.steps=200",
            "train.eval_every=200",
            "train.checkpoint_every=200",
            "seed=2",
            "method.gfrm_channels=8",
            "train.precision=fp32",
        ]
    )
    cfg = resolve("adanet", sets=sets + ABLATIONS["S2T+HM+MDA+FDA+GFRM"])
    run = tmp_path / "full"
    summary = train(cfg, [phantom["bssfp"]], phantom["lge"], run, progress=False)
    header, *rows = (run / "logs" / "train.csv").read_text().splitlines()
    log = [dict(zip(header.split(","), r.split(","))) for r in rows]
    assert summary["finished"] and all(math.isfinite(float(v)) for row in log for v in row.values() if v), "a logged value is not finite"
    assert {"adv_d_mask", "adv_d_feat", "loss_d_mask", "loss_d_feat"} <= set(log[-1]) and float(log[-1]["w_adv"]) == 1.0
    val = {k: float(v) for k, v in log[-1].items() if k.startswith("val_")}
    assert summary["best_val_mean_dice"] > 0.85 and min(val.values()) > 0.7, f"the source was not learned or was lost: {val}"
    target = _target_dice(run, phantom)
    assert target > 0.75, f"target mean Dice {target:.3f}: the alignment collapsed the target"
