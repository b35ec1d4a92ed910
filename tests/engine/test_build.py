"""One way to build a method: :func:`segshift.engine.build.build_method`.

What is checked: for every registered method, the three purposes build the same networks from
the same random state (``plan`` is ``train`` without weights; ``predict`` is the part of it
prediction needs, the target batch-norm statistics included, in eval mode, never compiled);
purposes and weights that do not go together are refused; and no module or test outside
``engine/build.py`` (and the method classes themselves) spells out the build sequence, read
from the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import segshift
from segshift.engine.build import PURPOSES, build_method
from segshift.engine.config import resolve
from segshift.methods import available_methods
from segshift.methods.base import TARGET_NORM

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(segshift.__file__).resolve().parent
TINY = {"unetgan": []}  # its own ResU-Net defaults; every other U-Net method: a narrow U-Net
STEPS = {"add_domain_norm", "build_nets", "reset_target_norm", "to_device"}
"""Method calls that belong to the build sequence (with ``build()``); only build_method makes them."""


def _build(name: str, purpose: str, *sets: str):
    torch.manual_seed(0)
    tiny = TINY.get(name, ["model.kwargs={features: [4,8,16,32]}"])
    cfg = resolve(name, sets=[*tiny, "train.precision=fp32", "train.compile=true", *sets])
    return build_method(cfg, purpose, num_classes=4)


def _shapes(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name", available_methods())
def test_the_three_purposes_build_the_same_networks_and_norm_stores(name):
    train, plan, predict = (_build(name, p) for p in ("train", "plan", "predict"))
    assert list(plan.nets) == list(train.nets) and set(plan.optimizers) == set(train.optimizers)
    assert plan.execution == train.execution and train.execution.compile and not predict.execution.compile
    assert set(predict.nets) <= set(train.nets) and set(train.checkpoint_nets()) <= set(predict.nets)
    assert not predict.optimizers and not predict.schedulers
    stores = [n for n in predict.nets if n.endswith(TARGET_NORM)]  # the segmenter's target statistics, for prediction
    assert set(stores) <= {n for n in train.nets if n.endswith(TARGET_NORM)}
    assert stores == ([train.segmenter_net + TARGET_NORM] if train.uses_target and train.norm_stats == "domain" else [])
    for k, net in predict.nets.items():  # the same networks, weights included (built first, from the same seed)
        ref = train.nets[k].state_dict()
        assert _shapes(net) == _shapes(train.nets[k]) and all(v.equal(ref[n]) for n, v in net.state_dict().items()), k
    for k, net in plan.nets.items():
        ref = train.nets[k].state_dict()
        assert all(v.equal(ref[n]) for n, v in net.state_dict().items()), k
    assert not any(m.training for net in predict.nets.values() for m in net.modules())


def test_purposes_and_weights_that_do_not_go_together_are_refused():
    cfg = resolve("source-only", sets=["model.kwargs={features: [4,8]}"])
    assert PURPOSES == ("train", "predict", "plan")
    with pytest.raises(ValueError, match="purpose must be one of train, predict, plan"):
        build_method(cfg, "export", num_classes=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="plan builds without weights"):
        build_method(cfg, "plan", num_classes=4, load=lambda m: None)
    with pytest.raises(ValueError, match="init weights are for training"):
        build_method(cfg, "predict", num_classes=4, init=object())  # type: ignore[arg-type]


def _sequence_calls(path: Path) -> list[str]:
    """``file:line call`` for each call of a build step in ``path`` (``x.build()`` with no arguments included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr in STEPS or (attr == "build" and not node.args and not node.keywords):
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno} {attr}()")
    return hits


def test_no_second_copy_of_the_build_sequence():
    allowed = {SRC / "engine" / "build.py"}
    files = [p for p in [*SRC.rglob("*.py"), *(ROOT / "tests").rglob("*.py")] if p not in allowed]
    hits = [h for p in files if SRC / "methods" not in p.parents for h in _sequence_calls(p)]
    assert not hits, "build a method with segshift.engine.build.build_method:\n" + "\n".join(hits)
    assert {h.split()[1] for h in _sequence_calls(SRC / "engine" / "build.py")} == {f"{s}()" for s in STEPS} | {"build()"}
