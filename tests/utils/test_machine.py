"""One bf16 decision: the table of cases, and the precision ``auto`` picks is the report's ``native``."""

from __future__ import annotations

import pytest
import torch

from segshift.utils import machine
from segshift.utils.execution import resolve_precision

AVX512_BF16 = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
AVX512 = "processor\t: 0\nmodel name\t: Test CPU 8000\nflags\t\t: fpu sse avx2 avx512f\n"
AMX = "flags\t\t: avx2 avx512f amx_tile amx_bf16\n"
NO_FLAGS = "processor\t: 0\n"


@pytest.fixture
def fake_cpu(monkeypatch, tmp_path):
    """Set /proc/cpuinfo's text and PyTorch's CPU capability; no oneDNN ISA limit."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)

    def set_cpu(text: str | None, capability: str = "AVX512") -> None:
        info = tmp_path / "cpuinfo"
        if text is None:
            info.unlink(missing_ok=True)
        else:
            info.write_text(text)
        monkeypatch.setattr(machine, "CPUINFO", info)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)

    return set_cpu


@pytest.mark.parametrize(
    ("text", "capability", "env", "native"),
    [
        (AVX512_BF16, "AVX512", {}, True),
        (AMX, "AMX", {}, True),
        (AVX512, "AVX512", {}, False),  # AVX-512 without bf16 instructions: emulated (oneDNN's own check says yes here)
        (AVX512_BF16, "AVX2", {}, False),  # PyTorch limited to AVX2 kernels
        (AVX512_BF16, "AVX512", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),
        (AVX512_BF16, "AVX512", {"DNNL_MAX_CPU_ISA": "avx2_vnni"}, False),
        (NO_FLAGS, "AVX512", {}, False),  # a flags-less cpuinfo: not native
        (None, "AMX", {}, True),  # no cpuinfo at all: PyTorch's AMX capability decides
        (None, "AVX512", {}, False),
    ],
)
def test_one_decision_for_auto_and_the_report(fake_cpu, monkeypatch, text, capability, env, native):
    fake_cpu(text, capability)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    report = machine.bf16_report("cpu")
    assert report["native"] is native and machine.cpu_has_native_bf16() is native and machine.native_bf16("cpu") is native
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert report["reason"] and report["cpu_capability"] == capability


def test_report_lists_the_raw_evidence(fake_cpu):
    fake_cpu(AVX512)
    r = machine.bf16_report("cpu", probe_autocast=True)
    assert r["cpu_flags"] == ["avx2", "avx512f"] and r["onednn_max_isa"] is None
    assert r["mkldnn_bf16"] in (True, False, None) and r["autocast"] in (True, False)
    assert "neither avx512_bf16 nor amx_bf16" in r["reason"]
    assert machine.cpu_model() == "Test CPU 8000"
    fake_cpu(None)
    assert machine.bf16_report("cpu")["cpu_flags"] is None and machine.cpu_model() != ""
