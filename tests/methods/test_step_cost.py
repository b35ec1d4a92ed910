"""The adversarial steps' shared passes keep their maths.

What is checked: a discriminator's scores of the target, computed once on the segmenter's (or
generators') side with its parameters live, serve its own update too, and the weights after
several steps equal those of the separate-pass formulation (D frozen in update 1, its own
passes in update 2; written below as the reference) within float tolerance, for every
adversarial and translation method, in the discriminator warm-up and at full weight; update 2 then forwards
only the source; under DDP (wrapped networks) the separate passes are used; a frozen network
builds no parameter gradient; ``adanet``'s ``fda_downsample`` fuses GFRM's levels at a lower
resolution and is the full-resolution fusion at 1.
"""

from __future__ import annotations

import contextlib
import types

import pytest
import torch
import torch.nn.functional as F

from segshift.engine.build import build_method
from segshift.engine.config import resolve
from segshift.errors import SegshiftError
from segshift.losses.adversarial import GAN_THRESHOLDS, d_accuracy, d_loss, frozen, g_loss
from segshift.methods.alignment import _cat, _detach, _rows
from tests.methods.conftest import random_batch

TINY_UNET = ["model.kwargs={features: [4,8,16,32]}"]
TINY_GAN = ["method.g_ngf=4", "method.g_blocks=1", "method.d_channels=[8,16,1]", "method.g_batch=0"]
SCHEDULE = ["method.d_warmup_steps=1", "method.ramp_steps=2"]  # step 1 warm-up (w = 0), step 2 ramp, then 1
CASES = {
    "adaptseg": [*TINY_UNET, "method.d_channels=[8,16,16,16,1]"],
    "advent": [*TINY_UNET, "method.d_channels=[8,16,16,16,1]"],
    "adanet": [*TINY_UNET, "method.d_channels=[8,16,16,16,1]", "method.gfrm_channels=8", "train.warmup_steps=0"],
    "adanet-nogfrm": [*TINY_UNET, "method.d_channels=[8,16,16,16,1]", "method.gfrm=false", "train.warmup_steps=0"],
    "attent": [*TINY_UNET, *TINY_GAN, "method.e_d_channels=[8,16,16,16,1]"],
    "cyclegan": [*TINY_UNET, *TINY_GAN, "method.lambda_identity=0.5", "method.gan_loss=bce"],
    "unetgan": ["model.name=resunet", "model.kwargs={features: [4,8,16,32], encoder_blocks: [1,2,3,3]}", *TINY_GAN, "method.seg_steps=1"],
    "unetgan-cycle": [
        "model.name=resunet",
        "model.kwargs={features: [4,8,16,32], encoder_blocks: [1,2,3,3]}",
        *TINY_GAN,
        "method.seg_steps=1",
        "method.ssim_pair=cycle",
        "method.lambda_cycle=1",
    ],  # SSIM reuses the cycle's images
}


def _method(case, sets=(), seed=0):
    name = case.split("-")[0]
    torch.manual_seed(seed)
    m = build_method(
        resolve(name, sets=[*CASES[case], *SCHEDULE, "train.precision=fp32", "train.channels_last=false", *sets]), "train", num_classes=4
    )
    m.train(True)
    return m


# -- the separate-pass formulation, the reference ---------------------------------------------------
def _old_generator_loss(self, target, weight=1.0):
    w = self.lambda_g * float(weight)
    grad = contextlib.nullcontext() if w > 0 else torch.no_grad()
    with frozen(*self.modules), grad:
        adv = g_loss(self.critic(target, wrapped=False))
    return (w * adv if w > 0 else None), adv.detach()


def _old_alignment_step(self, source, target):
    opt = self.method.optimizers[self.name]
    opt.zero_grad(set_to_none=True)
    source, target = _detach(source), _detach(target)
    n = _rows(source)
    scores = self.critic(_cat(source, target), wrapped=True).float()
    real, fake = scores[:n], scores[n:]
    loss = d_loss(real, fake)
    (self.lambda_d * loss).backward()
    opt.step()
    return {f"loss_{self.name}": float(loss.detach()), f"d_acc_{self.name}": d_accuracy(real, fake)}


