"""Precision choice: ``auto`` takes bf16 only where it is native, and an AVX2-limited PyTorch/oneDNN is not."""

from __future__ import annotations

import pytest
import torch

from segshift.errors import SegshiftError
from segshift.utils import execution as precision
from segshift.utils import machine


@pytest.fixture
def bf16_cpu(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    monkeypatch.setattr(machine, "CPUINFO", info)  # segshift.utils.machine owns the detection
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    return monkeypatch


def test_auto_is_bf16_on_a_native_bf16_cpu(bf16_cpu):
    assert precision.cpu_has_native_bf16()
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.resolve_precision("fp32", "cpu") == "fp32"


@pytest.mark.parametrize(
    ("env", "capability"), [({}, "AVX2"), ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX512"), ({"DNNL_MAX_CPU_ISA": "avx2_vnni"}, "AVX512")]
)
def test_auto_is_fp32_when_torch_or_onednn_is_limited_to_avx2(bf16_cpu, env, capability):
    bf16_cpu.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    for k, v in env.items():
        bf16_cpu.setenv(k, v)
    assert not precision.cpu_has_native_bf16()
    assert precision.resolve_precision("auto", "cpu") == "fp32"


def test_auto_is_fp32_on_a_cpu_without_bf16(bf16_cpu, tmp_path):
    (tmp_path / "cpuinfo").write_text("flags\t\t: fpu sse avx2 avx512f\n")
    assert precision.resolve_precision("auto", "cpu") == "fp32"


def test_unknown_precision_is_refused():
    with pytest.raises(SegshiftError, match="train.precision must be one of auto, fp32, bf16"):
        precision.resolve_precision("fp16", "cpu")


def test_execution_policy_from_the_train_section(bf16_cpu):
    policy = precision.ExecutionPolicy.from_config({"precision": "auto", "channels_last": True, "compile": False}, "cpu")
    assert policy == precision.ExecutionPolicy("bf16", channels_last=True, compile=False)
    assert precision.ExecutionPolicy.from_config({"precision": "fp32", "channels_last": False}, "cpu").compile is False  # no compile key
    with pytest.raises(SegshiftError, match="train.precision must be one of"):
        precision.ExecutionPolicy.from_config({"precision": "half", "channels_last": False}, "cpu")
    with pytest.raises(SegshiftError, match="fp32 or bf16"):
        precision.ExecutionPolicy("auto")  # a policy holds a resolved precision


@pytest.mark.parametrize("channels_last", [True, False])
def test_execution_policy_prepares_4d_tensors_and_places_networks(channels_last):
    policy = precision.ExecutionPolicy("fp32", channels_last=channels_last)
    x, z, feats = torch.randn(2, 3, 4, 4), torch.randn(2, 8), [torch.randn(2, 3, 4, 4)]
    assert policy.prepare(x).is_contiguous(memory_format=torch.channels_last) is channels_last
    assert policy.prepare(z) is z and policy.prepare(feats) is feats
    net = torch.nn.Conv2d(3, 4, 3)
    policy.place(net)
    assert net.weight.is_contiguous(memory_format=torch.channels_last) is channels_last
    with policy.autocast("cpu"):
        assert net(x).dtype == torch.float32
    with precision.ExecutionPolicy("bf16").autocast("cpu"):
        assert net(x).dtype == torch.bfloat16
