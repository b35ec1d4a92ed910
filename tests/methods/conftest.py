"""A small phantom task shared by the engine, method and inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from segshift.data.phantom import generate_phantom

# fast settings: 2.5 mm pixels, 80x80 crops (200 mm field of view), a narrow U-Net
FAST = [
    "data.preprocess.crop_size=[80,80]",
    "data.preprocess.target_spacing=2.5",
    "model.kwargs={features: [8,16,32,64]}",
    "train.lr=0.003",
    "train.warmup_steps=10",
    "train.log_every=10",
]


@pytest.fixture(scope="session")
def phantom(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("phantom")
    return generate_phantom(root, presets=["bssfp", "lge"], n_cases=10, seed=3)
