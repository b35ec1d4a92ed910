"""The training loop learns the phantom and leaves a complete run folder.

This reads the session's shared 300-step source-only run (``trained_run``, tests/conftest.py,
also what the inference tests predict with), so it costs no training of its own; the same
check on a run of its own, with the automatic validation split, is the slow
tests/engine/test_trainer.py::test_source_only_learns_the_phantom.
"""

from __future__ import annotations

import json

from tests.engine.conftest import run_folder_plan


def test_source_only_learns_the_phantom_and_writes_its_run_folder(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    # in-domain validation Dice on held-out phantom patients; an untrained or broken model scores < 0.4
    assert summary["finished"] and summary["steps_done"] == 300 and summary["best_val_mean_dice"] > 0.8, summary
    assert summary["selection"] == "source validation Dice" and not summary["oracle"]
    train_cases, val_cases = run_folder_plan(trained_run)
    assert val_cases == ["case008", "case009"] and len(train_cases) == 8 and not set(train_cases) & set(val_cases)
    # the loss fell: the last logged supervised losses are well below the first
    header, *rows = (trained_run / "logs" / "train.csv").read_text().splitlines()
    loss = [float(dict(zip(header.split(","), r.split(",")))["loss"]) for r in rows]
    assert len(loss) >= 10 and sum(loss[-3:]) < 0.5 * sum(loss[:3]), loss
