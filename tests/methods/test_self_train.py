"""``self-train``: mean-teacher self-training on the target (French et al. 2018, DAFormer's self-training).

What is checked: ``lambda_st: 0`` trains exactly ``adabn`` (weights and statistics, GIN on and off);
the teacher is the EMA of the student, started from the warm-started segmenter; the teacher's and
the GIN view's passes move no batch-norm statistics; a resumed run ends bit-identical to an
uninterrupted one (teacher included); target labels are never read; on the phantom (bSSFP -> LGE,
warm-started from a source-only run) the teacher's pseudo-labels are confident and used.
"""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import load_file

from segshift.engine.build import build_method
from segshift.engine.config import resolve
from segshift.engine.trainer import train
from segshift.errors import SegshiftError
from segshift.methods.self_train import batch_statistics
from tests.conftest import garbage_labels_copy
from tests.methods.conftest import FAST, built_method, random_batch, refuse_label_reads

TINY = ["model.kwargs={features: [4,8,16,32]}"]
BASE = FAST + [*TINY, "train.batch_size=4", "train.eval_every=3", "train.checkpoint_every=100", "train.log_every=1"]


def _cfg(method: str, *sets: str, init=None):
    cfg = resolve(method, sets=[*BASE, *sets])
    cfg["init"] = None if init is None else str(init)
    return cfg


def _weights(run):
    return load_file(str(run / "checkpoints" / "last" / "weights.safetensors"))


def _log(run) -> list[dict[str, str]]:
    with open(run / "logs" / "train.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def init_run(phantom, tmp_path_factory):
    """A finished source-only run on phantom bSSFP (8 steps, toy width)."""
    run = tmp_path_factory.mktemp("init") / "so"
    train(_cfg("source-only", "train.steps=8"), [phantom["bssfp"]], None, run, progress=False)
    return run


@pytest.mark.parametrize("gin", ["true", "false"])
def test_lambda_st_zero_is_adabn(gin, init_run, phantom, tmp_path):
    """The teacher's and the view's passes change nothing: at lambda_st 0 the weights and both sets of
    batch-norm statistics are adabn's, with GIN-IPA (views and consistency) on and off."""
    sets = ["train.steps=4", "seed=3", f"augment.gin.enabled={gin}"]
    train(_cfg("adabn", *sets, init=init_run), [phantom["bssfp"]], phantom["lge"], tmp_path / "ab", progress=False)
    st = _cfg("self-train", *sets, "method.lambda_st=0", init=init_run)
    assert st["augment"]["gin"]["enabled"] is (gin == "true")
    train(st, [phantom["bssfp"]], phantom["lge"], tmp_path / "st", progress=False)
    a, b = _weights(tmp_path / "ab"), _weights(tmp_path / "st")
    assert {k.split(".")[0] for k in b} == {"seg", "seg_target_norm", "teacher"}
    assert set(a) == {k for k in b if not k.startswith("teacher.")}
    assert all(a[k].equal(b[k]) for k in a), [k for k in a if not a[k].equal(b[k])][:5]
    assert float(_log(tmp_path / "st")[-1]["st_agreement"]) > 0  # the passes ran


def test_teacher_is_the_ema_of_the_student_started_from_the_loaded_segmenter():
    m = built_method("self-train", [*TINY, "method.ema=0.9", "init=runs/finished-run"], seed=0)
    with torch.no_grad():  # the "loaded" init weights, written after build as a warm start does
        for p in m.nets["seg"].parameters():
            p.add_(0.01 * torch.randn_like(p))
    loaded = {k: v.clone() for k, v in m.nets["seg"].state_dict().items()}
    teacher = m.nets["teacher"]
    assert not bool(teacher.started) and not all(p.requires_grad for p in teacher.parameters())
    batch = random_batch(4, 32)
    m.train_step(batch, 1)
    s1 = {k: v.clone() for k, v in m.nets["seg"].state_dict().items()}
    t1 = {k: v.clone() for k, v in teacher.net.state_dict().items()}
    params = {k for k, _ in m.nets["seg"].named_parameters()}
    assert bool(teacher.started) and any(not s1[k].equal(loaded[k]) for k in params)
    for k in s1:
        want = 0.9 * loaded[k] + 0.1 * s1[k] if k in params else s1[k]  # parameters: EMA; buffers: the student's
        torch.testing.assert_close(t1[k], want, rtol=1e-6, atol=1e-7)
    m.train_step(random_batch(4, 32, seed=1), 2)
    s2 = m.nets["seg"].state_dict()
    for k in params:  # later steps: from the teacher's own weights, not a fresh copy of the student
        torch.testing.assert_close(teacher.net.state_dict()[k], 0.9 * t1[k] + 0.1 * s2[k], rtol=1e-6, atol=1e-7)
    frozen = built_method("self-train", [*TINY, "method.ema=1"], seed=0)
    start = {k: v.clone() for k, v in frozen.nets["seg"].named_parameters()}
    frozen.train_step(batch, 1)
    frozen.train_step(batch, 2)
    assert all(p.equal(start[k]) for k, p in frozen.nets["teacher"].net.named_parameters())  # ema 1: the init, for good


def test_self_training_passes_move_no_running_statistics():
    m = built_method("self-train", TINY, seed=0)
    seg, store = m.nets["seg"], m.nets["seg_target_norm"]
    before = {k: v.clone() for k, v in seg.state_dict().items() if "running" in k or "num_batches" in k}
    x = torch.randn(4, 1, 32, 32) * 3 + 2
    with batch_statistics(seg):
        m.call("seg", x)
    assert all(v.equal(seg.state_dict()[k]) for k, v in before.items()) and seg.training
    teacher = m.nets["teacher"]
    assert not teacher.training
    t = m.target_pass("teacher", x, x)
    m.train(False)
    with torch.no_grad():
        running = teacher(x).float()
    assert not torch.allclose(t, running)  # the teacher normalised the target with its batch's statistics
    m.train(True)
    ab = built_method("adabn", TINY, seed=0)
    for method in (m, ab):
        method.train_step(random_batch(4, 32), 1)
    assert int(store.passes) == int(ab.nets["seg_target_norm"].passes) > 0  # the target statistics moved by adabn's pass only


def test_weighting_and_hparams():
    m = built_method("self-train", TINY, seed=0)
    teacher = torch.zeros(1, 4, 2, 2)
    teacher[0, 1, 0, 0] = 10.0  # one confident pixel of four (class 1); the others uniform (class 0 by argmax)
    student = torch.zeros(1, 4, 2, 2)
    out = m.pseudo_label_loss(student, teacher)
    ce = torch.log(torch.tensor(4.0))
    assert out["st_confident"] == 0.25 and out["st_agreement"] == 0.75  # the student says class 0 at the confident pixel
    torch.testing.assert_close(out["loss_st"], 0.25 * ce)
    t = built_method("self-train", [*TINY, "method.weighting=threshold"], seed=0)
    student[0, 1, 0, 0] = 2.0
    thr = t.pseudo_label_loss(student, teacher)
    torch.testing.assert_close(thr["loss_st"], -torch.log_softmax(student[0, :, 0, 0], 0)[1] / 4)
    assert thr["st_agreement"] == 1.0
    with pytest.raises(SegshiftError, match="method.tau must be a finite number in \\[0, 1\\]"):
        resolve("self-train", sets=["method.tau=1.5"])
    with pytest.raises(SegshiftError, match="method.weighting must be one of quality, threshold"):
        resolve("self-train", sets=["method.weighting=soft"])
    joint = built_method("self-train", [*TINY, "train.norm_stats=joint", "method.tau=0"], seed=0)
    calls = []
    joint.nets["teacher"].register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    values = joint.train_step(random_batch(4, 32), 1)
    assert calls == [8] and values["loss_st"] > 0 and "seg_target_norm" not in joint.nets  # joint: the teacher sees both batches
    with pytest.raises(SegshiftError, match="adabn adapts batch-norm statistics"):
        c = resolve("self-train", sets=[*TINY, "train.norm_stats=frozen", "init=somewhere"])
        build_method(c, "train", num_classes=4)


def test_resume_equals_uninterrupted(init_run, phantom, tmp_path):
    """The teacher, its started flag and the GIN target views: a resumed run ends bit-identical.
    (tau 0: every pseudo-label counts, so the views shape the weights from the toy init on.)"""
    cfg = _cfg("self-train", "train.steps=6", "seed=5", "method.tau=0", init=init_run)
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "full", progress=False)
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "part", stop_after=3, progress=False)
    train(None, [], None, tmp_path / "part", resume=True, progress=False)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert "teacher.started" in a and a.keys() == b.keys() and float(_log(tmp_path / "full")[-1]["loss_st"]) > 0
    assert all(a[k].equal(b[k]) for k in a), [k for k in a if not a[k].equal(b[k])][:5]
    best = load_file(str(tmp_path / "full" / "checkpoints" / "best" / "weights.safetensors"))
    assert {k.split(".")[0] for k in best} == {"seg", "seg_target_norm"}  # prediction needs no teacher


