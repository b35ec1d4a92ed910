"""Distributed training through ``torchrun`` (DistributedDataParallel), not a home-made scheme.

``torchrun --nproc_per_node N -m segshift train ...`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; :func:`init` then joins the process group (NCCL on GPUs, gloo on CPU), and
each rank trains on its own share of every batch while DDP averages gradients. Only rank 0
writes files. Without those variables everything runs in one process.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist

from segshift.errors import SegshiftError


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 - a torch.device is immutable

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def available_devices() -> list[str]:
    """The devices of this machine that ``--device`` may name: ``cpu``, each CUDA GPU (``cuda:0``, ...), ``mps``."""
    out = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def parse_device(device: str) -> torch.device:
    """``--device`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) as a device of this machine.

    Raises:
        SegshiftError: a name PyTorch does not know, or a device this machine lacks; the
            message lists the devices it has.
    """
    here = available_devices()
    hint = f"devices here: {', '.join(here)}"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SegshiftError(f"--device {device}: not a device name (cpu, cuda, cuda:1, mps); {hint}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if f"cuda:{dev.index or 0}" in here:
            return dev
        what = "no CUDA GPU on this machine (or PyTorch built without CUDA)" if "cuda:0" not in here else "no such GPU"
        raise SegshiftError(f"--device {device}: {what}; {hint}")
    if dev.type == "mps" and "mps" in here:
        return dev
    raise SegshiftError(f"--device {device}: not available on this machine; {hint}")


def pick_device(local_rank: int = 0, device: str | None = None) -> torch.device:
    """``device`` if given (checked by :func:`parse_device`), else the local GPU if any, else CPU."""
    if device:
        return parse_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun; otherwise single-process info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=pick_device(0, device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(local, device)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(info: DistInfo, obj: object) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(info: DistInfo, obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def sync_buffers(info: DistInfo, modules: Iterable[torch.nn.Module]) -> None:
    """Rank 0's buffers (batch-norm statistics) on every rank. DDP broadcasts them at each
    forward; this makes the state after the last step agree too.
    """
    if not info.enabled:
        return
    for module in modules:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def dump_replicas(info: DistInfo, modules: Mapping[str, torch.nn.Module], folder: Path) -> None:
    """Test hook: with ``SEGSHIFT_DUMP_RANK_WEIGHTS`` set, every rank writes its weights to
    ``folder/rank_weights/rank<r>.safetensors`` so a test can compare the DDP replicas.
    """
    if not os.environ.get("SEGSHIFT_DUMP_RANK_WEIGHTS"):
        return
    from safetensors.torch import save_file

    out = folder / "rank_weights"
    out.mkdir(exist_ok=True)
    save_file(
        {f"{n}.{k}": v.detach().cpu().contiguous() for n, m in modules.items() for k, v in m.state_dict().items()},
        str(out / f"rank{info.rank}.safetensors"),
    )


def all_agree(info: DistInfo, flag: bool) -> bool:
    """True on every rank only if ``flag`` is true on every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def wrap_ddp(info: DistInfo):  # noqa: ANN201 - returns a module wrapper
    """A function that wraps a module in DDP for this process."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    def fn(module: torch.nn.Module) -> torch.nn.Module:
        ids = [info.device.index] if info.device.type == "cuda" else None
        return DDP(module, device_ids=ids, broadcast_buffers=True)

    return fn


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
