"""Run logs: a CSV of every logged step, TensorBoard scalars, and a progress bar with ETA."""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segshift.utils.atomic import oserror_names


class RunLogger:
    """Appends rows to ``logs/train.csv`` and scalars to TensorBoard (rank 0 only).

    On resume, rows after the resumed step are dropped so the log matches the run.
    """

    def __init__(self, run: Path, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = run / "logs" / "train.csv"
        self.fields: list[str] | None = None
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            if rows:
                self.fields = list(rows[0].keys())
                self._rewrite(rows)
            else:
                self.path.unlink()
        elif self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "logs" / "tb"), purge_step=resume_step)
        except ImportError:  # tensorboard is optional
            self.tb = None

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(rows)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **{k: f"{v:.6g}" for k, v in values.items()}}
        with oserror_names(self.path):
            self._append(row)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def _append(self, row: dict[str, Any]) -> None:
        if self.fields is None or not self.path.exists():
            self.fields = list(row)
            self._rewrite([row])
        else:
            new = [k for k in row if k not in self.fields]
            if new:  # a new column (e.g. first validation): rewrite with the wider header
                with open(self.path, newline="") as f:
                    rows = list(csv.DictReader(f))
                self.fields += new
                self._rewrite(rows + [row])
            else:
                with open(self.path, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=self.fields).writerow(row)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
