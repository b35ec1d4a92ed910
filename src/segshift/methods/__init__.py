"""Methods: one file per method behind :class:`~segshift.methods.base.Method`, registered by name.

:func:`get_method` and :func:`available_methods` import the method modules on first use, so
importing :mod:`segshift.methods` does no work.
"""

from __future__ import annotations

import importlib

from segshift.errors import SegshiftError
from segshift.methods.base import REGISTRY, Method

# modules that define methods; a new method is a new module listed here
METHOD_MODULES = ("source_only", "target_oracle", "noise_aug", "histmatch", "gin_ipa", "bigaug", "adabn", "adaptseg", "advent", "adanet", "cyclegan", "unetgan", "attent",
                  "sdnet")


def _load_all() -> None:
    for mod in METHOD_MODULES:
        importlib.import_module(f"segshift.methods.{mod}")


def available_methods() -> dict[str, type[Method]]:
    """Every registered method, by name."""
    _load_all()
    return dict(sorted(REGISTRY.items()))


def get_method(name: str) -> type[Method]:
    methods = available_methods()
    if name not in methods:
        raise SegshiftError(f"unknown method {name!r}; available: {', '.join(methods)}")
    return methods[name]


__all__ = ["Method", "available_methods", "get_method"]