def _old_generator_step(self, xs, xt, weight=1.0, extra=None):
    m = self.method
    g_s2t, g_t2s, d_s, d_t = self._nets("g_s2t", "g_t2s", "d_s", "d_t")
    opt = m.optimizers["g"]
    opt.zero_grad(set_to_none=True)
    values = {}
    with frozen(*(m.nets[n] for n in self.DISCRIMINATORS)):
        fake_t, fake_s = m.call(g_s2t, xs), m.call(g_t2s, xt)
        adv = self.objective.g_loss(m.call(d_t, fake_t)) + self.objective.g_loss(m.call(d_s, fake_s))
        total = weight * self.lambda_gan * adv
        values["g_adv"] = float(adv.detach())
        if self.lambda_cycle > 0:
            rec_s, rec_t = m.call(g_t2s, fake_t), m.call(g_s2t, fake_s)
            cyc = F.l1_loss(rec_s.float(), xs.float()) + F.l1_loss(rec_t.float(), xt.float())
            total = total + self.lambda_cycle * cyc
            values["cycle"] = float(cyc.detach())
        if self.lambda_identity > 0:
            idt = F.l1_loss(m.call(g_t2s, xs).float(), xs.float()) + F.l1_loss(m.call(g_s2t, xt).float(), xt.float())
            total = total + self.lambda_identity * idt
            values["identity"] = float(idt.detach())
        for name, (w, loss) in (extra(xs, xt, fake_t, fake_s) if extra else {}).items():
            total = total + w * loss.float()
            values[name] = float(loss.detach())
        total.backward()
    opt.step()
    values["loss_g"] = float(total.detach())
    return values, fake_t.detach(), fake_s.detach()


def _old_translator_step(self, xs, xt, fake_t, fake_s):
    m = self.method
    d_s, d_t = self._nets("d_s", "d_t")
    opt = m.optimizers["d_img"]
    opt.zero_grad(set_to_none=True)
    fake_t, fake_s = fake_t.detach(), fake_s.detach()
    scores_s, scores_t = m.call_each(d_s, xs, fake_s), m.call_each(d_t, xt, fake_t)
    ld_s, ld_t = self.objective.d_loss(*scores_s), self.objective.d_loss(*scores_t)
    (ld_s + ld_t).backward()
    opt.step()
    threshold = GAN_THRESHOLDS[str(self.hp["gan_loss"])]
    return {
        "loss_d_s": float(ld_s.detach()),
        "loss_d_t": float(ld_t.detach()),
        "d_acc_d_s": d_accuracy(*scores_s, threshold),
        "d_acc_d_t": d_accuracy(*scores_t, threshold),
    }


def _old_update(self, logits, labels, batch=None, terms=None):
    opt = self.optimizers["seg"]
    opt.zero_grad(set_to_none=True)
    total, parts = self.loss(logits.float(), labels)
    values = {"loss_seg": total.detach(), **parts}
    for name, (term, logged) in (terms or {}).items():
        if term is not None:
            total = total + term.float()
        values[name] = logged.detach() if isinstance(logged, torch.Tensor) else logged
    total.backward()
    opt.step()
    values["loss"] = total.detach()
    return {k: float(v) for k, v in values.items()}


def _previous_formulation(m):
    """``m`` with every update in the separate-pass formulation (bound on the instance)."""
    alignments = list(getattr(m, "alignments", {}).values()) + ([m.d_e] if hasattr(m, "d_e") else [])
    for al in alignments:
        al.generator_loss = types.MethodType(_old_generator_loss, al)
        al.discriminator_step = types.MethodType(_old_alignment_step, al)
    if getattr(m, "translator", None) is not None:
        m.translator.generator_step = types.MethodType(_old_generator_step, m.translator)
        m.translator.discriminator_step = types.MethodType(_old_translator_step, m.translator)
    m.segmenter_update = types.MethodType(_old_update, m)
    return m


def _steps(m, steps=(1, 2, 10_000)):
    """A step in the discriminator warm-up, one in the ramp, one at full weight (unetgan: stage 2 after step 1)."""
    if m.name == "unetgan":
        steps = (1, 2, 3, 10_000)
    return [m.train_step(random_batch(4, 32, seed=k), k) for k in steps]


@pytest.mark.parametrize("case", list(CASES))
def test_the_shared_passes_give_the_previous_weights(case):
    new, old = _method(case), _previous_formulation(_method(case))
    logs_new, logs_old = _steps(new), _steps(old)
    for a, b in zip(logs_new, logs_old):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5) for k in a), (a, b)
    sn, so = new.nets.state_dict(), old.nets.state_dict()
    assert sn.keys() == so.keys()
    bad = {
        k: float((sn[k].float() - so[k].float()).abs().max())
        for k in sn
        if not torch.allclose(sn[k].float(), so[k].float(), rtol=1e-4, atol=1e-5)
    }
    assert not bad, bad


