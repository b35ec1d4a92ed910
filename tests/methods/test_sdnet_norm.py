"""SDNet's batch-norm policy (``train.norm_stats``) and its gradient diagnostics.

What is checked: under ``domain`` the labelled and the target rows go through the SDNet in
one pass each, the target's with the target statistics, which move away from the source's;
each term is the row-weighted mean of the passes (equal to one pass where batch norm uses
running statistics); under ``joint`` a step is the previous single-pass step bit for bit; the
frozen FA copy encodes target images with the target statistics of the switch; the
diagnostics leave weights, optimiser state and random state bit-identical; and on the phantom
a ``domain`` run reads no target label, keeps ``sdnet_target_norm`` in ``best``, and predicts a
target-domain input with the target statistics.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from segshift.data.domain import Domain
from segshift.engine.build import build_method
from segshift.engine.trainer import train
from segshift.inference.predictor import Predictor
from segshift.methods.sdnet import kl_normal
from tests.methods.conftest import random_batch, refuse_label_reads
from tests.methods.test_diagnostics import _equal_states
from tests.methods.test_sdnet import _cfg

FA = ["method.pretrain_steps=2", "train.steps=2"]


def _method(name, sets=(), seed=0):
    """``name`` built as the engine builds it (fp32, target statistics under ``domain``), in train mode."""
    torch.manual_seed(seed)
    m = build_method(_cfg(name, ["train.precision=fp32", "train.warmup_steps=0", *sets]), "train", num_classes=4)
    m.train(True)
    return m


def _first_bn(net):
    return next(mod for mod in net.modules() if isinstance(mod, torch.nn.BatchNorm2d))


def _steps(m, steps, diagnose=False, seed=123):
    torch.manual_seed(seed)
    logs = []
    for k in range(1, steps + 1):
        m.diagnostics = diagnose
        logs.append(m.train_step(random_batch(4, 32, seed=k), k))
    return logs


# -- the passes --------------------------------------------------------------------------------


def test_domain_runs_a_pass_per_domain_with_the_target_statistics():
    m = _method("sdnet-ss")
    bn, store = _first_bn(m.nets["sdnet"]), m.nets["sdnet_target_norm"]
    source_mean = bn.running_mean
    calls = []
    m.nets["sdnet"].register_forward_pre_hook(lambda mod, inp: calls.append((inp[0].shape[0], bn.running_mean is source_mean)))
    _steps(m, 3)
    assert calls == [(4, True), (4, False)] * 3  # labelled rows with the source statistics, then the target rows with their own
    assert store.trained() and bn.running_mean is source_mean  # swapped back after each pass
    key = store.names[0].replace(".", "__")
    # random_batch's target images are 2 N(0, 1) + 1: the first layer's target statistics moved away from the source's
    assert not torch.allclose(getattr(store, key + "__running_mean"), bn.running_mean)
    assert float(getattr(store, key + "__running_var").mean()) > float(bn.running_var.mean())
    m.train(False)
    x = torch.randn(2, 1, 32, 32) * 2 + 1
    with torch.no_grad(), m.target_norm():
        on_target = m.segmenter_logits(x)
    assert not torch.allclose(on_target, m.segmenter_logits(x))  # prediction: target_norm() swaps the SDNet's statistics

    joint = _method("sdnet-ss", ["train.norm_stats=joint"])
    sizes = []
    joint.nets["sdnet"].register_forward_pre_hook(lambda mod, inp: sizes.append(inp[0].shape[0]))
    _steps(joint, 2)
    assert sizes == [8, 8] and "sdnet_target_norm" not in joint.nets and not joint.uses_target_norm()


@pytest.mark.parametrize("n_target", [4, 2])
def test_each_term_is_the_row_weighted_mean_of_the_passes(monkeypatch, n_target):
    """With batch norm on running statistics and the prior at 0, rows are independent: the two
    passes of ``domain`` give the one pass of ``joint``, so the weighting is that of all rows."""
    b = random_batch(4, 32)
    target = b.target_image[:n_target]
    methods = {policy: _method("sdnet-ss", [f"train.norm_stats={policy}"]) for policy in ("domain", "joint")}
    monkeypatch.setattr(torch, "randn", lambda *shape, device=None, **kw: torch.zeros(*shape, device=device))
    out = {}
    for policy, m in methods.items():
        m.train(False)
        with torch.no_grad():
            parts, logits, _ = m.objective_terms(b.source_image, b.source_label, target)
        out[policy] = parts, logits
    (pd, ld), (pj, lj) = out["domain"], out["joint"]
    assert torch.allclose(ld, lj, atol=1e-6)
    assert pd.keys() == pj.keys() == {"rec", "zrec", "kl", "dice", "focal"}
    assert all(torch.allclose(pd[k], pj[k], rtol=1e-5, atol=1e-7) for k in pd), (pd, pj)


# -- joint: the previous step, bit for bit ------------------------------------------------------


def _previous_step(m, batch, step):
    """A step before per-domain passes: labelled and target rows in one pass, whatever the policy."""
    lab = m.labelled_images(batch, step)
    image, label = lab.image, lab.label
    n_lab = image.shape[0]
    image = torch.cat([image, batch.target_image])
    opt = m.optimizers["sdnet"]
    opt.zero_grad(set_to_none=True)
    z_prior = torch.randn(image.shape[0], m.nets["sdnet"].z_dim, device=image.device)
    out = m.call(m.net("sdnet"), image, z_prior)
    parts = {
        "rec": F.l1_loss(out.reconstruction.float(), image.float()),
        "zrec": F.l1_loss(out.mu_prior_rec.float(), z_prior),
        "kl": kl_normal(out.mu.float(), out.logvar.float()),
    }
    logits = out.logits[:n_lab].float()
    parts["dice"] = m.dice(logits, label)
    parts["focal"] = m.focal(logits, label)
    w = m.weights
    seg = w["dice"] * parts["dice"] + w["focal"] * parts["focal"]
    total = w["rec"] * parts["rec"] + w["zrec"] * parts["zrec"] + m.kl_weight * parts["kl"] + seg
    total.backward()
    opt.step()
    values = {"loss": float(total.detach()), "loss_seg": float(seg.detach())}
    values.update({k: float(v.detach()) for k, v in parts.items()})
    values.update(lab.log or {})
    return values


@pytest.mark.parametrize(("name", "sets"), [("sdnet-ss", []), ("sdnet-fa", FA)])
def test_joint_is_the_previous_single_pass_bit_for_bit(name, sets):
    new, old = _method(name, ["train.norm_stats=joint", *sets]), _method(name, ["train.norm_stats=joint", *sets])
    torch.manual_seed(7)
    logs_new = [new.train_step(random_batch(4, 32, seed=k), k) for k in (1, 2, 3, 4)]
    torch.manual_seed(7)
    logs_old = [_previous_step(old, random_batch(4, 32, seed=k), k) for k in (1, 2, 3, 4)]
    assert logs_new == logs_old
    sn, so = new.nets.state_dict(), old.nets.state_dict()
    assert sn.keys() == so.keys() and all(torch.equal(sn[k], so[k]) for k in sn)
    assert _equal_states(new.optimizers["sdnet"].state_dict(), old.optimizers["sdnet"].state_dict())


# -- sdnet-fa: the frozen copy's target statistics -------------------------------------------------


def test_the_fa_copy_encodes_target_images_with_the_target_statistics_of_the_switch():
    m = _method("sdnet-fa", FA)
    _steps(m, 3)  # 2 SS steps, then the switch (step 3)
    fa_store, store = m.nets["fa_target_norm"], m.nets["sdnet_target_norm"]
    assert fa_store.trained() and m.uses_target_norm("fa")
    m.train_step(random_batch(4, 32, seed=9), 4)
    moved = [k for k, v in store.state_dict().items() if "running_mean" in k and not torch.equal(v, fa_store.state_dict()[k])]
    assert moved  # the SDNet's target statistics train on; the frozen copy keeps those of the switch
    a = m.anatomy(torch.randn(3, 1, 32, 32))
    tgt = torch.randn(3, 1, 32, 32) * 2 + 1
    with_target = m.decode(a, tgt, net="fa", target=torch.ones(3, dtype=torch.bool))
    with_source = m.decode(a, tgt, net="fa")
    assert not torch.allclose(with_target, with_source)
    mixed = m.decode(a, tgt, net="fa", target=torch.tensor([True, False, True]))
    assert torch.allclose(mixed[[0, 2]], with_target[[0, 2]], atol=1e-5) and torch.allclose(mixed[1], with_source[1], atol=1e-5)


# -- the diagnostics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sets", "columns"),
    [
        ("sdnet-ss", [], {"grad_ratio_target"}),
        ("sdnet-ss", ["train.norm_stats=joint"], {"grad_ratio_target"}),
        ("sdnet-fa", FA, {"grad_ratio_target", "grad_ratio_fa"}),
        ("sdnet", [], set()),
    ],
)
def test_the_diagnostics_leave_the_weights_bit_identical(name, sets, columns):
    plain = _method(name, sets)
    plain_logs, plain_rng = _steps(plain, 4, False), torch.get_rng_state()
    diag = _method(name, sets)
    diag_logs, diag_rng = _steps(diag, 4, True), torch.get_rng_state()
    sp, sd = plain.nets.state_dict(), diag.nets.state_dict()
    assert sp.keys() == sd.keys() and not [k for k in sp if not torch.equal(sp[k], sd[k])]
    assert _equal_states(plain.optimizers["sdnet"].state_dict(), diag.optimizers["sdnet"].state_dict())
    assert torch.equal(plain_rng, diag_rng), "the diagnostics drew random numbers"
    for a, b in zip(plain_logs, diag_logs):
        assert {k: b[k] for k in a} == a and set(b) - set(a) == columns
    assert all(s[k] > 0 for s in diag_logs for k in columns if k != "grad_ratio_fa")
    if "grad_ratio_fa" in columns:  # stage 1 has no FA image; stage 2 replaces half the labelled batch
        assert [s["grad_ratio_fa"] == 0 for s in diag_logs] == [True, True, False, False]


# -- on the phantom ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def domain_run(phantom, tmp_path_factory):
    """sdnet-ss, ``norm_stats: auto`` (domain), 4 steps on the phantom, with every target label read refused."""
    run = tmp_path_factory.mktemp("sdnet-ss") / "run"
    with pytest.MonkeyPatch.context() as mp:
        refuse_label_reads(mp, phantom["lge"], "sdnet-ss")
        train(_cfg("sdnet-ss", ["train.steps=4", "train.eval_every=2", "seed=1"]), [phantom["bssfp"]], phantom["lge"], run, progress=False)
    return run


def test_a_domain_run_keeps_and_predicts_with_the_target_statistics(domain_run, phantom):
    best = load_file(str(domain_run / "checkpoints" / "best" / "weights.safetensors"))
    assert {k.split(".")[0] for k in best} == {"sdnet", "sdnet_target_norm"}
    assert int(best["sdnet_target_norm.passes"]) > 0
    first = next(k for k in best if k.startswith("sdnet_target_norm.") and k.endswith("running_mean"))
    module = first.removeprefix("sdnet_target_norm.").removesuffix("__running_mean").replace("__", ".")
    assert not torch.allclose(best[first], best[f"sdnet.{module}.running_mean"])  # the LGE-like target's own statistics
    image = Domain(phantom["lge"]).load_image("case000")
    on, off = Predictor(domain_run, target_domain=True), Predictor(domain_run, target_domain=False)
    assert on.target_norm and not off.target_norm
    p_on, p_off = on.predict_volume(image), off.predict_volume(image)
    assert p_on.qc["target_norm"] and not p_off.qc["target_norm"]
    assert p_on.qc["mean_entropy"] != p_off.qc["mean_entropy"]  # other statistics, other probabilities (4 steps: masks may agree)
