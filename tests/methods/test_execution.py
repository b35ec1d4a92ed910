"""Precision and memory format are the engine's: methods run networks through ``Method.call``.

What is checked: no method module opens ``torch.autocast`` or converts memory formats itself
(read from the source); under an execution policy of bf16 every convolution of every network
returns bfloat16 while every loss is float32 and computed outside autocast, under fp32
everything is float32; with ``channels_last`` on, the networks' weights and their
multi-channel inputs are in channels_last, with it off in NCHW.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segshift.methods
from segshift.engine.build import build_method
from segshift.engine.config import resolve
from segshift.methods import get_method
from segshift.utils.execution import ExecutionPolicy
from tests.methods.conftest import random_batch

STEP = 10_000  # past every discriminator warm-up and ramp: every adversarial term is on
TINY_UNET = ["model.kwargs={features: [4,8,16,32]}"]
TINY_GAN = ["method.g_ngf=4", "method.g_blocks=1", "method.d_channels=[8,16,1]", "method.g_batch=0"]
CASES = {
    "source-only": TINY_UNET,
    "self-train": [*TINY_UNET, "method.tau=0"],  # every pseudo-label counts
    "adaptseg": [*TINY_UNET, "method.d_channels=[8,16,16,16,1]"],
    "adanet": [*TINY_UNET, "method.d_channels=[8,16,16,16,1]", "method.gfrm_channels=8"],
    "cyclegan": [*TINY_UNET, *TINY_GAN, "method.lambda_identity=0.5"],
    "attent": [*TINY_UNET, *TINY_GAN, "method.e_d_channels=[8,16,16,16,1]"],
    "unetgan": ["model.name=resunet", "model.kwargs={features: [4,8,16,32], encoder_blocks: [1,2,3,3]}", *TINY_GAN, "method.seg_steps=1"],
    "sdnet-fa": [
        "method.anatomy_features=[8,16,32,64,128]",
        "method.segmentor_width=16",
        "method.decoder_width=16",
        "method.modality_channels=[8,16]",
        "method.pretrain_steps=1",
    ],
}
LOSS_FUNCTIONS = ("l1_loss", "mse_loss", "cross_entropy", "binary_cross_entropy_with_logits")


def _method(name, policy):
    """Method ``name`` built for training under ``policy`` (its precision and memory format, from the config as the engine reads them)."""
    torch.manual_seed(0)
    sets = [*CASES[name], f"train.precision={policy.precision}", f"train.channels_last={str(policy.channels_last).lower()}"]
    m = build_method(resolve(name, sets=sets), "train", num_classes=4)
    assert m.execution == policy
    m.train(True)
    return m


def test_no_method_module_manages_precision_or_memory_format():
    forbidden = re.compile(r"autocast|channels_last|memory_format|\.prepare\(|\.contiguous\(")
    hits = []
    for info in pkgutil.iter_modules(segshift.methods.__path__):
        if info.name == "base":  # Method.call: the one place
            continue
        source = inspect.getsource(importlib.import_module(f"segshift.methods.{info.name}"))
        hits += [f"{info.name}:{i}: {line.strip()}" for i, line in enumerate(source.splitlines(), 1) if forbidden.search(line)]
    assert not hits, "methods run networks through Method.call, the engine's policy:\n" + "\n".join(hits)


def test_a_method_built_outside_the_engine_runs_in_float32_nchw():
    m = get_method("source-only")(resolve("source-only", sets=["train.precision=bf16", "train.channels_last=true"]), num_classes=4)
    assert m.execution == ExecutionPolicy("fp32", channels_last=False, compile=False)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("name", list(CASES))
def test_networks_run_in_the_policy_precision_and_losses_in_float32(name, precision, monkeypatch):
    m = _method(name, ExecutionPolicy(precision))
    network_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    convs, losses = [], []  # (module, output dtype); (what, dtype, autocast on while computed)
    for net_name, net in m.nets.items():
        for mod_name, mod in net.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                mod.register_forward_hook(lambda mod, a, out, k=f"{net_name}.{mod_name}": convs.append((k, out.dtype)))
    # loss modules (the supervised loss, SSIM, SDNet's Dice and focal): float32, outside autocast
    for attr, value in vars(m).items():
        if isinstance(value, nn.Module) and not list(value.parameters()):  # not a network
            value.register_forward_hook(
                lambda mod, a, out, k=attr: losses.append(
                    (k, (out[0] if isinstance(out, tuple) else out).dtype, torch.is_autocast_enabled("cpu"))
                )
            )
    for fn in LOSS_FUNCTIONS:  # the functional losses (adversarial BCE, least squares via the tensor ops, L1, MSE)
        original = getattr(F, fn)
        monkeypatch.setattr(
            F,
            fn,
            lambda *a, _f=original, _k=fn, **kw: (out := _f(*a, **kw), losses.append((_k, out.dtype, torch.is_autocast_enabled("cpu"))))[0],
        )
    backward = torch.Tensor.backward
    monkeypatch.setattr(
        torch.Tensor,
        "backward",
        lambda t, *a, **kw: (losses.append(("backward", t.dtype, torch.is_autocast_enabled("cpu"))), backward(t, *a, **kw))[1],
    )

    values = m.train_step(random_batch(4, 32), STEP)
    assert all(math.isfinite(v) for v in values.values())
    assert convs and all(dt == network_dtype for _, dt in convs), {k for k, dt in convs if dt != network_dtype}
    assert any(k == "backward" for k, *_ in losses) and sum(k != "backward" for k, *_ in losses) >= 1
    assert all(dt == torch.float32 and not autocast for _, dt, autocast in losses), [x for x in losses if x[1] != torch.float32 or x[2]]


def test_call_applies_the_policy_to_4d_tensor_inputs_only():
    m = _method("source-only", ExecutionPolicy("bf16", channels_last=True))
    seen = {}

    def net(x, features, z):
        seen.update(x=x, features=features, z=z, autocast=torch.is_autocast_enabled("cpu"))
        return nn.functional.conv2d(x, torch.ones(2, 3, 1, 1))

    x, feats, z = torch.randn(2, 3, 8, 8), [torch.randn(2, 3, 8, 8)], torch.randn(2, 8)
    out = m.call(net, x, feats, z)
    assert seen["autocast"] and out.dtype == torch.bfloat16 and not torch.is_autocast_enabled("cpu")
    assert seen["x"].is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(memory_format=torch.channels_last)
    assert seen["features"] is feats and seen["z"] is z  # lists and non-image tensors as they are
    m.configure(ExecutionPolicy("fp32"))
    m.call(net, x, feats, z)
    assert seen["x"] is x and not seen["autocast"]


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("name", ["adaptseg", "adanet"])  # (translation networks see 1-channel images only)
def test_channels_last_reaches_the_networks_when_on(name, channels_last):
    m = _method(name, ExecutionPolicy("bf16", channels_last=channels_last))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    weights = [p for n in m.nets.values() for p in n.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert weights and all(p.is_contiguous(memory_format=fmt) for p in weights)
    inputs = []  # every multi-channel 4-D input of a network (discriminator inputs, features)

    def record(mod, args):
        for a in args:
            for t in a if isinstance(a, (list, tuple)) else [a]:
                if isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[1] > 1:
                    inputs.append(t.is_contiguous(memory_format=fmt))

    for net in m.nets.values():
        net.register_forward_pre_hook(record)
    if name == "adanet":  # the segmenter is called through forward_features
        m._seg_features.register_forward_pre_hook(record)
    m.train_step(random_batch(4, 32), STEP)
    assert inputs and all(inputs)
