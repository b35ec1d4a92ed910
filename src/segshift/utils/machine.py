"""What machine this is: CPU model and flags, and whether bf16 is native here (one answer for everyone).

``train.precision: auto`` (:func:`segshift.utils.execution.resolve_precision`) and
``segshift bench speed``'s report both ask :func:`bf16_report`, so the precision a run picks
and the precision the speed report calls native never disagree.

bf16 is *native* where the hardware computes it and PyTorch/oneDNN may use that:

* CUDA: ``torch.cuda.is_bf16_supported()``;
* CPU: PyTorch's CPU capability is AVX-512 or AMX, oneDNN is not limited below AVX-512
  (``ONEDNN_MAX_CPU_ISA``/``DNNL_MAX_CPU_ISA``: how a run emulates an AVX2 machine on a newer
  one), and the CPU has AVX-512 BF16 or AMX-BF16 (``/proc/cpuinfo`` flags; without that file,
  an AMX capability).

oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is reported as evidence
only: it is true on any AVX-512 core CPU, where bf16 convolutions are emulated by
conversions and were measured slower than fp32.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
"""Where the CPU's model name and flags are read (a module attribute, so a test can point it elsewhere)."""

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags of native bf16 arithmetic."""

REPORTED_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2")
"""The CPU flags the bf16 report lists as evidence."""


def cpuinfo() -> dict[str, str]:
    """``model name`` and ``flags`` of the first CPU in :data:`CPUINFO` (empty where unreadable)."""
    info: dict[str, str] = {}
    try:
        text = Path(CPUINFO).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key in ("model name", "flags") and key not in info:
            info[key] = value.strip()
    return info


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where present, else the platform's answer)."""
    return cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def _cpu_capability() -> str:
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return ""


def _onednn_isa() -> str:
    return os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", ""))


def _cpu_native(capability: str, isa: str, info: dict[str, str]) -> tuple[bool, str]:
    cap, isa = capability.upper(), isa.upper()
    if not cap.startswith(("AVX512", "AMX")):
        return False, f"PyTorch's CPU capability is {capability or 'unknown'} (bf16 needs AVX512 or AMX kernels)"
    if isa and not isa.startswith(("AVX512", "AMX", "ALL", "DEFAULT")):
        return False, f"oneDNN is limited to {isa} (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA)"
    if "flags" in info:
        found = sorted(BF16_FLAGS & set(info["flags"].split()))
        if found:
            return True, f"the CPU has {', '.join(found)}"
        return False, "the CPU has neither avx512_bf16 nor amx_bf16 (bf16 would be emulated)"
    return ("AMX" in cap), f"no CPU flags to read; PyTorch's capability {capability}"


def cpu_has_native_bf16() -> bool:
    """Whether bf16 is native on this CPU (see the module docstring)."""
    return _cpu_native(_cpu_capability(), _onednn_isa(), cpuinfo())[0]


def bf16_report(device: Any = "cpu", probe_autocast: bool = False) -> dict[str, Any]:
    """The bf16 decision for ``device`` and the evidence it rests on.

    Returns:
        ``native`` (bool: what ``train.precision: auto`` takes as native), ``reason`` (one
        sentence), and the raw evidence: on CPUs ``cpu_capability``, ``onednn_max_isa``,
        ``cpu_flags`` (the bf16-related flags present) and ``mkldnn_bf16`` (oneDNN's own check,
        ``None`` where unavailable); on CUDA ``cuda_bf16``. With ``probe_autocast``, also
        ``autocast``: whether a matrix product under ``torch.autocast(bfloat16)`` returns bfloat16
        on ``device`` (bf16 *runs*, natively or not).
    """
    import torch

    dev = torch.device(device)
    out: dict[str, Any] = {"device": str(dev)}
    if dev.type == "cuda":
        out["cuda_bf16"] = bool(torch.cuda.is_bf16_supported())
        out["native"], out["reason"] = out["cuda_bf16"], "torch.cuda.is_bf16_supported()"
    elif dev.type == "cpu":
        info, cap, isa = cpuinfo(), _cpu_capability(), _onednn_isa()
        out["native"], out["reason"] = _cpu_native(cap, isa, info)
        out["cpu_capability"] = cap or None
        out["onednn_max_isa"] = isa or None
        out["cpu_flags"] = sorted(set(info.get("flags", "").split()) & set(REPORTED_FLAGS)) if "flags" in info else None
        try:
            out["mkldnn_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            out["mkldnn_bf16"] = None
    else:
        out["native"], out["reason"] = False, f"no native bf16 check for {dev.type} devices"
    if probe_autocast:
        try:
            a, b = torch.ones(4, 8, device=dev), torch.ones(8, 4, device=dev)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
                out["autocast"] = (a @ b).dtype == torch.bfloat16
        except (RuntimeError, ValueError):
            out["autocast"] = False
    return out


def native_bf16(device: Any) -> bool:
    """Whether bf16 autocast is native (fast) on ``device``: :func:`bf16_report`'s ``native``."""
    return bool(bf16_report(device)["native"])


__all__ = ["BF16_FLAGS", "CPUINFO", "bf16_report", "cpu_has_native_bf16", "cpu_model", "cpuinfo", "native_bf16"]
