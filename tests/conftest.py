"""Shared fixtures and helpers: the real data location, small hand-made volumes, the phantom and its FAST settings,
``segshift train`` argument lists (torchrun included), target domains whose labels must not be read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from segshift.data.phantom import FAST_SETTINGS

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_CARDIAC = Path(os.environ.get("SEGSHIFT_SHARED_CARDIAC", REPO.parent / "shared" / "data" / "cardiac"))


@pytest.fixture(scope="session")
def shared_cardiac() -> Path:
    """The real cardiac data folder; tests using it are skipped (with the reason) when absent."""
    if not (SHARED_CARDIAC / "README.md").is_file():
        pytest.skip(f"real data not found at {SHARED_CARDIAC} (set SEGSHIFT_SHARED_CARDIAC)")
    return SHARED_CARDIAC


def oblique_affine(spacing=(1.5, 1.2, 8.0), angle_deg=25.0, origin=(-80.0, 40.0, 12.5)) -> np.ndarray:
    """A rotated (oblique) affine with anisotropic spacing."""
    a = np.deg2rad(angle_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    b = np.deg2rad(angle_deg / 2)
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rx @ rz @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def toy_case(shape=(40, 48, 6), seed=0, scale=1.0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny image/label pair with canonical cardiac ids: LV disc, MYO ring, RV blob (radii x ``scale``)."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    ci, cj = shape[0] / 2 + rng.uniform(-2, 2), shape[1] / 2 + rng.uniform(-2, 2)
    r = np.hypot(i - ci, j - cj) / scale
    lab2 = np.zeros(shape[:2], np.uint8)
    lab2[r < 10] = 2
    lab2[r < 6] = 1
    lab2[(np.hypot(i - ci, j - cj - 13 * scale) / scale < 5) & (lab2 == 0)] = 3
    lab = np.repeat(lab2[:, :, None], shape[2], axis=2)
    img = (np.choose(lab, [20.0, 200.0, 60.0, 180.0]) + rng.normal(0, 5, shape)).astype(np.float32)
    return img, lab


@pytest.fixture
def toy() -> tuple[np.ndarray, np.ndarray]:
    return toy_case()


# fast training settings for phantom tests: 2.5 mm pixels, 80x80 crops (200 mm field of view), a narrow U-Net;
# a list, so that the tests' idiom FAST + ["train.steps=4"] works
FAST: list[str] = list(FAST_SETTINGS)


def set_args(sets: Iterable[str]) -> list[str]:
    """``--set S`` for each of ``sets``, in order (a later value of a key wins, as on the command line)."""
    return [a for s in sets for a in ("--set", s)]


def train_argv(
    method: str,
    source: Path,
    out: Path,
    *options: str,
    target: Path | None = None,
    sets: Iterable[str] = (),
    progress: bool = False,
) -> list[str]:
    """``segshift train`` arguments: ``method`` from ``source`` (adapting to ``target``) into ``out``, then
    ``options``, ``--no-progress`` unless ``progress``, and ``--set`` for each of ``sets``, in order."""
    argv = ["train", "-m", method, "-s", str(source)]
    if target is not None:
        argv += ["-t", str(target)]
    argv += ["-o", str(out), *options]
    if not progress:
        argv.append("--no-progress")
    return argv + set_args(sets)


def torchrun_train(
    method: str, source: Path, out: Path, *, target: Path | None = None, sets: Iterable[str] = ()
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """:func:`train_argv` run by torchrun as two CPU processes that dump their final weights: rank 0's and rank 1's."""
    from safetensors.torch import load_file

    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "segshift"]
    args += train_argv(method, source, out, target=target, sets=sets)
    env = {**os.environ, "SEGSHIFT_DUMP_RANK_WEIGHTS": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return load_file(str(out / "rank_weights" / "rank0.safetensors")), load_file(str(out / "rank_weights" / "rank1.safetensors"))


def garbage_labels_copy(domain: Path, dest: Path, unreadable: bool = False) -> Path:
    """A copy of ``domain`` at ``dest`` whose label files are garbage (and mode 0 if ``unreadable``): any read
    of one fails loudly."""
    shutil.copytree(domain, dest)
    for p in (dest / "labels").iterdir():
        p.write_bytes(b"not a nifti: a target label was read")
        if unreadable:
            os.chmod(p, 0)
    return dest


@pytest.fixture(scope="session")
def phantom(tmp_path_factory) -> dict[str, Path]:
    """A small phantom task (bSSFP-like source, LGE-like target, 10 cases each), made once per test session."""
    from segshift.data.phantom import generate_phantom

    root = tmp_path_factory.mktemp("phantom")
    return generate_phantom(root, presets=["bssfp", "lge"], n_cases=10, seed=3)


@pytest.fixture(scope="session")
def trained_run(phantom, tmp_path_factory) -> Path:
    """source-only on phantom bSSFP, 300 steps (~20 s), made once per test session: good enough to segment
    held-out phantom cases. Shared by the engine's learning check and the inference tests."""
    from segshift.engine.config import resolve
    from segshift.engine.trainer import train

    run = tmp_path_factory.mktemp("runs") / "src"
    sets = FAST + ["train.steps=300", "train.eval_every=100", "data.val_cases=[case008, case009]"]
    train(resolve("source-only", sets=sets), [phantom["bssfp"]], None, run, progress=False)
    return run


def tiny_suite_text(qc_threshold: float = 0.5) -> str:
    """phantom-tiny with budgets cut to the bone (init 6 steps, stage 4): every stage, table and figure of the
    benchmark, in about half a minute on 2 CPU cores. The models barely learn: the plumbing is tested, not the numbers."""
    from segshift.bench.suite import builtin_suites

    text = builtin_suites()["phantom-tiny"]
    for old, new in (
        ("budget: {steps: 40}}", "budget: {steps: 6}}"),
        ("budget: {steps: 20}", "budget: {steps: 4}"),
        ("train.eval_every=10", "train.eval_every=3"),
        ("train.checkpoint_every=10", "train.checkpoint_every=3"),
        ("train.log_every=5", "train.log_every=1"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text + f"qc_threshold: {qc_threshold}\n"


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory) -> Path:
    """``segshift benchmark`` of :func:`tiny_suite_text` and ``segshift report``, once per test session (~30 s on
    2 CPU cores): the benchmark folder the report's browser test and the QC validation tests read."""
    from segshift.cli.main import main

    root = tmp_path_factory.mktemp("tiny_benchmark")
    suite = root / "tiny.yaml"
    suite.write_text(tiny_suite_text())
    out = root / "bench"
    assert main(["benchmark", str(suite), "--out", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    return out
