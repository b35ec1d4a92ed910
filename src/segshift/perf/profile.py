"""Where a training step's time goes: ``segshift bench profile``.

:class:`ProfilingTrainer` is the engine's :class:`~segshift.engine.trainer.Trainer` with wall
clocks on its hooks (the nnU-Net-style hooks make the profiler a subclass, not a copy of the
loop). It trains a few steps of any method and config and splits each step into:

* ``data``: reading the slices of a batch from the slice caches (and moving them to the device);
* ``augment``: the batched spatial/intensity augmentation, and GIN-IPA's views when on;
* ``forward <net>``: each network's forward passes (forward hooks on every network of the
  method; nested calls count to the outermost network);
* ``backward <net>``: each network's share of the backward passes. A network's backward runs
  from the moment the gradient reaches its output (a full-backward pre-hook) until another
  network's starts or the backward call ends, so work between two networks (an activation,
  a softmax) counts to the network upstream of it; ``backward (before any network)`` is the
  rest (the losses' own gradients, and any network's backward whose start no hook sees). Every
  submodule of a network is hooked under its name, so a network called through
  ``forward_features`` or returning a structure still counts;
* ``optimizer <name>``: each optimiser's ``step`` (step pre/post hooks);
* ``method (other)``: the rest of the method's ``train_step``: loss functions' forward passes,
  schedules, tensor bookkeeping;
* ``engine (other)``: the rest of the engine's step (schedulers, divergence checks, logging);
* ``validation`` and ``checkpoint``: timed per call and reported per call and amortised over
  the configured ``train.eval_every`` / ``train.checkpoint_every`` (the profiled run validates
  and checkpoints once, at its last step, whatever the config says).

The first ``warmup`` steps are run but not counted (allocation, oneDNN kernel selection). With
``torch_profile`` the counted steps also run under :mod:`torch.profiler`, whose top operators
by self CPU time are reported (and, with ``trace``, a Chrome trace is written).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segshift.engine import trainer as trainer_module
from segshift.engine.config import Config, resolve
from segshift.engine.trainer import Trainer
from segshift.errors import SegshiftError
from segshift.utils.machine import bf16_report, cpu_model

__all__ = ["ProfilingTrainer", "format_profile", "profile_method"]


class _Clock:
    """Sums of wall-clock seconds by category, switched on only for the counted steps."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.on = False

    def add(self, key: str, seconds: float) -> None:
        if self.on:
            self.totals[key] += seconds
            self.calls[key] += 1

    @contextlib.contextmanager
    def time(self, key: str, always: bool = False) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            if self.on or always:
                self.totals[key] += time.perf_counter() - t
                self.calls[key] += 1


class _BackwardTimeline:
    """Splits each backward call among the networks whose gradients it computes (see the module docstring)."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.current: str | None = None
        self.since = 0.0

    def switch(self, net: str | None) -> None:
        now = time.perf_counter()
        self.clock.add(f"backward {self.current}" if self.current else "backward (before any network)", now - self.since)
        self.current, self.since = net, now

    def start(self) -> None:
        self.current, self.since = None, time.perf_counter()


def _blocks(module: nn.Module) -> Iterator[nn.Module]:
    """A network's first callable parts: its children, with a ModuleList's or ModuleDict's items in its place."""
    for child in module.children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from child.children()
        else:
            yield child


