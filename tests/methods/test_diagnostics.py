"""The diagnostics of alignment and translation steps (:mod:`segshift.methods.diagnostics`).

What is checked: ``d_acc_<D>`` is a fixed discriminator's balanced accuracy, by hand, whether
step 2 shares step 1's target scores or not; ``grad_ratio_<D>`` is the ratio of gradient norms
worked out by hand for a 1x1-convolution segmenter under cross-entropy, and 0 while the term's
weight is 0; the helpers' values on hand-made inputs; for every adversarial and translation
method, steps with the diagnostics give bit-identical weights, optimiser states and random
state to steps without, and log the expected columns; the engine computes them on the steps
it logs only, again with bit-identical weights.
"""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from segshift.engine.config import resolve
from segshift.engine.trainer import train
from segshift.losses.adversarial import d_accuracy
from segshift.methods.alignment import AdversarialAlignment
from segshift.methods.diagnostics import gradient_ratios, hard_dice, intensity_distance
from tests.conftest import FAST
from tests.methods.conftest import built_method, random_batch
from tests.methods.test_step_cost import CASES, _method

# -- the discriminator's accuracy ---------------------------------------------------------


def test_d_accuracy_by_hand():
    assert d_accuracy(torch.tensor([2.0, -1.0]), torch.tensor([-3.0, -0.5, -2.0, 1.0])) == 0.5 * (1 / 2 + 3 / 4)
    assert d_accuracy(torch.tensor([0.6, 0.4]), torch.tensor([0.3]), threshold=0.5) == 0.5 * (1 / 2 + 1)  # least squares
    assert d_accuracy(torch.zeros(3), torch.zeros(3)) == 0.0  # undecided scores count as wrong on both sides


def _identity_critic(m):
    d = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        d.weight.fill_(1.0)
        d.bias.zero_()
    return AdversarialAlignment(m, "d", {"d": d}, lambda_g=1.0, lr=0.0)  # lr 0: D stays fixed


@pytest.mark.parametrize("shared", [False, True])
def test_d_acc_is_a_fixed_discriminators_balanced_accuracy(shared):
    m = built_method("source-only")
    al = _identity_critic(m)  # scores = the input itself
    source = torch.tensor([[[[1.0, -1.0], [2.0, 3.0]]], [[[-2.0, -4.0], [5.0, 6.0]]]])  # 5 of 8 above 0: right
    target = torch.tensor([[[[-1.0, 2.0], [-3.0, -0.5]]]])  # 3 of 4 below 0: right
    if shared:  # step 1 computes D(target) with D live and step 2 reuses it
        al.generator_loss(target, weight=1.0)
        assert al._shared is not None
    out = al.discriminator_step(source, target)
    assert out["d_acc_d"] == pytest.approx(0.5 * (5 / 8 + 3 / 4), abs=1e-7)


# -- the gradient ratio ---------------------------------------------------------------------


def test_grad_ratio_equals_the_hand_computed_ratio_of_gradient_norms():
    m = built_method("source-only", ["train.loss={ce: 1.0}", "train.weight_decay=0.0"])
    m.nets["seg"] = seg = nn.Conv2d(1, 3, 1)  # logits_k = W_k x + b_k
    m.build_optimizers()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 3, 3, generator=g)
    y = torch.randint(0, 3, (2, 3, 3), generator=g)
    c = 0.3
    with torch.no_grad():  # by hand: d CE / d logits = (softmax - onehot) / N; the term c * mean(logits_0)
        p = torch.softmax(seg(x), 1)
        r = p - nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float()
        n = y.numel()
        g_w, g_b = (r * x).sum((0, 2, 3)) / n, r.sum((0, 2, 3)) / n
        sup = torch.sqrt((g_w**2).sum() + (g_b**2).sum())
        term = c * torch.sqrt(x.mean() ** 2 + 1.0)  # d/dW_0 = c mean(x), d/db_0 = c
        expected = float(term / sup)

    m.diagnostics = True
    logits = seg(x)
    adv = logits[:, 0].mean()
    values = m.segmenter_update(logits, y, None, {"adv_d": (c * adv, adv.detach()), "w_adv": (None, 1.0)})
    assert values["grad_ratio_d"] == pytest.approx(expected, rel=1e-5)
    assert "grad_ratio_w_adv" not in values  # a logged number, not a loss
    logits = seg(x)
    values = m.segmenter_update(logits, y, None, {"adv_d": (None, logits[:, 0].mean().detach())})  # weight 0: no gradient
    assert values["grad_ratio_d"] == 0.0
    m.diagnostics = False
    assert "grad_ratio_d" not in m.segmenter_update(seg(x), y, None, {"adv_d": (c * seg(x)[:, 0].mean(), adv.detach())})


