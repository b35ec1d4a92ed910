"""A method's hyper-parameters, declared once: default, allowed values and meaning (DomainBed's hparams registry).

Each method class declares ``hparams = {"key": number(0.001, "what it is"), ...}``. That spec
is the single source of the ``method:`` config section: its defaults (``resolve`` and
``segshift methods --config NAME``), its checks (:func:`validate`, run when a config is
resolved and again when a method is built), and its documentation (``segshift methods
--hparams NAME`` and the table in ``docs/training.md``, kept in step by a test). Each check
names the key it rejects, so a user sees ``method.<key> must be ...`` and what was given.

Example:
    >>> spec = {"lambda_adv": number(0.001, "adversarial weight"), "mode": choice("adversarial", ("adversarial", "minent"), "")}
    >>> validate(spec, {"lambda_adv": 0.01})
    {'lambda_adv': 0.01, 'mode': 'adversarial'}
    >>> validate(spec, {"lambda_adv": -1})
    Traceback (most recent call last):
    ...
    segshift.errors.SegshiftError: method.lambda_adv must be a finite number >= 0, got -1
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from segshift.errors import SegshiftError

__all__ = ["HParam", "choice", "defaults", "flag", "integer", "ints", "markdown", "number", "numbers", "table", "validate"]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class HParam:
    """One hyper-parameter: its default, what it means, and the values it allows.

    Build it with :func:`number`, :func:`integer`, :func:`flag`, :func:`choice`, :func:`ints`
    or :func:`numbers`, which check that the default itself is allowed.
    """

    default: Any
    doc: str
    kind: str  # number | integer | flag | choice | ints | numbers
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    length: int | None = None  # exact list length (ints, numbers)
    min_length: int = 1
    nullable: bool = False  # null allowed (its meaning is in ``doc``)

    def allowed(self) -> str:
        """The allowed values, in words (error messages, the docs table)."""
        if self.kind == "flag":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(self.choices)
        elif self.kind in ("number", "integer"):
            what = "a finite number" if self.kind == "number" else "a whole number"
            text = f"{what} {_bounds(self.low, self.high)}".rstrip()
        else:
            what = "positive whole numbers" if self.kind == "ints" else f"finite numbers {_bounds(self.low, self.high)}".rstrip()
            n = f"{self.length} " if self.length else (f"at least {self.min_length} " if self.min_length > 1 else "")
            text = f"a list of {n}{what}"
        return text + (" (or null)" if self.nullable else "")

    def check(self, key: str, value: Any) -> Any:
        """``value`` normalised (floats for numbers, lists for sequences), or an error naming ``method.key``."""
        if value is None and self.nullable:
            return None
        ok, out = self._normalise(value)
        if not ok:
            raise SegshiftError(f"method.{key} must be {self.allowed()}, got {value!r}")
        return out

    def _normalise(self, v: Any) -> tuple[bool, Any]:
        if self.kind == "flag":
            return isinstance(v, bool), v
        if self.kind == "choice":
            return v in self.choices, v
        if self.kind == "number":
            return _is_number(v) and _within(v, self.low, self.high), float(v) if _is_number(v) else v
        if self.kind == "integer":
            return _is_int(v) and _within(v, self.low, self.high), v
        if not isinstance(v, Sequence) or isinstance(v, str) or len(v) < self.min_length or (self.length and len(v) != self.length):
            return False, v
        if self.kind == "ints":
            return all(_is_int(c) and c > 0 for c in v), [int(c) for c in v] if all(_is_int(c) for c in v) else v
        good = all(_is_number(c) and _within(c, self.low, self.high) for c in v)
        return good, [float(c) for c in v] if good else v


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"in [{low:g}, {high:g}]"
    if low is not None:
        return f">= {low:g}"
    return f"<= {high:g}" if high is not None else ""


def _within(v: float, low: float | None, high: float | None) -> bool:
    return (low is None or v >= low) and (high is None or v <= high)


def _made(spec: HParam) -> HParam:
    spec.check("<default>", spec.default)  # a spec whose default it refuses is a programming error
    return spec


def number(default: float | None, doc: str, low: float | None = 0.0, high: float | None = None, nullable: bool = False) -> HParam:
    """A finite real number in ``[low, high]`` (default: >= 0, as loss weights and learning rates)."""
    return _made(HParam(default, doc, "number", low=low, high=high, nullable=nullable))


def integer(default: int | None, doc: str, low: int | None = 1, high: int | None = None, nullable: bool = False) -> HParam:
    """A whole number in ``[low, high]`` (default: >= 1, as widths and step counts)."""
    return _made(HParam(default, doc, "integer", low=low, high=high, nullable=nullable))


def flag(default: bool, doc: str) -> HParam:
    """``true`` or ``false`` (a method switch)."""
    return _made(HParam(default, doc, "flag"))


def choice(default: str, choices: Sequence[str], doc: str) -> HParam:
    """One of ``choices``."""
    return _made(HParam(default, doc, "choice", choices=tuple(choices)))


def ints(default: Sequence[int], doc: str, length: int | None = None, min_length: int = 1) -> HParam:
    """A list of positive whole numbers (network widths)."""
    return _made(HParam(list(default), doc, "ints", length=length, min_length=min_length))


def numbers(default: Sequence[float], doc: str, length: int | None = None, low: float | None = None, high: float | None = None) -> HParam:
    """A list of finite numbers in ``[low, high]`` (Adam's betas)."""
    return _made(HParam([float(x) for x in default], doc, "numbers", length=length, low=low, high=high))


def defaults(specs: Mapping[str, HParam]) -> dict[str, Any]:
    """Every key's default (a fresh copy: lists may be changed by the caller)."""
    return {k: copy.deepcopy(s.default) for k, s in specs.items()}


def validate(specs: Mapping[str, HParam], values: Mapping[str, Any]) -> dict[str, Any]:
    """The complete, checked ``method:`` section: ``values`` over the defaults.

    Unknown keys are an error (a typo must not be ignored); missing keys take their default
    (a run saved before a key existed keeps working).
    """
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise SegshiftError(f"method: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(specs)) or 'none'})")
    out = defaults(specs)
    for key, value in values.items():
        out[key] = specs[key].check(key, value)
    return out


def table(specs: Mapping[str, HParam]) -> list[tuple[str, str, str, str]]:
    """``(key, default as YAML, allowed values, meaning)`` for every key (CLI and docs)."""
    import yaml

    rows = []
    for key, s in specs.items():
        default = yaml.safe_dump(s.default, default_flow_style=True).strip().removesuffix("...").strip()
        rows.append((key, default, s.allowed(), s.doc))
    return rows


def markdown(methods: Mapping[str, Any]) -> str:
    """The hyper-parameter reference of ``methods`` (name -> method class) as Markdown (``docs/hparams.md``)."""
    out = [
        "# Method hyper-parameters",
        "",
        "Generated from the specs in `src/segshift/methods/` by `segshift methods --markdown` (a test keeps it in step).",
        "Set any of them with `--set method.<key>=<value>`; `segshift methods --config NAME` prints a method's full config.",
        "",
    ]
    for name, cls in methods.items():
        out += [f"## `{name}`", "", cls.describe(), ""]
        rows = table(cls.hparams)
        if not rows:
            out += ["No hyper-parameters of its own (the engine's config sections apply).", ""]
            continue
        out += ["| key | default | allowed | meaning |", "|---|---|---|---|"]
        out += [f"| `{k}` | `{d}` | {a} | {doc.replace('|', '/')} |" for k, d, a, doc in rows]
        out.append("")
    return "\n".join(out)
