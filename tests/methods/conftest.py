"""Phantom fixtures live in tests/conftest.py; FAST is re-exported for the tests of this folder,
with the helpers that build a method and a random batch for the unit tests of one step, and the guard
that fails a test on any read of a target label."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from segshift.data.domain import Domain
from segshift.engine.build import build_method
from segshift.engine.config import resolve
from segshift.methods.base import Batch
from tests.conftest import FAST  # noqa: F401


def built_method(name: str, sets: Sequence[str] = (), seed: int | None = None):
    """Method ``name`` resolved with ``sets`` (fp32, NCHW), built for training, in train mode; seeded if ``seed``."""
    cfg = resolve(name, sets=["train.precision=fp32", "train.channels_last=false", *sets])
    if seed is not None:
        torch.manual_seed(seed)
    m = build_method(cfg, "train", num_classes=4)
    m.train(True)
    return m


def random_batch(n: int = 4, size: int = 32, seed: int = 0, domains: Sequence[int] | None = None) -> Batch:
    """A random source batch of ``n`` 1-channel images with labels (domain ids ``domains``, default 0)
    and a target batch of ``n`` images of another intensity range."""
    g = torch.Generator().manual_seed(seed)
    dom = torch.tensor(list(domains)) if domains is not None else torch.zeros(n, dtype=torch.long)
    return Batch(
        torch.randn(n, 1, size, size, generator=g),
        torch.randint(0, 4, (n, size, size), generator=g),
        dom,
        torch.randn(n, 1, size, size, generator=g) * 2 + 1,
    )


def refuse_label_reads(monkeypatch: pytest.MonkeyPatch, target: Path, who: str) -> None:
    """Make ``Domain.load_label`` raise (an AssertionError naming ``who``) for the domain at ``target``, for the test's duration."""
    load_label = Domain.load_label

    def guarded(self: Domain, case: str, image: object = None) -> object:
        if self.root.resolve() == target.resolve():
            raise AssertionError(f"{who} read the target label of {case}")
        return load_label(self, case, image)

    monkeypatch.setattr(Domain, "load_label", guarded)
