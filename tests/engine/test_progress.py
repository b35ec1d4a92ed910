"""The progress bar: a no-op when disabled, the latest loss and validation Dice when shown."""

from __future__ import annotations

import io

from rich.console import Console

from segshift.engine.progress import ProgressBar


def test_disabled_bar_does_nothing():
    bar = ProgressBar(False, total=10, start=0)
    bar.update(3, {"loss": 1.0})
    bar.close()
    assert bar.bar is None


def test_bar_shows_steps_loss_and_validation():
    bar = ProgressBar(True, total=10, start=4, console=Console(file=io.StringIO(), force_terminal=False))
    task = bar.bar.tasks[0]
    assert task.completed == 4 and task.total == 10
    bar.update(6, {"loss": 0.51234, "lr": 0.1, "val_mean": 0.8})
    assert task.completed == 6 and task.fields["info"] == "loss=0.512 val_mean=0.800"
    bar.close()
