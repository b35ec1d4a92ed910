"""Batch-norm policies (``train.norm_stats``) and ``adabn``.

What is checked: ``segment`` under each policy (one joint pass; per-domain statistics kept
apart and swapped back; frozen statistics untouched), ``adabn`` equal to the source-only
continuation in everything but its target statistics, and prediction using the target
statistics for target-domain inputs only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from segshift.data.domain import Domain
from segshift.engine.build import build_method
from segshift.engine.config import resolve
from segshift.engine.trainer import train
from segshift.errors import SegshiftError
from segshift.inference.predictor import Predictor
from segshift.methods.base import DomainNormStats
from tests.conftest import FAST

BASE = FAST + ["model.kwargs={features: [4,8,16,32]}", "train.eval_every=4", "train.checkpoint_every=100"]


def _method(name: str, *sets: str, init: str | None = None):
    cfg = resolve(name, sets=[*BASE, "train.precision=fp32", "train.channels_last=false", *sets])
    cfg["init"] = init
    m = build_method(cfg, "train", num_classes=4)
    m.train(True)
    return m


def _bn_stats(net):
    return [b.detach().clone() for n, b in net.named_buffers() if "running" in n]


def test_domain_policy_keeps_each_domains_statistics_apart():
    m = _method("adabn")
    store = m.nets["seg_target_norm"]
    assert isinstance(store, DomainNormStats) and len(store.names) > 5 and not store.trained()
    xs, xt = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32) * 3 + 5
    before = _bn_stats(m.nets["seg"])
    src, tgt = m.segment(xs, xt)
    (src.sum() + tgt.sum()).backward()  # gradients through both passes (statistics swapped objects, not values)
    after = _bn_stats(m.nets["seg"])
    target = [getattr(store, k).clone() for k in dict(store.named_buffers()) if k.endswith("running_mean")]
    assert store.trained() and all(not a.equal(b) for a, b in zip(before, after))
    # the target statistics moved towards the target batch (mean 5 at the input layer), the source ones did not
    first = store.names[0].replace(".", "__") + "__running_mean"
    assert getattr(store, first).abs().mean() > 3 * m.nets["seg"].get_submodule(store.names[0]).running_mean.abs().mean()
    assert len(target) == len(store.names)
    m.train(False)
    with torch.no_grad():
        with m.target_norm():
            a = m.nets["seg"](xt)
        b = m.nets["seg"](xt)
    assert not torch.allclose(a, b)  # eval mode: the target statistics are used inside target_norm only
    assert all(x.equal(y) for x, y in zip(after, _bn_stats(m.nets["seg"])))  # and swapped back


def test_joint_policy_is_one_pass_and_frozen_keeps_statistics():
    m = _method("adabn", "train.norm_stats=joint")
    calls = []
    m.nets["seg"].register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    src, tgt = m.segment(torch.randn(3, 1, 32, 32), torch.randn(5, 1, 32, 32))
    assert calls == [8] and src.shape[0] == 3 and tgt.shape[0] == 5 and "seg_target_norm" not in m.nets
    f = _method("source-only", "train.norm_stats=frozen", init="somewhere")
    before = _bn_stats(f.nets["seg"])
    f.segment(torch.randn(4, 1, 32, 32) * 4)
    assert all(a.equal(b) for a, b in zip(before, _bn_stats(f.nets["seg"])))
    with pytest.raises(SegshiftError, match="adabn adapts batch-norm statistics"):
        _method("adabn", "train.norm_stats=frozen", init="somewhere")


@pytest.fixture(scope="module")
def init_run(phantom, tmp_path_factory):
    run = tmp_path_factory.mktemp("init") / "so"
    train(resolve("source-only", sets=BASE + ["train.steps=10"]), [phantom["bssfp"]], None, run, progress=False)
    return run


def test_adabn_is_the_source_only_continuation_plus_target_statistics(init_run, phantom, tmp_path):
    sets = BASE + ["train.steps=6", "seed=2"]
    so_cfg, ab_cfg = resolve("source-only", sets=sets), resolve("adabn", sets=sets)
    so_cfg["init"] = ab_cfg["init"] = str(init_run)
    train(so_cfg, [phantom["bssfp"]], None, tmp_path / "so", progress=False)
    train(ab_cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "ab", progress=False)
    a = load_file(str(tmp_path / "so" / "checkpoints" / "best" / "weights.safetensors"))
    b = load_file(str(tmp_path / "ab" / "checkpoints" / "best" / "weights.safetensors"))
    assert set(b) - set(a) and all(k.startswith("seg_target_norm.") for k in set(b) - set(a))
    assert all(a[k].equal(b[k]) for k in a)  # weights and source statistics: exactly the source-only continuation
    dom = Domain(phantom["lge"])
    image = dom.load_image("case000")
    on, off = Predictor(tmp_path / "ab", target_domain=True), Predictor(tmp_path / "ab", target_domain=False)
    p_on, p_off = on.predict_volume(image), off.predict_volume(image)
    assert p_on.qc["target_norm"] and not p_off.qc["target_norm"]
    assert not np.array_equal(p_on.mask, p_off.mask)
    p_so = Predictor(tmp_path / "so").predict_volume(image)
    assert np.array_equal(p_so.mask, p_off.mask)  # off the target domain, adabn is the source-only model
    info = json.loads((tmp_path / "ab" / "run.json").read_text())
    assert info["norm_stats"] == "domain"
