"""gin-ipa and bigaug: what they train on, the consistency term inside other methods, and refusals."""

from __future__ import annotations

import csv

import pytest
import torch

from segshift.engine.config import resolve
from segshift.engine.trainer import train
from segshift.errors import SegshiftError
from segshift.methods.base import Batch
from tests.methods.conftest import FAST, built_method, random_batch


def _log(run) -> list[dict]:
    return list(csv.DictReader(open(run / "logs" / "train.csv")))


@pytest.mark.parametrize(
    ("method", "extra", "target"),
    [
        ("gin-ipa", [], False),
        ("adaptseg", ["augment.gin.enabled=true", "method.d_channels=[8,16,16,1]"], True),  # GIN inside an adaptation method
    ],
)
def test_gin_consistency_is_trained_and_logged(phantom, tmp_path, method, extra, target):
    cfg = resolve(method, sets=FAST + ["train.steps=4", "train.eval_every=2", "train.log_every=1", *extra])
    assert cfg["augment"]["gin"]["enabled"] and cfg["augment"]["gin"]["consistency"] == 10.0
    train(cfg, [phantom["bssfp"]], phantom["lge"] if target else None, tmp_path / "run", progress=False)
    rows = _log(tmp_path / "run")
    cons = [float(r["consistency"]) for r in rows]
    assert len(cons) == 4 and all(c > 0 for c in cons)  # three different views never agree exactly


def test_gin_ipa_step_segments_every_view_and_adds_the_weighted_kl():
    m = built_method("gin-ipa", ["model.kwargs={features: [4, 8]}"], seed=0)
    b = random_batch(n=2, size=16)
    views = torch.stack([b.source_image, b.source_image.flip(-1), -b.source_image])
    calls = []
    m.nets["seg"].register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    out = m.train_step(Batch(views[0], b.source_label, b.source_domain, None, views), 1)
    assert calls == [2, 4]  # view 0, then views 1-2 in one pass
    assert out["consistency"] > 0 and out["loss"] == pytest.approx(out["ce"] * 0.5 + out["dice"] * 0.5 + out["consistency"], rel=1e-4)
    m.cfg["augment"]["gin"]["consistency"] = 0.0
    assert m.view_consistency(Batch(views[0], b.source_label, b.source_domain, None, views), torch.zeros(2, 4, 16, 16)) == 0


def test_bigaug_config_switches_the_stack_on():
    cfg = resolve("bigaug", sets=[])
    assert cfg["augment"]["bigaug"]["enabled"] and not cfg["augment"]["gin"]["enabled"]
    assert not resolve("source-only", sets=[])["augment"]["bigaug"]["enabled"]


def test_a_method_without_the_consistency_term_is_refused_with_gin_consistency(phantom, tmp_path):
    cfg = resolve("cyclegan", sets=FAST + ["train.steps=2", "augment.gin.enabled=true"])
    with pytest.raises(SegshiftError, match="augment.gin.consistency=0"):
        train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
