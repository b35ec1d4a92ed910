"""Methods: one file per method behind :class:`~segshift.methods.base.Method`, registered by name.

:func:`get_method` and :func:`available_methods` import every module of this package on
first use (discovery: a new method is a new file with an ``@register``-ed class, nothing to
list), so importing :mod:`segshift.methods` does no work.
"""

from __future__ import annotations

import importlib
import pkgutil

from segshift.errors import SegshiftError
from segshift.methods.base import REGISTRY, Method


def _load_all() -> None:
    """Import every module of this package: each ``@register``-ed class becomes available (discovery)."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


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