def _d_batches(m, name):
    sizes = []
    m.nets[name].register_forward_pre_hook(lambda mod, args: sizes.append(args[0].shape[0]))
    return sizes


def test_the_discriminator_update_forwards_only_the_source():
    m = _method("adaptseg")
    sizes = _d_batches(m, "d")
    m.train_step(random_batch(4, 32), 10_000)
    assert sizes == [4, 4]  # D(target) in step 1 (shared), D(source) in step 2; before: [4, 8]
    c = _method("cyclegan")
    sizes = _d_batches(c, "d_t")
    c.train_step(random_batch(4, 32), 10_000)
    assert sizes == [4, 4]  # D_T(G_S2T(x_s)) in update 1 (shared), D_T(x_t) in update 2; before: [4, 4, 4]


def test_unetgan_ssim_on_the_cycle_reuses_the_cycle_images():
    m = _method("unetgan-cycle")
    m.train_step(random_batch(4, 32), 1)  # stage 1
    sizes = _d_batches(m, "g_t2s")
    m.train_step(random_batch(4, 32), 10_000)
    assert sizes == [4, 4]  # G_T2S(x_t), G_T2S(G_S2T(x_s)) once each; before, SSIM recomputed the second


def test_under_ddp_the_discriminator_keeps_its_own_passes():
    m = _method("adaptseg")
    m.wrap(lambda module: module)  # as DDP would wrap the trainable networks (identity here)
    assert not m.alignments["d"].shares_target_pass()
    sizes = _d_batches(m, "d")
    m.train_step(random_batch(4, 32), 10_000)
    assert sizes == [4, 8]  # frozen D on the target, then one pass over both domains


@pytest.mark.parametrize(
    "case, frozen_nets, update",
    [
        ("adaptseg", ("d",), "segmenter_update"),
        ("adanet", ("gfrm", "d_feat", "d_mask"), "segmenter_update"),
        ("attent", ("d_e",), "segmenter_update"),
        ("cyclegan", ("d_s", "d_t"), "generator_step"),
        ("unetgan", ("d_s", "d_t", "seg"), "generator_step"),
    ],
)
def test_a_frozen_network_builds_no_parameter_gradient(case, frozen_nets, update):
    m = _method(case)
    phase, grads = [], []
    for n in frozen_nets:
        for p in m.nets[n].parameters():
            if p.requires_grad:
                p.register_hook(lambda g, n=n: grads.append((n, bool(phase))))
    owner = m.translator if update == "generator_step" else m
    original = getattr(owner, update)

    def traced(*a, **k):
        phase.append(1)
        try:
            return original(*a, **k)
        finally:
            phase.pop()

    setattr(owner, update, traced)
    _steps(m)
    assert not [n for n, inside in grads if inside], "a frozen network got parameter gradients in the update it does not train"
    assert any(not inside for _, inside in grads) or case == "unetgan"  # its own update still trains it


def test_fda_downsample_fuses_gfrm_at_a_lower_resolution():
    full, half = _method("adanet"), _method("adanet", ["method.fda_downsample=2"])
    assert full.hp["fda_downsample"] == 1  # the default: the paper's full resolution
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        _, feats = full.call("seg_features", x)
        assert all(a is b for a, b in zip(full.feature_input(feats), feats))  # full resolution: the levels as they are
        levels = half.feature_input(feats)
        assert max(f.shape[-1] for f in levels) == 32 and levels[0] is feats[0]
        gfrm = half.nets["gfrm"]
        # downsampling the finest level before GFRM's 1x1 projection = GFRM fusing at that size
        torch.testing.assert_close(gfrm(levels), gfrm(list(feats), size=(32, 32)), rtol=1e-4, atol=1e-5)
        assert (
            half.alignments["d_feat"].critic(levels, wrapped=False).shape[-1]
            < full.alignments["d_feat"].critic(list(feats), wrapped=False).shape[-1]
        )
    no_gfrm = _method("adanet-nogfrm", ["method.fda_downsample=4"])
    with torch.no_grad():
        assert no_gfrm.feature_input(feats).shape[-2:] == (16, 16)
    with pytest.raises(SegshiftError, match="method.fda_downsample"):
        _method("adanet", ["method.fda_downsample=0"])
