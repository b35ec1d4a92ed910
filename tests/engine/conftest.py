"""Phantom fixtures live in tests/conftest.py; FAST is re-exported for the tests of this folder, with the check
of a finished run folder."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import FAST  # noqa: F401

RUN_FILES = (
    "config.yaml",
    "run.json",
    "preprocess.json",
    "summary.json",
    "logs/train.csv",
    "checkpoints/best/weights.safetensors",
    "checkpoints/last/optim.safetensors",
)
"""What a finished run folder holds (with logs/tb/)."""


def run_folder_plan(run: Path) -> tuple[list[str], list[str]]:
    """Assert that ``run`` holds every file of :data:`RUN_FILES` and its TensorBoard log; the train and validation
    cases of its (single) source, from run.json's plan."""
    for f in RUN_FILES:
        assert (run / f).exists(), f
    assert (run / "logs" / "tb").is_dir()
    info = json.loads((run / "run.json").read_text())
    return next(iter(info["plan"]["train"].values())), next(iter(info["plan"]["val"].values()))
