"""Precision choice: ``auto`` takes bf16 only where it is native, and an AVX2-limited PyTorch/oneDNN is not."""

from __future__ import annotations

import pytest
import torch

from segshift.engine import precision
from segshift.utils import machine
from segshift.errors import SegshiftError


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


@pytest.mark.parametrize("env, capability", [({}, "AVX2"), ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX512"),
                                             ({"DNNL_MAX_CPU_ISA": "avx2_vnni"}, "AVX512")])
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
