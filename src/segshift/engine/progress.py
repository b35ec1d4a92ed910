"""The training progress bar: steps done, elapsed time, ETA and the latest loss and validation Dice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ProgressBar:
    """A rich progress bar (a no-op when ``enabled`` is false, e.g. on DDP ranks other than 0).

    Args:
        enabled: show the bar.
        total: the run's last step.
        start: the step it starts from (a resumed run starts part-way).
        console: a ``rich.console.Console`` to draw on (default: the terminal).
    """

    KEYS = ("loss", "val_mean")

    def __init__(self, enabled: bool, total: int, start: int, console: Any = None) -> None:
        self.bar: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        self.task = self.bar.add_task("train", total=total, completed=start, info="")
        self.bar.start()

    def update(self, step: int, row: Mapping[str, float]) -> None:
        """Show ``step`` done and the row's ``loss`` and ``val_mean`` (those present)."""
        if self.bar is None:
            return
        keys = [k for k in self.KEYS if k in row]
        self.bar.update(self.task, completed=step, info=" ".join(f"{k}={row[k]:.3f}" for k in keys))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
