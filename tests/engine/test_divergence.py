"""Divergence checks: NaN/Inf values and a supervised loss that runs away."""

from __future__ import annotations

from pathlib import Path

import pytest

from segshift.engine.distributed import DistInfo
from segshift.engine.divergence import DivergenceMonitor, TrainingDiverged, check_finite
from segshift.errors import SegshiftError


def test_divergence_monitor_flags_a_sustained_climb_only():
    mon = DivergenceMonitor(factor=5.0, patience=10, warmup=5)
    for step in range(1, 101):  # noisy but flat loss: never unhealthy
        mon.update(step, {"loss_seg": 0.2 + 0.15 * (step % 2)})
    assert mon.healthy and mon.diverged is None
    for step in range(101, 104):  # a 3-step spike is absorbed by the running mean
        mon.update(step, {"loss_seg": 3.0})
    assert mon.diverged is None
    for step in range(104, 400):
        mon.update(step, {"loss_seg": 8.0})
    assert mon.diverged is not None and "loss_seg" in mon.diverged
    assert 101 <= mon.onset <= 110
    off = DivergenceMonitor(factor=0.0, patience=1, warmup=0)
    for step in range(1, 50):
        off.update(step, {"loss": float(step) ** 3})
    assert off.diverged is None
    with pytest.raises(SegshiftError, match="diverge_factor"):
        DivergenceMonitor(factor=0.5, patience=1, warmup=0)


def test_verdict_raises_with_the_onset_and_the_kept_checkpoint():
    mon = DivergenceMonitor(factor=2.0, patience=3, warmup=0, alpha=1.0)
    info = DistInfo()
    mon.update(1, {"loss": 0.5})
    assert mon.verdict(1, Path("run/checkpoints/last"), info) is True
    mon.update(2, {"loss": 5.0})
    assert mon.verdict(2, Path("run/checkpoints/last"), info) is False  # unhealthy: no `last` checkpoint
    for step in (3, 4):
        mon.update(step, {"loss": 5.0})
    with pytest.raises(TrainingDiverged, match=r"diverged at step 4: the supervised loss \(loss\).*before step 2\).*run/checkpoints/last"):
        mon.verdict(4, Path("run/checkpoints/last"), info)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_names_the_step_and_values(bad):
    check_finite(3, {"loss": 0.4, "loss_seg": 0.2}, Path("kept"))
    with pytest.raises(TrainingDiverged, match=r"at step 3 \(loss=0\.4, loss_d=.*\); the last good checkpoint is kept in kept"):
        check_finite(3, {"loss": 0.4, "loss_d": bad}, Path("kept"))


def test_a_nan_in_another_process_stops_every_process_at_the_same_step(monkeypatch):
    from segshift.engine import divergence

    info = DistInfo(rank=0, world_size=2)
    monkeypatch.setattr(divergence.ddp, "all_agree", lambda _info, flag: False)  # another rank had a NaN
    with pytest.raises(TrainingDiverged, match=r"step 7 in another process .*kept in ckpt"):
        check_finite(7, {"loss": 0.3}, Path("ckpt"), info)
    with pytest.raises(TrainingDiverged, match=r"step 7 \(loss=nan\)"):  # this rank's own NaN names the values
        check_finite(7, {"loss": float("nan")}, Path("ckpt"), info)
    monkeypatch.setattr(divergence.ddp, "all_agree", lambda _info, flag: flag)
    check_finite(7, {"loss": 0.3}, Path("ckpt"), info)


def test_the_monitor_state_round_trips_and_starts_healthy():
    mon = DivergenceMonitor(factor=5.0, patience=3, warmup=0)
    for step, loss in enumerate([0.4, 0.3, 0.2], start=1):
        mon.update(step, {"loss_seg": loss})
    other = DivergenceMonitor(factor=5.0, patience=3, warmup=0)
    other.load_state_dict(mon.state_dict())
    assert other.state_dict() == mon.state_dict() and other.ema == mon.ema and other.healthy
    fresh = DivergenceMonitor(factor=5.0, patience=3, warmup=0)
    assert fresh.state_dict() == {"ema": None, "lowest": None}
    fresh.load_state_dict({})  # a checkpoint without a monitor entry
    assert fresh.ema is None and fresh.lowest == float("inf")
