"""A trained phantom run shared by the inference tests (the phantom fixture is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FAST


@pytest.fixture(scope="session")
def trained_run(phantom, tmp_path_factory) -> Path:
    """source-only on phantom bSSFP, 300 steps (~20 s): good enough to segment held-out phantom cases."""
    from segshift.engine.config import resolve
    from segshift.engine.trainer import train

    run = tmp_path_factory.mktemp("runs") / "src"
    sets = FAST + ["train.steps=300", "train.eval_every=100", "data.val_cases=[case008, case009]"]
    train(resolve("source-only", sets=sets), [phantom["bssfp"]], None, run, progress=False)
    return run