def test_target_labels_are_never_read(init_run, phantom, tmp_path, monkeypatch):
    target = garbage_labels_copy(phantom["lge"], tmp_path / "target", unreadable=True)
    refuse_label_reads(monkeypatch, target, "self-train")
    summary = train(_cfg("self-train", "train.steps=2", init=init_run), [phantom["bssfp"]], target, tmp_path / "run", progress=False)
    assert summary["finished"] and not summary["oracle"]


@pytest.mark.slow  # ~10 s of phantom training; make test keeps lambda_st 0 == adabn and the resume check
def test_phantom_pseudo_labels_are_confident_and_used(trained_run, phantom, tmp_path):
    """bSSFP -> LGE from the session's source-only run: the teacher is confident on a good part of the
    target and the student learns its pseudo-labels (agreement high, the term added to the loss)."""
    sets = [*FAST, "train.steps=12", "train.log_every=1", "train.eval_every=100", "train.checkpoint_every=100"]
    cfg = resolve("self-train", sets=sets)
    cfg["init"] = str(trained_run)
    summary = train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "st", progress=False)
    assert summary["finished"]
    rows = _log(tmp_path / "st")
    confident = [float(r["st_confident"]) for r in rows]
    agree = [float(r["st_agreement"]) for r in rows]
    assert min(confident) > 0.2 and min(agree) > 0.5, (confident, agree)
    assert all(float(r["loss_st"]) > 0 for r in rows)
    last = rows[-1]  # the pseudo-label term is in the total
    assert float(last["loss"]) > float(last["loss_seg"]) + float(last["consistency"])


def test_a_diagnostics_step_gives_the_pseudo_label_term_a_gradient_ratio_and_the_logged_numbers_none():
    m = built_method("self-train", [*TINY, "augment.gin.enabled=false", "method.tau=0.0"], seed=0)  # every pixel confident
    m.diagnostics = True
    out = m.train_step(random_batch(n=4, size=32, seed=1), step=1)
    assert out["grad_ratio_loss_st"] > 0  # the term's gradient reaches the segmenter
    assert not any(k.startswith("grad_ratio_st_") for k in out)  # confidence and agreement are logged, not losses