def test_gradient_ratios_leave_the_gradients_alone_and_skip_an_undefined_ratio():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    assert gradient_ratios((w**2).sum(), {"a": 0.5 * (w**2).sum(), "b": None}, [w]) == {"a": 0.5, "b": 0.0}
    assert w.grad is None
    assert gradient_ratios(0 * w.sum(), {"a": w.sum()}, [w]) == {}  # no supervised gradient: no ratio (a NaN would stop the run)


# -- the translator's helpers -------------------------------------------------------------


def test_hard_dice_by_hand():
    y = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
    pred = torch.tensor([[[0, 1, 0], [2, 2, 2]]])
    logits = nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    # class 1: 2*1/(1+2); class 2: 2*2/(3+2); class 3: absent from both, 1
    assert hard_dice(logits, y) == pytest.approx((2 / 3 + 4 / 5 + 1.0) / 3)


def test_intensity_distance_by_hand():
    x = torch.arange(8.0)
    assert intensity_distance(x, x) == 0.0
    assert intensity_distance(x, x + 1, quantiles=8) == pytest.approx(1 + 0 + 1)  # mean, std, W1
    # 2x: mean 3.5 -> 7, std doubles (2.2913 -> 4.5826), W1 = mean(x) = 3.5
    assert intensity_distance(x, 2 * x, quantiles=8) == pytest.approx(3.5 + float(x.std(unbiased=False)) + 3.5, rel=1e-6)
    assert intensity_distance(x.reshape(2, 1, 2, 2), x.flip(0)) == 0.0  # a distribution: order and shape do not matter


# -- the diagnostics never change the update ----------------------------------------------

EXPECTED = {
    "adaptseg": {"d_acc_d", "grad_ratio_d"},
    "advent": {"d_acc_d", "grad_ratio_d"},
    "adanet": {"d_acc_d_mask", "d_acc_d_feat", "grad_ratio_d_mask", "grad_ratio_d_feat"},
    "adanet-nogfrm": {"d_acc_d_mask", "d_acc_d_feat", "grad_ratio_d_mask", "grad_ratio_d_feat"},
    "attent": {"d_acc_d_e", "grad_ratio_d_e", "d_acc_d_s", "d_acc_d_t"},
    "cyclegan": {"d_acc_d_s", "d_acc_d_t"},
    "unetgan": {"d_acc_d_s", "d_acc_d_t"},
    "unetgan-cycle": {"d_acc_d_s", "d_acc_d_t"},
}
TRANSLATION = {"trans_dice", "trans_dice_raw", "trans_stat_dist", "trans_stat_dist_t2s", "trans_stat_dist_raw"}


def _steps(case, diagnose):
    m = _method(case)  # schedule: step 1 warm-up (w = 0), step 2 ramp, then full weight; unetgan: stage 2 from step 2
    torch.manual_seed(123)
    logs = []
    for k in (1, 2, 3, 4):
        m.diagnostics = diagnose
        logs.append(m.train_step(random_batch(4, 32, seed=k), k))
    return m, logs, torch.get_rng_state()


def _equal_states(a, b):
    return a.keys() == b.keys() and all(
        _equal_states(a[k], b[k])
        if isinstance(a[k], dict)
        else (torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k])
        for k in a
    )


