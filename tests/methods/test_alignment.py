"""The shared alignment module and its schedule, and the segmenter's batch-norm policy.

What is checked: the schedule's values (0 during the discriminator warm-up, the sigmoid ramp,
then 1) and its validation; that during the warm-up the segmenter's update *equals* a
source-only update on the same batch (no adversarial gradient at all), and differs after it;
that the alignment module's two updates are isolated; that ``train.norm_stats=joint`` runs
the segmenter once per step over both domains, ``separate`` once per domain, and ``frozen``
leaves the init run's batch-norm statistics untouched; and that ``adaptseg`` with
``lambda_adv=0`` is ``source-only``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from segshift.engine.build import build_method
from segshift.engine.config import resolve
from segshift.errors import SegshiftError
from segshift.losses.adversarial import GAN_OBJECTIVES, GanObjective
from segshift.methods import get_method
from segshift.methods.alignment import SCHEDULE_HPARAMS, AdversarialAlignment, AlignmentSchedule
from segshift.methods.base import Batch, Method
from segshift.methods.hparams import defaults, validate
from segshift.methods.source_only import SourceOnly
from segshift.utils.execution import ExecutionPolicy

ALIGNERS = ("adaptseg", "advent", "adanet", "attent")  # every user of AdversarialAlignment
FULL_WEIGHT = 10_000  # a step past the default warm-up and ramp
INIT = "init=runs/some-source-only-run"  # a warm start (the method itself never reads the folder)
FROZEN = [INIT, "train.norm_stats=frozen"]

SMALL = {
    "adaptseg": ["method.d_channels=[8,16,16,16,1]"],
    "advent": ["method.d_channels=[8,16,16,16,1]"],
    "adanet": ["method.d_channels=[8,16,16,16,1]", "method.gfrm_channels=8", "train.warmup_steps=0"],
    "attent": [
        "method.g_ngf=4",
        "method.g_blocks=1",
        "method.d_channels=[8,16,1]",
        "method.g_batch=0",
        "method.e_d_channels=[8,16,16,16,1]",
    ],
    "cyclegan": ["method.g_ngf=4", "method.g_blocks=1", "method.d_channels=[8,16,1]", "method.g_batch=0"],
    "source-only": [],
}


def _cfg(name, sets=()):
    return resolve(
        name,
        sets=["model.kwargs={features: [4,8,16,32]}", "train.precision=fp32", "train.channels_last=false", *SMALL.get(name, []), *sets],
    )


def _build(cfg, seed=0):
    torch.manual_seed(seed)
    m = build_method(cfg, "train", num_classes=4)
    m.train(True)
    return m


def _method(name, sets=(), seed=0):
    return _build(_cfg(name, sets), seed)


def _batch(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randn(n, 1, size, size, generator=g),
        torch.randint(0, 4, (n, size, size), generator=g),
        torch.zeros(n, dtype=torch.long),
        torch.randn(n, 1, size, size, generator=g) * 2 + 1,
    )


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


# -- the schedule ----------------------------------------------------------------------------------
def test_schedule_values():
    s = AlignmentSchedule(d_warmup_steps=50, ramp_steps=100)
    assert [s(k) for k in (1, 2, 25, 50)] == [0.0] * 4  # warm-up: only D learns
    assert s(51) == pytest.approx(math.exp(-5 * 0.99**2))  # the ramp's first step
    assert s(100) == pytest.approx(math.exp(-5 * 0.5**2)) == pytest.approx(0.2865048)  # half-way
    assert s(125) == pytest.approx(math.exp(-5 * 0.25**2)) == pytest.approx(0.7316156)
    ramp = [s(k) for k in range(51, 151)]
    assert all(0 < a < b for a, b in itertools.pairwise(ramp))  # strictly increasing
    assert [s(k) for k in (150, 151, 10_000)] == [1.0, 1.0, 1.0]  # the full lambda
    assert AlignmentSchedule(0, 0)(1) == 1.0  # the papers' setting: full weight from the first step
    assert [AlignmentSchedule(2, 0)(k) for k in (1, 2, 3)] == [0.0, 0.0, 1.0]
    assert AlignmentSchedule() == AlignmentSchedule.from_hparams(defaults(SCHEDULE_HPARAMS)) == AlignmentSchedule(50, 100)


@pytest.mark.parametrize(("key", "value"), [("d_warmup_steps", -1), ("ramp_steps", 2.5), ("ramp_steps", True)])
def test_schedule_rejects_bad_values(key, value):
    with pytest.raises(SegshiftError, match=f"method.{key}"):
        validate(SCHEDULE_HPARAMS, {key: value})


@pytest.mark.parametrize("name", ["adaptseg", "advent", "adanet", "cyclegan", "unetgan", "attent"])
def test_every_adversarial_method_declares_the_schedule(name):
    cls = get_method(name)
    assert {k: cls.hparams[k] for k in SCHEDULE_HPARAMS} == SCHEDULE_HPARAMS
    cfg = resolve(name)  # and the method's YAML keeps the defaults
    assert {k: cfg["method"][k] for k in SCHEDULE_HPARAMS} == defaults(SCHEDULE_HPARAMS)
    with pytest.raises(SegshiftError, match="method.ramp_steps"):
        sets = ["model.name=resunet", "model.kwargs={features: [4,8,16,32], encoder_blocks: [1,2,3,3]}"] if name == "unetgan" else []
        _build(_cfg(name, [*sets, "method.ramp_steps=-5"]))


def test_the_weight_is_logged_every_step():
    m = _method("adaptseg", ["method.d_warmup_steps=2", "method.ramp_steps=4"])
    logged = [m.train_step(_batch(seed=k), k)["w_adv"] for k in range(1, 8)]
    assert logged == pytest.approx([m.schedule(k) for k in range(1, 8)]) and logged[:2] == [0.0, 0.0] and logged[-1] == 1.0
    c = _method("cyclegan", ["method.d_warmup_steps=1", "method.ramp_steps=0"])
    assert [c.train_step(_batch(seed=k), k)["w_gan"] for k in (1, 2)] == [0.0, 1.0]


# -- the alignment module ---------------------------------------------------------------------------
def _toy_alignment():
    m = Method.__new__(Method)  # only what an alignment touches: nets, optimizers, net(), call()
    m.nets, m.optimizers, m._wrapped, m.execution, m.device = nn.ModuleDict(), {}, {}, ExecutionPolicy(), torch.device("cpu")
    torch.manual_seed(0)
    al = AdversarialAlignment(m, "d", {"proj": nn.Conv2d(3, 4, 1), "d": nn.Conv2d(4, 1, 3)}, lambda_g=0.5, lambda_d=2.0, lr=0.1)
    return m, al


def test_alignment_registers_its_path_and_optimiser():
    m, al = _toy_alignment()
    assert list(m.nets) == ["proj", "d"] and list(m.optimizers) == ["d"] and al.net_names == ("proj", "d")
    opt_params = {id(p) for g in m.optimizers["d"].param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in m.nets.parameters()}


def test_alignment_updates_are_isolated():
    m, al = _toy_alignment()
    seg = nn.Conv2d(1, 3, 1)  # stands for the segmenter
    x_s, x_t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    before = _state(m.nets)
    target = seg(x_t)
    term, adv = al.generator_loss(target, weight=1.0)  # step 1: D frozen
    assert al.holds_graph  # its target scores wait for step 2, on the segmenter's graph
    term.backward(inputs=list(seg.parameters()), retain_graph=True)  # the segmenter's parameters only (Method.backward)
    assert term.item() == pytest.approx(0.5 * adv.item()) and not adv.requires_grad
    assert all(p.grad is None for p in m.nets.parameters()), "the generator side left gradients in D"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in seg.parameters()), "no gradient reached the segmenter"
    assert _same(before, _state(m.nets)) and all(p.requires_grad for p in m.nets.parameters())
    seg.zero_grad(set_to_none=True)
    seg_before = _state(seg)
    out = al.discriminator_step(seg(x_s), target)  # step 2: on detached inputs (the target's scores of step 1)
    assert all(p.grad is None for p in seg.parameters()) and _same(seg_before, _state(seg)) and not al.holds_graph
    assert not _same(before, _state(m.nets)) and set(out) == {"loss_d", "d_acc_d"} and 0 <= out["d_acc_d"] <= 1
    # another target than step 1's: step 2 makes its own pass over both
    al.generator_loss(seg(x_t), weight=1.0)
    after = _state(m.nets)
    al.discriminator_step(seg(x_s).detach(), seg(x_t).detach())
    assert not _same(after, _state(m.nets)) and all(p.grad is None for p in seg.parameters())
    # weight 0 (the warm-up): no term, no graph
    term, adv = al.generator_loss(seg(x_t), weight=0.0)
    assert term is None and adv.grad_fn is None


def _hinge() -> GanObjective:
    """A GAN objective the library does not have (hinge), to show that one plugs in anywhere."""
    return GanObjective(
        d_loss=lambda real, fake: torch.relu(1 - real.float()).mean() + torch.relu(1 + fake.float()).mean(),
        g_loss=lambda fake: -fake.float().mean(),
        threshold=0.0,
    )


@pytest.mark.parametrize("shared", [True, False])
def test_the_gan_objective_is_injected_into_both_steps(shared):
    m = Method.__new__(Method)
    m.nets, m.optimizers, m._wrapped, m.execution, m.device = nn.ModuleDict(), {}, {}, ExecutionPolicy(), torch.device("cpu")
    d = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        d.weight.fill_(1.0)
        d.bias.zero_()  # scores = the input
    al = AdversarialAlignment(m, "d", {"d": d}, lambda_g=1.0, lr=0.0, objective=_hinge(), joint_pass=shared)
    source, target = torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), -2.0)
    if not shared:
        m._wrapped["d"] = d  # as under DDP: step 2 makes its own passes
    _, adv = al.generator_loss(target.requires_grad_(), weight=1.0)
    assert float(adv) == pytest.approx(2.0)  # -mean(D(target))
    out = al.discriminator_step(source, target)
    assert out["loss_d"] == pytest.approx(0.5 + 0.0)  # relu(1 - 0.5) + relu(1 - 2)


def test_the_translator_is_two_alignments_with_the_method_s_gan_loss():
    for mode in GAN_OBJECTIVES:
        m = _method("cyclegan", [f"method.gan_loss={mode}"])
        als = m.translator.alignments
        assert list(als) == ["d_s", "d_t"] and all(al.objective is GAN_OBJECTIVES[mode] for al in als.values())
        assert all(al.optimizer == "d_img" and al.net_names == (n,) for n, al in als.items())
        assert list(m.optimizers) == ["seg", "g", "d_img"]  # one optimiser for both image discriminators, as checkpoints hold it
        opt_params = {id(p) for g in m.optimizers["d_img"].param_groups for p in g["params"]}
        assert opt_params == {id(p) for n in ("d_s", "d_t") for p in m.nets[n].parameters()}
    with pytest.raises(ValueError, match="no optimiser 'nope'"):
        AdversarialAlignment(m, "x", {"x": nn.Conv2d(1, 1, 1)}, lambda_g=1.0, optimizer="nope")
    with pytest.raises(ValueError, match="give lr"):
        AdversarialAlignment(m, "x", {"x": nn.Conv2d(1, 1, 1)}, lambda_g=1.0)


@pytest.mark.parametrize("name", ALIGNERS)
def test_warm_up_gives_the_segmenter_a_source_only_update(name):
    """During the D warm-up the segmenter's update is exactly source-only's; after it, it is not."""
    sets = (
        [*FROZEN, "method.lambda_g_mask=1.0", "method.lambda_g_feat=1.0"]
        if name == "adanet"
        else [*FROZEN, "method.lambda_ent=1.0"]
        if name == "attent"
        else [*FROZEN, "method.lambda_adv=1.0"]
    )
    b = _batch()
    updated = {}
    for step in (1, FULL_WEIGHT):
        m = _method(name, sets)
        ref = _build(
            {**m.cfg, "method_name": SourceOnly.name, "method": {}}
        )  # source-only with the same network, loss, optimiser and batch-norm policy
        ref.nets["seg"].load_state_dict(m.nets["seg"].state_dict())
        values = m.train_step(b, step)
        ref.train_step(b, step)
        updated[step] = _same(_state(m.nets["seg"]), _state(ref.nets["seg"]))
        assert values["w_adv"] == m.schedule(step)
    assert updated == {1: True, FULL_WEIGHT: False}


def test_adaptseg_without_adversarial_weight_is_source_only():
    m = _method("adaptseg", [*FROZEN, "method.lambda_adv=0"])
    ref = _build(_cfg("source-only", FROZEN))
    ref.nets["seg"].load_state_dict(m.nets["seg"].state_dict())
    for step in (FULL_WEIGHT, FULL_WEIGHT + 1):
        b = _batch(seed=step)
        m.train_step(b, step)
        ref.train_step(b, step)
    assert _same(_state(m.nets["seg"]), _state(ref.nets["seg"]))
    assert not _same(_state(m.nets["d"]), _state(_method("adaptseg", [*FROZEN, "method.lambda_adv=0"]).nets["d"]))  # D still learns


# -- the segmenter's batch-norm policy (train.norm_stats) ------------------------------------------------
def _count_segmenter_calls(m):
    calls = []
    module = m._seg_features if m.name == "adanet" else m.nets["seg"]  # adanet calls forward_features
    module.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("name", ALIGNERS)
@pytest.mark.parametrize(("policy", "passes"), [("joint", [8]), ("separate", [4, 4])])
def test_joint_is_one_segmenter_pass_over_both_domains(name, policy, passes):
    m = _method(name, [f"train.norm_stats={policy}"])
    calls = _count_segmenter_calls(m)
    m.train_step(_batch(), FULL_WEIGHT)
    assert calls == passes


@pytest.mark.parametrize("name", ALIGNERS)
def test_frozen_keeps_the_init_runs_batch_norm_statistics(name):
    def bn_stats(m):
        return {k: v.clone() for k, v in m.nets["seg"].state_dict().items() if "running" in k or "num_batches" in k}

    for policy, changed in (("frozen", False), ("joint", True)):
        m = _method(name, [INIT, f"train.norm_stats={policy}"])
        before = bn_stats(m)
        assert before, "the segmenter has batch norm"
        m.train_step(_batch(), FULL_WEIGHT)
        assert (not _same(before, bn_stats(m))) is changed, policy
        # frozen: the segmenter still learns, and the discriminators' (none have BN) too
        assert not _same(_state(_method(name, [INIT]).nets["seg"]), _state(m.nets["seg"]))
    with pytest.raises(SegshiftError, match="init"):
        _method("adaptseg", ["train.norm_stats=frozen"])  # frozen statistics need an init run


@pytest.mark.parametrize("name", [*ALIGNERS, "cyclegan"])
def test_domain_policy_normalises_the_target_pass_with_target_statistics(name):
    """``domain`` (the default): the target-side pass of every aligner uses (and trains) the target statistics."""
    m = _method(name)
    assert m.norm_stats == "domain"
    store = m.nets["seg_target_norm"]
    calls = _count_segmenter_calls(m)
    m.train_step(_batch(), FULL_WEIGHT)
    if name == "cyclegan":  # target_to_source: the segmenter only ever sees source images
        assert calls == [4] and not store.trained()
    else:  # adanet's forward_features pass included: its target statistics are the segmenter's
        assert calls == [4, 4] and store.trained() and m.uses_target_norm()


@pytest.mark.parametrize(
    ("name", "sets", "message"),
    [
        (
            "adanet",
            ["data.preprocess.crop_size=[80,80]", "method.d_channels=[16,32,64,64,1]", "method.fda_downsample=4"],
            r"adanet: D_f sees 20x20 \(crop 80x80 / 4\), too small for its PatchGAN \(5 layers, strides 2, 2, 2, 1, 1, "
            r"kernel 4\): use a larger data.preprocess.crop_size, a smaller method.fda_downsample or fewer layers",
        ),
        ("adaptseg", ["data.preprocess.crop_size=[16,16]"], r"adaptseg: the discriminator sees 16x16, too small"),
        ("attent", ["data.preprocess.crop_size=[8,8]"], r"attent: D_E sees 8x8, too small"),
        (
            "cyclegan",
            ["data.preprocess.crop_size=[8,8]", "method.d_channels=[8,16,16,16,1]"],
            r"cyclegan: the image discriminator d_s sees 8x8, too",
        ),
    ],
)
def test_a_discriminator_its_input_is_too_small_for_is_refused_when_the_method_is_built(name, sets, message):
    """A discriminator too small for its input is refused when the method is built, not at its first step (after other rows trained)."""
    with pytest.raises(SegshiftError, match=message):
        _method(name, sets)
    if name == "adanet":  # at 1/2 (40 x 40) the same D fits
        assert "d_feat" in _method(name, [*sets[:2], "method.fda_downsample=2"]).nets