class ProfilingTrainer(Trainer):
    """A :class:`Trainer` whose hooks are timed; :attr:`clock` holds the sums (see the module docstring)."""

    warmup = 2
    torch_profile = False

    def on_train_start(self) -> None:
        super().on_train_start()
        self.clock = _Clock()
        self.step_seconds: list[float] = []
        self._handles: list[Any] = []
        self._instrument(self.method)
        self.method.train_step = self._timed("method.train_step", self.method.train_step)  # type: ignore[method-assign]
        self.profiler: torch.profiler.profile | None = None

    # -- instrumentation ------------------------------------------------------------
    def _modules(self, method: Any) -> dict[str, nn.Module]:
        """The method's networks with parameters, and modules with parameters of their own it keeps
        outside ``nets``, by name; a wrapper of a network (adanet's ``forward_features`` module)
        counts as that network, and parameter-free losses as the method's own work.
        """
        mods = {n: m for n, m in method.nets.items() if any(True for _ in m.parameters())}
        seen = {id(c) for m in mods.values() for c in m.modules()}
        for attr, value in vars(method).items():
            own = [c for c in value.modules() if any(True for _ in c.parameters(recurse=False))] if isinstance(value, nn.Module) else []
            if attr != "nets" and any(id(c) not in seen for c in own):  # (a wrapper of a network counts as that network)
                mods[attr.strip("_")] = value
                seen.update(id(c) for c in value.modules())
        return mods

    def _instrument(self, method: Any) -> None:
        clock, active = self.clock, []
        timeline = _BackwardTimeline(clock)

        def pre(name: str) -> Callable[..., None]:
            def hook(_m: nn.Module, _x: Any) -> None:
                active.append((name, time.perf_counter()))

            return hook

        def post(name: str) -> Callable[..., None]:
            def hook(_m: nn.Module, _x: Any, _y: Any) -> None:
                n, t = active.pop()
                if not active:  # nested calls count to the outermost network
                    clock.add(f"forward {n}", time.perf_counter() - t)

            return hook

        def bwd(name: str) -> Callable[..., None]:
            def hook(_m: nn.Module, _g: Any) -> None:
                timeline.switch(name)

            return hook

        warnings.filterwarnings("ignore", message="Full backward hook is firing")  # expected: images need no gradient
        for name, mod in self._modules(method).items():
            # every submodule's forward counts to the network (the outermost call wins), so a network
            # called through another method than forward (forward_features) still counts; backward
            # pre-hooks go on the network and its first callable parts (the blocks of its ModuleLists),
            # not deeper: a deeper hook's output could be modified in place by the next layer
            for part in mod.modules():
                self._handles += [part.register_forward_pre_hook(pre(name)), part.register_forward_hook(post(name))]
            for part in (mod, *_blocks(mod)):
                if any(True for _ in part.parameters()):
                    self._handles.append(part.register_full_backward_pre_hook(bwd(name)))
        for name, opt in method.optimizers.items():
            starts: list[float] = []
            self._handles.append(opt.register_step_pre_hook(lambda *_a, s=starts: s.append(time.perf_counter())))
            self._handles.append(
                opt.register_step_post_hook(lambda *_a, s=starts, n=name: clock.add(f"optimizer {n}", time.perf_counter() - s.pop()))
            )
        self._backward = torch.autograd.backward
        original = self._backward

        def timed_backward(*args: Any, **kwargs: Any) -> Any:
            timeline.start()
            try:
                return original(*args, **kwargs)
            finally:
                timeline.switch(None)
                timeline.current = None

        torch.autograd.backward = timed_backward  # Tensor.backward calls torch.autograd.backward
        self._patched = {"augment_batch": trainer_module.augment_batch, "gin_views": trainer_module.gin_views}
        for attr, fn in self._patched.items():
            setattr(trainer_module, attr, self._timed("augment", fn))

    def _timed(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.clock.time(key):
                return fn(*args, **kwargs)

        return wrapper

    def _uninstrument(self) -> None:
        """Remove the hooks and restore ``torch.autograd.backward`` and the trainer module's
        ``augment_batch``/``gin_views``; safe to call again, or before (or part way through)
        :meth:`_instrument`.
        """
        handles, self._handles = getattr(self, "_handles", []), []
        for h in handles:
            h.remove()
        backward = self.__dict__.pop("_backward", None)
        if backward is not None:
            torch.autograd.backward = backward
        for attr, fn in self.__dict__.pop("_patched", {}).items():
            setattr(trainer_module, attr, fn)

    # -- the timed hooks ------------------------------------------------------------------
    def _batch(self) -> Any:
        with self.clock.time("data+augment"):
            return super()._batch()

    def train_step(self, step: int) -> dict[str, float]:
        """The engine's step, timed: the batch (``_batch``), the method's ``train_step`` (its parts
        by the hooks) and the engine's remainder.
        """
        counted = step > self.warmup
        self.clock.on = counted
        if counted and self.torch_profile and self.profiler is None:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.__enter__()
        t = time.perf_counter()
        values = super().train_step(step)
        if counted:
            self.step_seconds.append(time.perf_counter() - t)
        self.clock.on = False  # logging, validation and checkpoints are timed apart
        return values

    def validate(self, step: int) -> dict[str, float]:
        with self.clock.time("validation", always=True):
            return super().validate(step)

    def save_checkpoint(self, which: str) -> None:
        with self.clock.time(f"checkpoint {which}", always=True):
            super().save_checkpoint(which)

    def _stop_profiler(self) -> None:
        profiler = getattr(self, "profiler", None)
        if profiler is not None and not getattr(self, "_profiler_stopped", False):
            self._profiler_stopped = True
            profiler.__exit__(None, None, None)

    def on_train_end(self) -> dict[str, Any]:
        self._stop_profiler()
        self._uninstrument()
        return super().on_train_end()

    def __exit__(self, *exc: object) -> None:
        """Restore what :meth:`_instrument` patched (``fit`` skips :meth:`on_train_end` when
        training raises), then leave as the engine's trainer does.
        """
        try:
            self._stop_profiler()
        finally:
            self._uninstrument()
            super().__exit__(*exc)


def _rows(trainer: ProfilingTrainer, cfg: Config) -> dict[str, Any]:
    """The profile as data: seconds per counted step by part, shares, and the amortised validation/checkpoint."""
    c = trainer.clock
    n = len(trainer.step_seconds)
    per_step = {k: v / n for k, v in c.totals.items() if k not in ("validation", "checkpoint last", "checkpoint best")}
    # augmentation runs inside data+augment; forward/backward/optimizer inside method.train_step
    data = per_step.pop("data+augment", 0.0)
    aug = per_step.get("augment", 0.0)
    per_step["data"] = max(0.0, data - aug)
    inner = sum(v for k, v in per_step.items() if k.split(" ")[0] in ("forward", "backward", "optimizer"))
    method_step = per_step.pop("method.train_step", 0.0)
    per_step["method (other)"] = max(0.0, method_step - inner)
    wall = sum(trainer.step_seconds) / max(1, n)
    per_step["engine (other)"] = max(0.0, wall - data - method_step)
    t = cfg["train"]
    val_call = c.totals.get("validation", 0.0) / max(1, c.calls.get("validation", 0))
    ckpt_call = c.totals.get("checkpoint last", 0.0) / max(1, c.calls.get("checkpoint last", 0))
    amortised = {"validation": val_call / int(t["eval_every"]), "checkpoint": ckpt_call / int(t["checkpoint_every"])}
    return {
        "steps_counted": n,
        "step_seconds": wall,
        "parts": dict(sorted(per_step.items(), key=lambda kv: -kv[1])),
        "validation_seconds_per_call": val_call,
        "checkpoint_seconds_per_call": ckpt_call,
        "amortised": amortised,
        "eval_every": int(t["eval_every"]),
        "checkpoint_every": int(t["checkpoint_every"]),
    }


def profile_method(
    method: str,
    sources: Sequence[str | Path],
    target: str | Path | None,
    steps: int = 12,
    warmup: int = 2,
    config_files: Sequence[str | Path] = (),
    sets: Sequence[str] = (),
    device: str | None = None,
    torch_profile: bool = False,
    trace: str | Path | None = None,
    top: int = 12,
) -> dict[str, Any]:
    """Train ``warmup + steps`` steps of ``method`` in a temporary run folder and return the profile.

    The config is the method's default (plus ``config_files`` and ``sets``); only the step
    count, validation and checkpoint frequency are changed so that the profiled run validates
    and checkpoints once; the amortised figures use the configured frequencies.
    """
    if steps < 1:
        raise SegshiftError(f"the profile needs at least 1 counted step (steps={steps})")
    if warmup < 0:
        raise SegshiftError(f"warmup steps cannot be negative (warmup={warmup})")
    user = resolve(method, config_files, sets)
    total = warmup + steps
    run_sets = [*sets, f"train.steps={total}", f"train.eval_every={total}", f"train.checkpoint_every={total}", f"train.log_every={total}"]
    cfg = resolve(method, config_files, run_sets)
    cls = type("Profiling", (ProfilingTrainer,), {"warmup": warmup, "torch_profile": torch_profile})
    with tempfile.TemporaryDirectory(prefix="segshift-profile-") as tmp:
        with cls(cfg, list(sources), target, Path(tmp) / "run", device=device, progress=False) as trainer:
            t0 = time.perf_counter()
            trainer.fit(stop_after=total)  # staged methods (unetgan, sdnet-fa) count their stages beyond train.steps
            wall = time.perf_counter() - t0
        out = _rows(trainer, user)
        out.update(
            {
                "method": method,
                "sets": list(sets),
                "batch_size": int(cfg["train"]["batch_size"]),
                "crop_size": list(cfg["data"]["preprocess"]["crop_size"]),
                "precision": trainer.method.execution.precision,
                "cpu": cpu_model(),
                "native_bf16": bf16_report()["native"],
                "threads": torch.get_num_threads(),
                "device": str(trainer.method.device),
                "run_wall_seconds": wall,
            }
        )
        if trainer.profiler is not None:
            events = trainer.profiler.key_averages()
            ops = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
            out["top_ops"] = [
                {
                    "op": e.key,
                    "self_cpu_s_per_step": e.self_cpu_time_total / 1e6 / max(1, out["steps_counted"]),
                    "calls_per_step": e.count / max(1, out["steps_counted"]),
                }
                for e in ops
            ]
            if trace:
                trainer.profiler.export_chrome_trace(str(trace))
                out["trace"] = str(trace)
    return out


def format_profile(p: dict[str, Any]) -> str:
    """The profile as a text table."""
    step = p["step_seconds"]
    lines = [
        f"{p['method']} {' '.join(p['sets'])}".rstrip() + f": batch {p['batch_size']}, crop {p['crop_size']}, "
        f"precision {p['precision']}, {p['device']}, {p['threads']} threads",
        f"CPU: {p['cpu']} (native bf16: {p['native_bf16']})",
        f"{p['steps_counted']} counted steps: {step:.3f} s/step, {p['batch_size'] / step:.1f} slices/s",
        "",
        f"{'part':34s} {'s/step':>8s} {'share':>6s}",
    ]
    for k, v in p["parts"].items():
        lines.append(f"{k:34s} {v:8.4f} {100 * v / step:5.1f}%")
    a = p["amortised"]
    lines += [
        "",
        f"validation: {p['validation_seconds_per_call']:.2f} s per call, every {p['eval_every']} steps: "
        f"{a['validation']:.4f} s/step ({100 * a['validation'] / step:.1f}% of a step)",
        f"checkpoint: {p['checkpoint_seconds_per_call']:.2f} s per call, every {p['checkpoint_every']} steps: "
        f"{a['checkpoint']:.4f} s/step ({100 * a['checkpoint'] / step:.1f}% of a step)",
    ]
    if p.get("top_ops"):
        lines += ["", "top operators by self CPU time (torch.profiler):"]
        lines += [
            f"  {o['op'][:48]:48s} {o['self_cpu_s_per_step']:8.4f} s/step  {o['calls_per_step']:7.1f} calls/step" for o in p["top_ops"]
        ]
    return "\n".join(lines)