@pytest.mark.parametrize("case", list(CASES))
def test_the_diagnostics_leave_the_weights_bit_identical(case):
    plain, plain_logs, plain_rng = _steps(case, False)
    diag, diag_logs, diag_rng = _steps(case, True)
    sp, sd = plain.nets.state_dict(), diag.nets.state_dict()
    assert sp.keys() == sd.keys()
    assert not [k for k in sp if not torch.equal(sp[k], sd[k])], "the diagnostics changed weights or statistics"
    for name, opt in plain.optimizers.items():
        assert _equal_states(opt.state_dict(), diag.optimizers[name].state_dict()), name
    assert torch.equal(plain_rng, diag_rng), "the diagnostics drew random numbers"
    extra = set()
    for a, b in zip(plain_logs, diag_logs):
        assert {k: b[k] for k in a} == a  # every value of the step unchanged
        extra |= b.keys() - a.keys()
    assert all(k.startswith(("grad_ratio_", "trans_")) for k in extra), extra
    logged = set().union(*diag_logs)
    translates = getattr(diag, "translator", None) is not None
    assert EXPECTED[case] | (TRANSLATION if translates else set()) <= logged
    assert all(0 <= v <= 1 for s in diag_logs for k, v in s.items() if k.startswith(("d_acc_", "trans_dice")))
    assert all(v >= 0 for s in diag_logs for k, v in s.items() if k.startswith(("grad_ratio_", "trans_stat_dist")))
    ratios = [k for k in EXPECTED[case] if k.startswith("grad_ratio_")]
    for k in ratios:  # warm-up (w = 0): no alignment gradient; full weight: some
        assert diag_logs[0][k] == 0.0 and diag_logs[-1][k] > 0, (k, [s.get(k) for s in diag_logs])


def test_the_translated_source_is_scored_as_the_segmenter_meets_it(monkeypatch):
    m = _method("cyclegan")
    seen = []
    monkeypatch.setattr(m, "segmenter_logits", lambda x: (seen.append(x), torch.zeros(x.shape[0], 4, *x.shape[2:]))[1])
    b = random_batch(4, 32)
    m.diagnostics = True
    logs = m.translation_step(b, 10_000)
    fakes = m._fakes
    assert torch.equal(seen[1], b.source_image)  # the reference: untranslated
    # target_to_source: G_S2T(x_s) through the prediction path G_T2S
    assert torch.allclose(seen[0], m.translate(fakes["s2t"], "g_t2s"))
    assert logs["trans_stat_dist_raw"] == intensity_distance(b.source_image, b.target_image)
    assert logs["trans_stat_dist"] == intensity_distance(fakes["s2t"], b.target_image)
    assert logs["trans_stat_dist_t2s"] == intensity_distance(fakes["t2s"], b.source_image)
    s2t = _method("cyclegan", ["method.direction=source_to_target"])
    seen.clear()
    monkeypatch.setattr(s2t, "segmenter_logits", lambda x: (seen.append(x), torch.zeros(x.shape[0], 4, *x.shape[2:]))[1])
    s2t.diagnostics = True
    s2t.translation_step(b, 10_000)
    assert torch.equal(seen[0], s2t._fakes["s2t"])  # source_to_target: the images it trains on


# -- the engine computes them on the steps it logs -----------------------------------------

ENGINE = FAST + [
    "model.kwargs={features: [4,8,16,32]}",
    "method.d_channels=[8,16,16,16,1]",
    "method.d_warmup_steps=0",
    "method.ramp_steps=0",
    "train.steps=4",
    "train.eval_every=2",
    "train.checkpoint_every=100",
    "train.batch_size=4",
]


def _train(phantom, out, log_every):
    cfg = resolve("adaptseg", sets=[*ENGINE, f"train.log_every={log_every}"])
    train(cfg, [phantom["bssfp"]], phantom["lge"], out, progress=False)
    with open(out / "logs" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return load_file(str(out / "checkpoints" / "last" / "weights.safetensors")), rows


def test_the_engine_diagnoses_the_logged_steps_only_and_trains_the_same(phantom, tmp_path):
    every, rows_every = _train(phantom, tmp_path / "every", 1)
    rare, rows_rare = _train(phantom, tmp_path / "rare", 1000)  # rows at steps 2 (validation) and 4 (the end): diagnosed at 4 only
    assert every.keys() == rare.keys() and all(torch.equal(every[k], rare[k]) for k in every)
    assert [r["step"] for r in rows_every] == ["1", "2", "3", "4"] and all(r["grad_ratio_d"] and r["d_acc_d"] for r in rows_every)
    assert [r["step"] for r in rows_rare] == ["2", "4"]
    assert rows_rare[0]["grad_ratio_d"] == "" and rows_rare[1]["grad_ratio_d"] != "" and rows_rare[0]["d_acc_d"] != ""
