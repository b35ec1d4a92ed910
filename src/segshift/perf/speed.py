"""Training and inference speed of the segmentation networks, against the machine's peak.

What is measured (``segshift bench speed``, or :func:`run_speed_bench` from Python):

* **Training throughput** (:func:`measure_training`): one full step is forward, cross-entropy
  on float32 logits, backward and an Adam step, on fixed random inputs ``(batch, 1, size,
  size)`` with random integer labels of 4 classes. Warm-up steps are excluded; each timed
  step is timed alone (the device is synchronised before the clock is read) and the
  **median** step time gives slices/s = ``batch / median``. Each variant is an
  :class:`~segshift.utils.execution.ExecutionPolicy`, applied as training applies it:
  ``fp32`` (plain NCHW, the baseline), ``bf16`` (bfloat16 autocast), ``bf16+cl`` (plus
  channels_last network and input), ``bf16+compile`` and ``bf16+cl+compile`` (the network
  compiled in place, as ``train.compile`` does); the compiled variants run one extra first
  step, whose wall time is reported as ``compile_s`` (compilation plus one ordinary step)
  and never counted in the throughput.
* **Achieved FLOP/s**: the FLOPs of one forward pass are counted once per network with
  :class:`torch.utils.flop_counter.FlopCounterMode` (fp32, eval mode). That counter counts
  matrix products and convolutions only, a multiply-add as 2 FLOPs; normalisation,
  activations, pooling, resampling and the optimiser are not counted. **Convention:
  training FLOPs per step = 3 x forward FLOPs** (the backward pass costs about twice the
  forward: gradients with respect to inputs and to weights). Achieved FLOP/s = training
  FLOPs per step / median step time.
* **Peak** (:func:`measure_peak`): a dense square matmul (default 2048 x 2048) timed in
  float32 and in bfloat16, median of several repetitions, as GFLOP/s. The fp32 variant is
  compared with the fp32 peak and the bf16 variants with the bf16 peak (autocast keeps some
  operations in float32, so a bf16 variant cannot reach 100 %).
* **Inference** (:func:`measure_inference`): the network alone on a stack of ``slices``
  slices (one cine volume, batch = number of slices) in eval mode under ``no_grad``, fp32
  and bf16, median seconds per volume; optionally a trained run end to end
  (:func:`measure_predictor`: read the NIfTI and ``Predictor.predict_volume``, median of 3).
* **Memory**: the process's maximum resident set size (``resource.getrusage``) after each
  network. It is a high-water mark of the whole process, so it never decreases from one
  network to the next; on CUDA the peak allocated GPU memory per variant is reported too.

All figures depend on everything else the machine is doing: measure on a quiet machine,
with the thread count fixed (``threads``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segshift.engine.distributed import pick_device
from segshift.errors import SegshiftError
from segshift.utils.execution import ExecutionPolicy
from segshift.utils.machine import bf16_report, cpu_model

VARIANTS: tuple[str, ...] = ("fp32", "bf16", "bf16+cl", "bf16+compile", "bf16+cl+compile")
"""Training variants; the last two are run only when compilation is asked for."""

NUM_CLASSES = 4
"""Output classes of the benchmarked networks (background, LV, MYO, RV)."""

TRAIN_FLOPS_FACTOR = 3
"""Training FLOPs per step = this x forward FLOPs (forward + a backward of about twice it)."""

FLOPS_CONVENTION = (
    "FLOPs counted by torch.utils.flop_counter.FlopCounterMode on one fp32 forward (convolutions and "
    "matrix products only, multiply-add = 2 FLOPs); training FLOPs per step = 3 x forward FLOPs"
)


# --------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Variant:
    """A training variant parsed from its name (``fp32``, ``bf16``, ``bf16+cl+compile``, ...)."""

    name: str
    bf16: bool
    channels_last: bool
    compile: bool

    @property
    def policy(self) -> ExecutionPolicy:
        """The engine's execution policy of this variant."""
        return ExecutionPolicy("bf16" if self.bf16 else "fp32", channels_last=self.channels_last, compile=self.compile)


