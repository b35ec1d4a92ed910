"""Checks of a method's hyper-parameters (the ``method:`` config section), in one place.

Each check names the key it rejects, so a user sees ``method.<key> must be ...`` and what
was given (torchio's "validate every argument in ``__init__``"). The config loader already
keeps each value's YAML type; these checks add the ranges and choices a type cannot say.

Example:
    >>> check_non_negative({"lambda_adv": 0.001}, "lambda_adv")
    >>> check_choice({"mode": "minent"}, "mode", ("adversarial", "minent"))
    'minent'
    >>> check_int({"steps": 0}, "steps", low=1)
    Traceback (most recent call last):
    ...
    segshift.errors.SegshiftError: method.steps must be a whole number >= 1, got 0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from segshift.errors import SegshiftError

__all__ = ["check_choice", "check_flags", "check_int", "check_ints", "check_non_negative", "check_number"]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_number(hp: Mapping[str, Any], key: str, low: float = 0.0, high: float | None = None) -> float:
    """``hp[key]`` as a float in ``[low, high]`` (``high`` None: unbounded)."""
    v = hp[key]
    if not _is_number(v) or v < low or (high is not None and v > high):
        bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise SegshiftError(f"method.{key} must be a finite number {bound}, got {v!r}")
    return float(v)


def check_non_negative(hp: Mapping[str, Any], *keys: str) -> None:
    """Every ``hp[key]`` is a finite number >= 0 (loss weights, learning rates)."""
    for k in keys:
        check_number(hp, k, 0.0)


def check_int(hp: Mapping[str, Any], key: str, low: int = 1) -> int:
    """``hp[key]`` as a whole number >= ``low`` (step counts, widths)."""
    v = hp[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise SegshiftError(f"method.{key} must be a whole number >= {low}, got {v!r}")
    return v


def check_ints(hp: Mapping[str, Any], key: str, n: int | None = None) -> list[int]:
    """``hp[key]`` as a non-empty list of positive whole numbers (of length ``n`` if given)."""
    v = hp[key]
    if not isinstance(v, Sequence) or isinstance(v, str) or not v or (n is not None and len(v) != n) or \
            not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in v):
        want = f"{n} positive whole numbers" if n else "a list of positive whole numbers"
        raise SegshiftError(f"method.{key} must be {want}, got {v!r}")
    return [int(c) for c in v]


def check_flags(hp: Mapping[str, Any], *keys: str) -> None:
    """Every ``hp[key]`` is ``true`` or ``false`` (method switches)."""
    for k in keys:
        if not isinstance(hp[k], bool):
            raise SegshiftError(f"method.{k} must be true or false, got {hp[k]!r}")


def check_choice(hp: Mapping[str, Any], key: str, choices: Sequence[str]) -> str:
    """``hp[key]``, one of ``choices``."""
    v = hp[key]
    if v not in choices:
        raise SegshiftError(f"method.{key} must be one of {', '.join(choices)}, got {v!r}")
    return v
