"""Phantom fixtures live in tests/conftest.py; FAST is re-exported for the tests of this folder,
with the helpers that build a method and a random batch for the unit tests of one step."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from segshift.engine.config import resolve
from segshift.methods import get_method
from segshift.methods.base import Batch
from tests.conftest import FAST  # noqa: F401


def built_method(name: str, sets: Sequence[str] = (), seed: int | None = None):
    """Method ``name`` resolved with ``sets`` (fp32), built, on its device, in train mode; seeded if ``seed``."""
    cls = get_method(name)
    cfg = resolve(name, sets=["train.precision=fp32", *sets])
    if seed is not None:
        torch.manual_seed(seed)
    m = cls(cfg, num_classes=4)
    m.build()
    m.to_device()
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