def parse_variant(name: str) -> Variant:
    """Parse ``<fp32|bf16>[+cl][+compile]``; raises :class:`ValueError` for anything else."""
    parts = name.strip().lower().split("+")
    if parts[0] not in ("fp32", "bf16") or any(p not in ("cl", "compile") for p in parts[1:]) or len(set(parts)) != len(parts):
        raise ValueError(f"unknown variant {name!r}; use fp32 or bf16, optionally with +cl and/or +compile (e.g. {', '.join(VARIANTS)})")
    return Variant(name=name, bf16=parts[0] == "bf16", channels_last="cl" in parts, compile="compile" in parts)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (checked: :func:`~segshift.engine.distributed.parse_device`), else the first GPU if any, else the CPU."""
    if isinstance(device, torch.device):
        return device
    return pick_device(0, device)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU), so the clock sees finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(threads: int | None) -> None:
    """Fix the number of intra-op CPU threads (``None`` leaves torch's choice)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(int(threads))


@contextlib.contextmanager
def threads_set(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    set_threads(threads)
    try:
        yield
    finally:
        if threads is not None:
            torch.set_num_threads(before)


def _restores_threads(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: run ``fn`` under its ``threads`` argument and restore the count afterwards."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threads_set(sig.bind(*args, **kwargs).arguments.get("threads")):
            return fn(*args, **kwargs)

    return wrapper


def max_rss_mb() -> float | None:
    """The process's maximum resident set size so far in MiB (``None`` where unknown)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)


def bf16_support(device: str | torch.device | None = None) -> dict[str, Any]:
    """Whether bfloat16 autocast works on ``device`` (``autocast``) and whether it is native there (``native``).

    ``native`` is :func:`segshift.utils.machine.bf16_report`'s answer, the same one
    ``train.precision: auto`` uses; the report's raw evidence (CPU flags, PyTorch's CPU
    capability, oneDNN's ISA limit and its own bf16 check) comes with it. Without native
    support bf16 still runs, emulated and usually slower than fp32.
    """
    return bf16_report(resolve_device(device), probe_autocast=True)


def machine_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """What the figures belong to: versions, device, CPU model, threads, bf16 support."""
    dev = resolve_device(device)
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(dev),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "bf16": bf16_support(dev),
    }
    try:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        info["cpu_capability"] = None
    if dev.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
        info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    else:
        info["device_name"] = info["cpu_model"]
    return info


# --------------------------------------------------------------------------------------
# FLOPs and peak
# --------------------------------------------------------------------------------------
def count_flops(module: nn.Module | Callable[[torch.Tensor], Any], x: torch.Tensor) -> int:
    """FLOPs of one call ``module(x)`` as counted by ``FlopCounterMode`` (multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


_FWD_FLOPS_CACHE: dict[tuple[str, int, str], int] = {}


def forward_flops_per_slice(net_name: str, size: int, net_kwargs: Mapping[str, Any] | None = None) -> int:
    """Forward FLOPs of ``build_net(net_name, 1, 4, **net_kwargs)`` on one ``size x size`` slice.

    Counted once per (network, size, arguments) on the CPU in fp32 and eval mode (the count
    does not depend on the mode or the device), then remembered. Convolution and matmul
    FLOPs scale linearly with the batch, so a step's count is this x batch.
    """
    from segshift.nets import build_net

    kwargs = dict(net_kwargs or {})
    key = (net_name, int(size), repr(sorted(kwargs.items())))
    if key not in _FWD_FLOPS_CACHE:
        net = build_net(net_name, 1, NUM_CLASSES, **kwargs).eval()
        with torch.no_grad():
            _FWD_FLOPS_CACHE[key] = count_flops(net, torch.zeros(1, 1, size, size))
    return _FWD_FLOPS_CACHE[key]


@_restores_threads
def measure_peak(
    device: str | torch.device | None = None,
    n: int = 2048,
    reps: int = 5,
    warmup: int = 2,
    dtypes: Sequence[str] = ("fp32", "bf16"),
    threads: int | None = None,
) -> dict[str, Any]:
    """The machine's practical peak: an ``n x n @ n x n`` matmul, median of ``reps``, in GFLOP/s.

    Returns ``{"n", "reps", "device", "fp32_gflops", "fp32_s", "bf16_gflops", "bf16_s"}``
    (``<dtype>_error`` instead where that dtype fails). One product is ``2 n^3`` FLOPs.
    """
    dev = resolve_device(device)
    if n < 1 or reps < 1 or warmup < 0:
        raise ValueError("n and reps must be at least 1 and warmup at least 0")
    out: dict[str, Any] = {"n": n, "reps": reps, "device": str(dev), "threads": torch.get_num_threads()}
    flops = 2.0 * n**3
    for key in dtypes:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[key]
        try:
            gen = torch.Generator(device="cpu").manual_seed(0)
            a = torch.randn(n, n, generator=gen).to(dev, dtype)
            b = torch.randn(n, n, generator=gen).to(dev, dtype)
            c = torch.empty(n, n, device=dev, dtype=dtype)
            for _ in range(warmup):
                torch.mm(a, b, out=c)
            synchronize(dev)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                torch.mm(a, b, out=c)
                synchronize(dev)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            out[f"{key}_s"] = med
            out[f"{key}_gflops"] = flops / med / 1e9
        except RuntimeError as exc:  # e.g. a dtype the device cannot multiply
            out[f"{key}_error"] = f"{type(exc).__name__}: {exc}"
            out[f"{key}_gflops"] = None
    return out


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def _reset_dynamo() -> None:
    """Forget earlier compilations, so each compiled variant pays (and reports) its own."""
    with contextlib.suppress(AttributeError):  # very old torch
        torch._dynamo.reset()


def _timed(device: torch.device, fn: Callable[[], Any], n: int) -> Iterator[float]:
    for _ in range(n):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        yield time.perf_counter() - t0


def _summary(times: Sequence[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "max_s": max(times),
    }


@_restores_threads
def measure_training(
    net_name: str,
    variant: str = "fp32",
    size: int = 160,
    batch: int = 16,
    iters: int = 20,
    warmup: int = 5,
    *,
    device: str | torch.device | None = None,
    threads: int | None = None,
    net_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    lr: float = 1e-3,
) -> dict[str, Any]:
    """Training throughput of one network in one variant (see the module docstring).

    Args:
        net_name: a name of :data:`segshift.nets.NETS` (built with 1 input channel, 4 classes).
        variant: ``fp32``, ``bf16``, ``bf16+cl``, ``bf16+compile``, ``bf16+cl+compile``.
        size: slice height and width.
        batch: slices per step.
        iters: timed steps (the median is used).
        warmup: untimed steps before them (compiled variants run one more, timed as ``compile_s``).
        device: ``cpu``, ``cuda``, ...; default the first GPU if any, else the CPU.
        threads: CPU threads for torch during the measurement (``None``: unchanged; the
            previous count is restored afterwards).
        net_kwargs: further ``build_net`` arguments (default widths when empty).
        seed: seed of the weights and the random batch.
        lr: Adam learning rate.

    Returns:
        A dict with ``net``, ``variant``, ``device``, ``size``, ``batch``, ``iters``,
        ``warmup``, ``threads``, ``step_s`` (median step time), ``step_s_mean``,
        ``step_s_min``, ``step_s_max``, ``step_times``, ``slices_per_s`` (``batch /
        step_s``), ``forward_flops_per_slice``, ``forward_flops`` (per step), ``flops``
        (training FLOPs per step = 3 x ``forward_flops``), ``achieved_gflops`` (``flops /
        step_s / 1e9``), ``compile_s`` (``None`` unless compiled), ``loss`` (the last
        step's), ``max_rss_mb`` and ``cuda_peak_mb`` (``None`` off CUDA).
    """
    from segshift.nets import build_net

    v = parse_variant(variant)
    if size < 1 or batch < 1 or iters < 1 or warmup < 0:
        raise ValueError(f"size, batch and iters must be at least 1 and warmup at least 0 (got {size}, {batch}, {iters}, {warmup})")
    dev = resolve_device(device)
    kwargs = dict(net_kwargs or {})
    policy = v.policy

    torch.manual_seed(seed)
    net = build_net(net_name, 1, NUM_CLASSES, **kwargs).to(dev).train()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = policy.prepare(torch.randn(batch, 1, size, size, generator=gen).to(dev))
    y = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=gen).to(dev)
    policy.place(net)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    if policy.compile:
        _reset_dynamo()
        net.compile()  # in place, as the trainer does for train.compile
    last: dict[str, torch.Tensor] = {}

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with policy.autocast(dev.type):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        last["loss"] = loss.detach()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    compile_s = next(iter(_timed(dev, step, 1))) if v.compile else None
    for _ in range(warmup):
        step()
    times = list(_timed(dev, step, iters))
    stats = _summary(times)

    per_slice = forward_flops_per_slice(net_name, size, kwargs)
    fwd = per_slice * batch
    flops = TRAIN_FLOPS_FACTOR * fwd
    med = stats["median_s"]
    return {
        "net": net_name,
        "variant": v.name,
        "device": str(dev),
        "size": size,
        "batch": batch,
        "iters": iters,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "step_s": med,
        "step_s_mean": stats["mean_s"],
        "step_s_min": stats["min_s"],
        "step_s_max": stats["max_s"],
        "step_times": times,
        "slices_per_s": batch / med,
        "forward_flops_per_slice": per_slice,
        "forward_flops": fwd,
        "flops": flops,
        "achieved_gflops": flops / med / 1e9,
        "compile_s": compile_s,
        "loss": float(last["loss"]),
        "max_rss_mb": max_rss_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
    }


# --------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------
@_restores_threads
def measure_inference(
    net_name: str,
    precision: str = "fp32",
    size: int = 160,
    slices: int = 10,
    iters: int = 10,
    warmup: int = 2,
    *,
    device: str | torch.device | None = None,
    threads: int | None = None,
    net_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds per cine volume for the network alone: ``slices`` slices in one batch, eval, no_grad.

    ``precision`` is ``fp32`` or ``bf16`` (autocast); logits are cast to float32 as
    :meth:`segshift.methods.base.Method.predict_logits` does. Returns ``net``,
    ``precision``, ``device``, ``size``, ``slices``, ``iters``, ``warmup``,
    ``seconds_per_volume`` (median), ``seconds_mean``, ``seconds_min``, ``times`` and
    ``slices_per_s``.
    """
    from segshift.nets import build_net

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    if size < 1 or slices < 1 or iters < 1 or warmup < 0:
        raise ValueError("size, slices and iters must be at least 1 and warmup at least 0")
    dev = resolve_device(device)
    policy = ExecutionPolicy(precision)
    torch.manual_seed(seed)
    net = build_net(net_name, 1, NUM_CLASSES, **dict(net_kwargs or {})).to(dev).eval()
    x = torch.randn(slices, 1, size, size, generator=torch.Generator(device="cpu").manual_seed(seed)).to(dev)

    def forward() -> None:
        with torch.no_grad(), policy.autocast(dev.type):
            net(x).float()

    for _ in range(warmup):
        forward()
    times = list(_timed(dev, forward, iters))
    stats = _summary(times)
    return {
        "net": net_name,
        "precision": precision,
        "device": str(dev),
        "size": size,
        "slices": slices,
        "iters": iters,
        "warmup": warmup,
        "seconds_per_volume": stats["median_s"],
        "seconds_mean": stats["mean_s"],
        "seconds_min": stats["min_s"],
        "times": times,
        "slices_per_s": slices / stats["median_s"],
    }


@_restores_threads
def measure_predictor(
    run: str | Path, volume: str | Path, reps: int = 3, device: str | None = None, threads: int | None = None
) -> dict[str, Any]:
    """A trained run end to end: ``Predictor(run).predict_volume(read_volume(volume))``.

    The predictor is built once (``setup_s``); then each of ``reps`` repetitions reads the
    volume and predicts it. ``seconds_per_volume`` is the median of the totals
    (``read_s`` and ``predict_s`` are the medians of the two parts).
    """
    from segshift.data.volume import read_volume
    from segshift.inference.predictor import Predictor

    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    t0 = time.perf_counter()
    predictor = Predictor(run, device=device)
    setup_s = time.perf_counter() - t0
    dev = predictor.device
    reads, preds, totals = [], [], []
    shape = None
    for _ in range(reps):
        synchronize(dev)
        t0 = time.perf_counter()
        vol = read_volume(volume)
        t1 = time.perf_counter()
        predictor.predict_volume(vol)
        synchronize(dev)
        t2 = time.perf_counter()
        reads.append(t1 - t0)
        preds.append(t2 - t1)
        totals.append(t2 - t0)
        shape = list(vol.shape)
    train_cfg = predictor.cfg.get("train") or {}
    return {
        "run": str(run),
        "volume": str(volume),
        "shape": shape,
        "device": str(dev),
        "precision": train_cfg.get("precision"),
        "reps": reps,
        "setup_s": setup_s,
        "seconds_per_volume": statistics.median(totals),
        "read_s": statistics.median(reads),
        "predict_s": statistics.median(preds),
        "times": totals,
    }


# --------------------------------------------------------------------------------------
# the whole benchmark
# --------------------------------------------------------------------------------------
@_restores_threads
def run_speed_bench(
    nets: Sequence[str] | None = None,
    size: int = 160,
    batch: int = 16,
    iters: int = 20,
    warmup: int = 5,
    threads: int | None = None,
    compile: bool = False,
    *,
    device: str | None = None,
    variants: Sequence[str] | None = None,
    slices: int = 10,
    run: str | Path | None = None,
    volume: str | Path | None = None,
    peak_n: int = 2048,
    peak_reps: int = 5,
    net_kwargs: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every measurement of this module for several networks; the dict :func:`format_report` prints.

    Args:
        nets: network names (default: every network of :data:`segshift.nets.NETS`).
        size, batch, iters, warmup: training settings (see :func:`measure_training`); the
            inference stacks use ``iters`` and ``warmup`` too.
        threads: CPU threads for torch (``None``: torch's default).
        compile: add the ``torch.compile`` variants.
        device: ``cpu``, ``cuda``, ...; default the first GPU if any, else the CPU.
        variants: explicit variants (overrides ``compile``).
        slices: slices per cine volume for the inference timing.
        run, volume: a trained run folder and a NIfTI volume to time end to end (both or neither).
        peak_n, peak_reps: size and repetitions of the peak matmul.
        net_kwargs: further ``build_net`` arguments for every network.
        progress: called with a short message before each measurement.

    Returns:
        ``{"machine", "settings", "peak", "training", "inference", "memory", "predictor",
        "errors"}``. A variant that fails (for instance ``torch.compile`` without a C++
        compiler) is recorded with an ``error`` message and the others still run.
    """
    from segshift.nets import NETS

    say = progress or (lambda _msg: None)
    nets = list(NETS) if nets is None else list(nets)
    unknown = [n for n in nets if n not in NETS]
    if not nets or unknown:
        raise SegshiftError(f"unknown network(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(sorted(NETS))}")
    chosen = list(variants) if variants else list(VARIANTS if compile else VARIANTS[:3])
    try:
        for v in chosen:
            parse_variant(v)
    except ValueError as exc:
        raise SegshiftError(str(exc)) from exc
    if (run is None) != (volume is None):
        raise SegshiftError("--run and --volume go together: give both to time a trained run end to end")
    for p in (run, volume):
        if p is not None and not Path(p).exists():
            raise SegshiftError(f"{p}: does not exist")
    dev = resolve_device(device)

    machine = machine_info(dev)
    say(f"peak: {peak_n}x{peak_n} matmul")
    peak = measure_peak(dev, n=peak_n, reps=peak_reps)
    training: list[dict[str, Any]] = []
    inference: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    errors: list[str] = []
    for name in nets:
        base: dict[str, Any] | None = None
        for v in chosen:
            say(f"train {name} {v}")
            try:
                r = measure_training(name, v, size, batch, iters, warmup, device=dev, net_kwargs=net_kwargs)
            except Exception as exc:  # noqa: BLE001 - one failing variant must not lose the others
                r = {"net": name, "variant": v, "error": f"{type(exc).__name__}: {exc}".strip()}
                errors.append(f"train {name} {v}: {r['error']}")
            if "error" not in r:
                if v == "fp32":
                    base = r
                ref = peak.get("bf16_gflops" if parse_variant(v).bf16 else "fp32_gflops")
                r["peak_gflops"] = ref
                r["peak_pct"] = 100.0 * r["achieved_gflops"] / ref if ref else None
                r["speedup_vs_fp32"] = base["step_s"] / r["step_s"] if base else None
            training.append(r)
        fp32_inf: dict[str, Any] | None = None
        for prec in ("fp32", "bf16"):
            say(f"infer {name} {prec}")
            try:
                r = measure_inference(name, prec, size, slices, iters, warmup, device=dev, net_kwargs=net_kwargs)
            except Exception as exc:  # noqa: BLE001
                r = {"net": name, "precision": prec, "error": f"{type(exc).__name__}: {exc}".strip()}
                errors.append(f"infer {name} {prec}: {r['error']}")
            if "error" not in r:
                if prec == "fp32":
                    fp32_inf = r
                r["speedup_vs_fp32"] = fp32_inf["seconds_per_volume"] / r["seconds_per_volume"] if fp32_inf else None
            inference.append(r)
        cuda_peaks = [t["cuda_peak_mb"] for t in training if t.get("net") == name and t.get("cuda_peak_mb") is not None]
        memory.append({"net": name, "max_rss_mb": max_rss_mb(), "cuda_peak_mb": max(cuda_peaks) if cuda_peaks else None})

    predictor = None
    if run is not None and volume is not None:
        say(f"predict {volume} with {run}")
        predictor = measure_predictor(run, volume, device=device)

    return {
        "machine": machine,
        "settings": {
            "nets": nets,
            "variants": chosen,
            "size": size,
            "batch": batch,
            "iters": iters,
            "warmup": warmup,
            "threads": torch.get_num_threads(),
            "device": str(dev),
            "slices": slices,
            "num_classes": NUM_CLASSES,
            "net_kwargs": dict(net_kwargs or {}),
            "flops_convention": FLOPS_CONVENTION,
            "timing": "median of per-step times after warm-up; device synchronised around every timed step",
        },
        "peak": peak,
        "training": training,
        "inference": inference,
        "memory": memory,
        "predictor": predictor,
        "errors": errors,
    }


# --------------------------------------------------------------------------------------
# text report
# --------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{suffix}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def format_report(result: Mapping[str, Any]) -> str:
    """The text ``segshift bench speed`` prints for a :func:`run_speed_bench` result."""
    m, s, peak = result["machine"], result["settings"], result["peak"]
    bf = m["bf16"]
    native = {True: "native", False: "emulated", None: "native support unknown"}[bf["native"]]
    if bf.get("reason"):  # the decision train.precision: auto takes, and why (segshift.utils.machine)
        native += f": {bf['reason']}; train.precision auto -> {'bf16' if bf['native'] else 'fp32'}"
    out = [
        f"torch {m['torch']} | device {m['device']} ({m['device_name']}) | {m['threads']} thread(s) "
        f"of {m['logical_cpus']} logical CPU(s) | bf16 autocast: {'yes' if bf['autocast'] else 'no'} ({native})",
        f"peak, {peak['n']}x{peak['n']} matmul, median of {peak['reps']}: "
        f"fp32 {_fmt(peak.get('fp32_gflops'), '.1f')} GFLOP/s, bf16 {_fmt(peak.get('bf16_gflops'), '.1f')} GFLOP/s",
        "",
        f"training: batch {s['batch']} x 1 x {s['size']} x {s['size']}, {s['num_classes']} classes, forward + CE + backward + Adam; "
        f"median of {s['iters']} steps after {s['warmup']} warm-up",
    ]
    rows = []
    for r in result["training"]:
        if "error" in r:
            rows.append([r["net"], r["variant"], "error", "", "", "", "", ""])
            continue
        rows.append(
            [
                r["net"],
                r["variant"],
                _fmt(r["step_s"] * 1e3, ".1f"),
                _fmt(r["slices_per_s"], ".1f"),
                _fmt(r.get("speedup_vs_fp32"), ".2f", "x"),
                _fmt(r["achieved_gflops"], ".1f"),
                _fmt(r.get("peak_pct"), ".1f", "%"),
                _fmt(r.get("compile_s"), ".1f"),
            ]
        )
    out.append(format_table(["net", "variant", "step ms", "slices/s", "vs fp32", "GFLOP/s", "of peak", "compile s"], rows))
    out.append(f"  {s['flops_convention']}; GFLOP/s = training FLOPs per step / median step time;")
    out.append("  'of peak' compares fp32 with the fp32 matmul peak and bf16 variants with the bf16 peak.")
    flops_rows = []
    seen = set()
    for r in result["training"]:
        if "error" not in r and r["net"] not in seen:
            seen.add(r["net"])
            flops_rows.append([r["net"], _fmt(r["forward_flops_per_slice"] / 1e9, ".3f"), _fmt(r["flops"] / 1e9, ".2f")])
    if flops_rows:
        out += ["", format_table(["net", "fwd GFLOP/slice", "train GFLOP/step"], flops_rows)]

    out += [
        "",
        f"inference: one cine volume = {s['slices']} slices of {s['size']} x {s['size']} in one batch, eval, no_grad (network only)",
    ]
    by_net: dict[str, dict[str, Any]] = {}
    for r in result["inference"]:
        by_net.setdefault(r["net"], {})[r["precision"]] = r
    rows = []
    for net, d in by_net.items():
        f32, b16 = d.get("fp32", {}), d.get("bf16", {})
        rows.append(
            [
                net,
                "error" if "error" in f32 else _fmt(f32.get("seconds_per_volume"), ".3f"),
                "error" if "error" in b16 else _fmt(b16.get("seconds_per_volume"), ".3f"),
                _fmt(b16.get("speedup_vs_fp32"), ".2f", "x"),
            ]
        )
    out.append(format_table(["net", "fp32 s/volume", "bf16 s/volume", "bf16 vs fp32"], rows))

    mem_rows = [[r["net"], _fmt(r["max_rss_mb"], ".0f"), _fmt(r.get("cuda_peak_mb"), ".0f")] for r in result["memory"]]
    out += [
        "",
        "memory (process max RSS so far, a high-water mark: it never decreases)",
        format_table(["after net", "max RSS MiB", "GPU peak MiB"], mem_rows),
    ]

    p = result.get("predictor")
    if p:
        out += [
            "",
            f"predictor end to end: {p['run']} on {p['volume']} (shape {p['shape']}, {p['precision']}, {p['device']}): "
            f"{p['seconds_per_volume']:.3f} s per volume (median of {p['reps']}; read {p['read_s']:.3f} s, "
            f"predict {p['predict_s']:.3f} s); predictor set-up {p['setup_s']:.2f} s",
        ]
    if result.get("errors"):
        out += ["", "errors:", *(f"  {e}" for e in result["errors"])]
    return "\n".join(out)


__all__ = [
    "FLOPS_CONVENTION",
    "NUM_CLASSES",
    "TRAIN_FLOPS_FACTOR",
    "VARIANTS",
    "Variant",
    "bf16_support",
    "count_flops",
    "cpu_model",
    "format_report",
    "format_table",
    "forward_flops_per_slice",
    "machine_info",
    "max_rss_mb",
    "measure_inference",
    "measure_peak",
    "measure_predictor",
    "measure_training",
    "parse_variant",
    "resolve_device",
    "run_speed_bench",
    "set_threads",
    "synchronize",
    "threads_set",
]
