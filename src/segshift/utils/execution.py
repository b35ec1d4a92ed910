"""Precision, memory format and compilation: the execution policy of a method's networks.

The engine chooses it, the methods apply it, so it lives below both. A method never opens
an autocast context or converts a tensor's memory format itself: every network call goes
through :meth:`segshift.methods.base.Method.call`, which applies the
:class:`ExecutionPolicy` the engine set on the method (:meth:`~segshift.methods.base.Method.configure`;
the trainer and the predictor build it from the run's ``train`` section with
:meth:`ExecutionPolicy.from_config`). A method built outside the engine runs in float32,
NCHW, uncompiled (:class:`ExecutionPolicy`'s defaults). Losses are computed outside the
policy, in float32.

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

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

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


@dataclasses.dataclass(frozen=True)
class ExecutionPolicy:
    """How a method's networks run: numeric precision, memory format, compilation.

    Args:
        precision: ``fp32`` or ``bf16`` (resolved: bf16 means ``torch.autocast`` to bfloat16).
        channels_last: networks and their 4-D inputs in ``torch.channels_last`` memory format.
        compile: the trainer wraps every network in ``torch.compile``.

    Example:
        >>> p = ExecutionPolicy("bf16", channels_last=True)
        >>> x = p.prepare(torch.zeros(2, 3, 4, 4))
        >>> x.is_contiguous(memory_format=torch.channels_last)
        True
        >>> with p.autocast("cpu"):
        ...     nn.Conv2d(3, 1, 1)(x).dtype
        torch.bfloat16
    """

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise SegshiftError(f"an execution policy's precision is fp32 or bf16 (resolved), got {self.precision!r}")

    @classmethod
    def from_config(cls, train: Mapping[str, Any], device: torch.device | str) -> ExecutionPolicy:
        """The policy of a run's ``train`` section (``precision`` resolved for ``device``)."""
        return cls(resolve_precision(train["precision"], device), bool(train["channels_last"]), bool(train.get("compile", False)))

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on ``device_type``, or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, x: Any) -> Any:
        """A 4-D tensor in the policy's memory format; anything else unchanged."""
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def place(self, nets: nn.Module) -> None:
        """Networks (already on their device) in the policy's memory format."""
        if self.channels_last:
            nets.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to's stubs omit memory_format


__all__ = ["PRECISIONS", "ExecutionPolicy", "cpu_has_native_bf16", "native_bf16", "resolve_precision"]
