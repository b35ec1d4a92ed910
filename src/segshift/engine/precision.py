"""Choosing the numeric precision of training and inference.

bf16 autocast is only fast where the hardware computes bf16 natively: CUDA GPUs that
support it, and CPUs with AVX-512 BF16 or AMX instructions (there, U-Net training ran
1.3-1.7x faster). On other CPUs PyTorch emulates bf16 convolutions, which was measured
10-40x *slower* than fp32 (AVX2 AMD EPYC: a 3x3 convolution 33 ms in fp32, 450-530 ms in
bf16). ``train.precision: auto`` (the default) therefore picks bf16 only where it is native.
Whether it is native is decided in one place, :mod:`segshift.utils.machine` (CPU flags,
PyTorch's CPU capability, oneDNN's ISA limit), which ``segshift bench speed`` reports too, so
the two always agree.
"""

from __future__ import annotations

import torch

from segshift.errors import SegshiftError
from segshift.utils.machine import cpu_has_native_bf16, native_bf16

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16`` for a configured ``train.precision`` (``auto`` | ``fp32`` | ``bf16``)."""
    if precision not in PRECISIONS:
        raise SegshiftError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(torch.device(device)) else "fp32"
    return precision


__all__ = ["PRECISIONS", "cpu_has_native_bf16", "native_bf16", "resolve_precision"]
