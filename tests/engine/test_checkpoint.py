"""Checkpoints: full state round trip, no code execution, tampering and truncation detected."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from segshift.engine import checkpoint as ckpt
from segshift.errors import InputFileError


def _setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    sched.step()
    return net, opt, sched


def test_roundtrip_restores_weights_optimiser_scheduler_rng(tmp_path):
    net, opt, sched = _setup()
    ckpt.save_checkpoint(tmp_path / "c", {"seg": net}, {"step": 7, "rng": ckpt.rng_state()}, {"seg": opt}, {"seg": sched})
    expected = torch.rand(3)
    net2, opt2, sched2 = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)), None, None
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.01)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 0.5**s)
    state = ckpt.load_weights(tmp_path / "c", {"seg": net2})
    ckpt.load_training_state(tmp_path / "c", {"seg": opt2}, {"seg": sched2})
    ckpt.set_rng_state(state["rng"])
    assert state["step"] == 7
    torch.testing.assert_close(torch.rand(3), expected)
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert opt2.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["optim.safetensors", "state.json", "weights.safetensors"]


def test_truncated_or_tampered_files_are_clear_errors(tmp_path):
    net, opt, sched = _setup()
    ckpt.save_checkpoint(tmp_path / "c", {"seg": net}, {"step": 1}, {"seg": opt}, {"seg": sched})
    w = tmp_path / "c" / "weights.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"weights\.safetensors: does not match the hash"):
        ckpt.load_weights(tmp_path / "c", {"seg": net})
    w.write_bytes(data)
    st = tmp_path / "c" / "state.json"
    doc = json.loads(st.read_text())
    doc["files"]["weights.safetensors"] = "0" * 64
    st.write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match="does not match the hash"):
        ckpt.load_weights(tmp_path / "c", {"seg": net})
    st.write_text("{truncated")
    with pytest.raises(InputFileError, match=r"state\.json: is corrupt"):
        ckpt.load_weights(tmp_path / "c", {"seg": net})


def test_a_pickle_file_is_never_loaded(tmp_path):
    # a torch.save pickle dressed up as weights is rejected, not executed
    net, _opt, _sched = _setup()
    ckpt.save_checkpoint(tmp_path / "c", {"seg": net}, {"step": 1})
    torch.save({"x": torch.zeros(1)}, tmp_path / "c" / "weights.safetensors")
    doc = json.loads((tmp_path / "c" / "state.json").read_text())
    doc["files"] = {}
    (tmp_path / "c" / "state.json").write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match="cannot be read as safetensors"):
        ckpt.load_weights(tmp_path / "c", {"seg": net})


def test_wrong_network_is_named(tmp_path):
    net, _, _ = _setup()
    ckpt.save_checkpoint(tmp_path / "c", {"seg": net}, {"step": 1})
    with pytest.raises(InputFileError, match="does not fit network 'seg'"):
        ckpt.load_weights(tmp_path / "c", {"seg": nn.Conv2d(1, 8, 3)})
    with pytest.raises(InputFileError, match="no optimiser state"):
        ckpt.load_training_state(tmp_path / "c", {"seg": torch.optim.SGD(net.parameters(), lr=0.1)}, {})


class _Compiled(torch.nn.Module):
    """What torch.compile returns, as far as checkpoints see it: the network under `_orig_mod` (torch's
    OptimizedModule; building a real one imports inductor, which is slow and locale-sensitive on CPU)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self._orig_mod = net


def test_a_compiled_network_saves_plain_keys_that_predict_can_load(tmp_path):
    """train.compile wraps networks so that their state-dict keys carry `_orig_mod.`; checkpoints hold the plain
    network's keys, so an uncompiled network (prediction) loads them, and a compiled one loads them back."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    compiled = _Compiled(net)
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    ckpt.save_checkpoint(tmp_path / "c", {"seg": compiled}, {"step": 1})
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    ckpt.load_weights(tmp_path / "c", {"seg": plain})
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), net.state_dict().values()))
    again = _Compiled(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)))
    ckpt.load_weights(tmp_path / "c", {"seg": again})
    assert torch.equal(again._orig_mod[0].weight, net[0].weight)
