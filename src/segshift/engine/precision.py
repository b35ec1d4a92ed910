"""Choosing the numeric precision of training and inference.

bf16 autocast is only fast where the hardware computes bf16 natively: CUDA GPUs that
support it, and CPUs with AVX-512 BF16 or AMX instructions (there, U-Net training ran
1.3-1.7x faster). On other CPUs PyTorch emulates bf16 convolutions, which was measured
10-40x *slower* than fp32 (AVX2 AMD EPYC: a 3x3 convolution 33 ms in fp32, 450-530 ms in
bf16). ``train.precision: auto`` (the default) therefore picks bf16 only where it is native.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from segshift.errors import SegshiftError

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether bf16 is native here: the CPU has AVX-512 BF16 or AMX-BF16 (``/proc/cpuinfo``, else
    PyTorch's capability) *and* PyTorch and oneDNN may use them.

    ``ATEN_CPU_CAPABILITY=avx2`` or ``ONEDNN_MAX_CPU_ISA=AVX2`` (how a run emulates an AVX2 machine
    on a newer one) make the bf16 kernels emulated, so ``auto`` then picks fp32 as it would there.
    """
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    if not capability.startswith(("AVX512", "AMX")) or (isa and not isa.startswith(("AVX512", "AMX", "ALL", "DEFAULT"))):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return "AMX" in capability


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is native (fast) on ``device``."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16`` for a configured ``train.precision`` (``auto`` | ``fp32`` | ``bf16``)."""
    if precision not in PRECISIONS:
        raise SegshiftError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(torch.device(device)) else "fp32"
    return precision
