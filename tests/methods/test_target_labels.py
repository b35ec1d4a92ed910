"""Unsupervised adaptation: no method that adapts to an unlabelled target reads its labels.

Every registered method with ``uses_target`` and not ``uses_target_labels`` trains from
scratch, for a step or two at toy size, from the bSSFP phantom to a copy of the LGE phantom
whose label files are garbage. Three guards, any of which fails the test:

* every file the process opens is recorded (an audit hook: it sees each Python-level open,
  nibabel's, gzip's and numpy's included, even one whose error is caught and swallowed) and
  none may lie in the target's ``labels/``, while its ``images/`` must have been opened (the
  method did use the target);
* ``Domain.load_label`` raises for the target domain;
* a read that got past both meets a file that is not a NIfTI.

The oracle is the control that the guard can fail: ``target-oracle`` on the same target is
seen opening its label files. (The warm-started path is covered with garbage target labels
too, in tests/engine/test_warmstart.py.)
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pytest

from segshift.engine.config import resolve
from segshift.engine.trainer import train
from segshift.methods import available_methods, get_method
from tests.conftest import garbage_labels_copy
from tests.methods.conftest import FAST, refuse_label_reads


def _adapting_methods() -> list[str]:
    return sorted(n for n in available_methods() if get_method(n).uses_target and not get_method(n).uses_target_labels)


BASE = FAST + [
    "model.kwargs={features: [4,8,16,32]}",
    "train.batch_size=4",
    "train.steps=2",
    "train.eval_every=2",
    "train.checkpoint_every=100",
    "data.train_cases=[case000,case001]",
    "data.val_cases=[case002]",
    "data.target_cases=[case000,case001,case002]",
]
# toy widths and the shortest stages per method (methods not listed train with BASE alone)
TINY = {
    "adaptseg": ["method.d_channels=[8,8,8,8,1]"],
    "advent": ["method.d_channels=[8,8,8,8,1]"],
    "adanet": ["method.d_channels=[8,8,8,8,1]", "method.gfrm_channels=4"],
    "cyclegan": ["method.g_ngf=4", "method.g_blocks=1", "method.d_channels=[8,8,8,1]", "method.g_batch=2"],
    "attent": ["method.g_ngf=4", "method.g_blocks=1", "method.d_channels=[8,8,8,1]", "method.g_batch=2", "method.e_d_channels=[8,8,8,8,1]"],
    "unetgan": [
        "method.g_ngf=4",
        "method.g_blocks=1",
        "method.d_channels=[8,8,8,1]",
        "method.g_batch=2",
        "method.seg_steps=1",
        "method.gan_steps=1",
        "model.name=unet",
    ],
    "sdnet-ss": [
        "method.anatomy_features=[4,8,16]",
        "method.anatomy_channels=4",
        "method.segmentor_width=8",
        "method.decoder_width=8",
        "method.modality_channels=[4,8]",
        "method.z_dim=4",
    ],
}
TINY["sdnet-fa"] = [*TINY["sdnet-ss"], "method.pretrain_steps=1", "train.steps=1"]


class _Opens:
    """Paths opened (by any Python-level open) under watched folders, recorded by one audit hook per process."""

    watched: ClassVar[list[tuple[tuple[str, ...], list[str]]]] = []
    installed: ClassVar[bool] = False

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if event != "open" or not cls.watched or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = os.fsdecode(args[0])
        for prefixes, seen in cls.watched:
            if path.startswith(prefixes) or (not os.path.isabs(path) and os.path.join(os.getcwd(), path).startswith(prefixes)):
                seen.append(path)


@contextmanager
def opened_under(folder: Path) -> Iterator[list[str]]:
    """Record every file opened under ``folder`` (given or resolved path) while the block runs."""
    if not _Opens.installed:
        sys.addaudithook(_Opens.hook)  # audit hooks cannot be removed: it records only while something is watched
        _Opens.installed = True
    prefixes = tuple({str(folder) + os.sep, str(folder.resolve()) + os.sep})
    seen: list[str] = []
    _Opens.watched.append((prefixes, seen))
    try:
        yield seen
    finally:
        _Opens.watched.remove((prefixes, seen))


def _train(method: str, source: Path, target: Path, run: Path) -> dict:
    cfg = resolve(method, sets=[*BASE, *TINY.get(method, [])])
    return train(cfg, [source], target, run, progress=False)


def test_every_adapting_method_is_checked():
    methods = _adapting_methods()
    assert {"adabn", "adaptseg", "advent", "adanet", "attent", "cyclegan", "unetgan", "sdnet-ss", "sdnet-fa"} <= set(methods)
    assert "target-oracle" not in methods and "source-only" not in methods


@pytest.mark.parametrize("method", _adapting_methods())
def test_target_labels_are_never_opened_in_training(method, phantom, tmp_path, monkeypatch):
    target = garbage_labels_copy(phantom["lge"], tmp_path / "target")
    refuse_label_reads(monkeypatch, target, method)
    with opened_under(target / "labels") as labels, opened_under(target / "images") as images:
        summary = _train(method, phantom["bssfp"], target, tmp_path / "run")
    assert labels == [], f"{method} opened target label files: {sorted(set(labels))}"
    assert images, f"{method} never opened a target image: it did not adapt to the target (or the guard sees nothing)"
    assert summary["finished"] and not summary["oracle"]


def test_the_guard_sees_the_oracle_read_target_labels(phantom, tmp_path):
    """The control: the same recording catches a method that does read target labels."""
    target = tmp_path / "target"
    shutil.copytree(phantom["lge"], target)
    with opened_under(target / "labels") as labels:
        summary = _train("target-oracle", phantom["bssfp"], target, tmp_path / "run")
    assert summary["oracle"] and labels, "target-oracle trains on target labels, yet no opening of them was recorded"
