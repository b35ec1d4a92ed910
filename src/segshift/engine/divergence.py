"""Divergence checks: a NaN/Inf in a step's values, and a supervised loss that runs away.

Both stop the run with :class:`TrainingDiverged`, whose message names the step, the values and
the checkpoint that is kept. The trainer calls :func:`check_finite` after every step and
:meth:`DivergenceMonitor.verdict` at every log or checkpoint step (rank 0's verdict, so every
DDP process stops at the same step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from segshift.engine import distributed as ddp
from segshift.errors import SegshiftError


class TrainingDiverged(SegshiftError):
    """A loss became NaN/Inf or the supervised loss ran away; the last good checkpoint is kept."""


def check_finite(step: int, values: Mapping[str, float], kept: Path, info: ddp.DistInfo | None = None) -> None:
    """Raise :class:`TrainingDiverged` if any of a step's logged ``values`` is NaN or infinite.

    Args:
        step: the step that produced ``values``.
        values: the method's logged values of that step.
        kept: the checkpoint folder that is kept (named in the message).
        info: under DDP, the ranks agree (one all-reduce), so every rank stops at the same step
            instead of the others waiting in the next step's collective.
    """
    finite = all(math.isfinite(v) for v in values.values())
    if info is not None and not ddp.all_agree(info, finite) and finite:
        raise TrainingDiverged(
            f"training diverged at step {step} in another process (a NaN/inf value); the last good checkpoint is kept in {kept}"
        )
    if not finite:
        raise TrainingDiverged(
            f"training diverged at step {step} ({', '.join(f'{k}={v:.4g}' for k, v in values.items())}); "
            f"the last good checkpoint is kept in {kept}"
        )


class DivergenceMonitor:
    """Catches a run whose supervised source loss runs away although it stays finite.

    Adversarial training fails this way: the discriminator wins, the segmenter's adversarial
    gradient swamps its supervised one and the source loss climbs. The monitor keeps an
    exponential moving average (``alpha``) of ``loss_seg`` (else ``loss``) and its lowest
    value after ``warmup`` steps. The run is *unhealthy* while the average is above
    ``factor x max(lowest, floor)``; unhealthy for ``patience`` consecutive steps means
    diverged. ``factor`` 0 switches the check off. While unhealthy no ``last`` checkpoint is
    written, so the kept one predates the climb.

    Example:
        >>> mon = DivergenceMonitor(factor=5.0, patience=2, warmup=0)
        >>> for step, loss in enumerate([0.2, 0.2, 9.0, 9.0, 9.0, 9.0], start=1):
        ...     mon.update(step, {"loss_seg": loss})
        >>> mon.healthy, mon.diverged is None
        (True, True)
    """

    def __init__(self, factor: float, patience: int, warmup: int, alpha: float = 0.02, floor: float = 0.05) -> None:
        if factor < 0 or (0 < factor <= 1):
            raise SegshiftError(f"train.diverge_factor must be 0 (off) or > 1, got {factor}")
        self.factor, self.patience, self.warmup, self.alpha, self.floor = factor, max(1, patience), warmup, alpha, floor
        self.ema: float | None = None
        self.lowest = math.inf
        self.bad_steps = 0
        self.onset: int | None = None
        self.diverged: str | None = None

    def state_dict(self) -> dict[str, Any]:
        """The running mean and its lowest value (JSON-able; ``inf`` as null); what a resume restores."""
        return {"ema": self.ema, "lowest": None if math.isinf(self.lowest) else self.lowest}

    def load_state_dict(self, doc: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` ({}: nothing kept, start afresh). A checkpoint is only written
        while the run is healthy, so there are no unhealthy steps to restore.
        """
        self.ema = None if doc.get("ema") is None else float(doc["ema"])
        self.lowest = math.inf if doc.get("lowest") is None else float(doc["lowest"])
        self.bad_steps, self.onset = 0, None

    @property
    def healthy(self) -> bool:
        return self.bad_steps == 0

    def update(self, step: int, values: Mapping[str, float]) -> None:
        """Feed one step's logged values (the verdict is in :attr:`diverged`)."""
        if not self.factor or self.diverged:
            return
        key = "loss_seg" if "loss_seg" in values else "loss" if "loss" in values else None
        if key is None:
            return
        v = values[key]
        self.ema = v if self.ema is None else (1 - self.alpha) * self.ema + self.alpha * v
        if step <= self.warmup:
            return
        limit = self.factor * max(self.lowest, self.floor)
        if self.lowest < math.inf and self.ema > limit:
            self.bad_steps += 1
            self.onset = self.onset or step
            if self.bad_steps >= self.patience:
                self.diverged = (
                    f"the supervised loss ({key}) diverged: its running mean rose from {self.lowest:.4g} to {self.ema:.4g} "
                    f"(limit {limit:.4g}, train.diverge_factor {self.factor:g}) and stayed above the limit for "
                    f"{self.bad_steps} steps since step {self.onset}; for adversarial methods lower the adversarial "
                    f"weight or the discriminator lr"
                )
        else:
            self.bad_steps, self.onset = 0, None
            self.lowest = min(self.lowest, self.ema)

    def verdict(self, step: int, kept: Path, info: ddp.DistInfo) -> bool:
        """Rank 0's verdict on every rank: raises :class:`TrainingDiverged` if the run diverged,
        else returns whether it is healthy (a ``last`` checkpoint may be written).
        """
        verdict = cast("tuple[str | None, bool, int | None]", ddp.broadcast_object(info, (self.diverged, self.healthy, self.onset)))
        diverged, healthy, onset = verdict
        if diverged:
            raise TrainingDiverged(
                f"training diverged at step {step}: {diverged}; the last good checkpoint (written before step {onset}) is kept in {kept}"
            )
        return bool(healthy)
