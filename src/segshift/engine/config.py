"""Configuration: packaged YAML defaults, a method's YAML, a user's YAML, then ``--set``.

A named augmentation preset (``augment.preset``) replaces the packaged defaults of the
``augment:`` section before the other layers apply, so every key set explicitly still wins
and the resolved config holds the values a run uses.

A config is a plain nested ``dict`` (YAML in, YAML out, saved as ``config.yaml`` in every
run folder). Every key a user sets must exist in the defaults, so a typo is an error rather
than a silently ignored setting; values given with ``--set key.sub=value`` are parsed as
YAML (``--set train.steps=20``, ``--set data.val_cases=[patient16,patient17]``) and must keep
the type of the default (an int where an int is expected; ``null`` defaults accept anything).
Every YAML here is read by one loader that takes each float form as a number, ``1e-3`` included
(YAML 1.1, which PyYAML follows, reads a float without a dot as a string).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from segshift.errors import InputFileError, SegshiftError

Config = dict[str, Any]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading floats as YAML 1.2 does: ``1e-3``, ``1.5e3``, ``.5E+2`` and ``-2e4`` are numbers."""


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting a string that :class:`_Loader` would read as a float (``'1e-3'``)."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+.0123456789"),
    )


def parse_yaml(text: str) -> Any:
    """One YAML document, read safely (no code runs) with every float form a number."""
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no code runs


def _load_packaged(name: str) -> Config:
    text = resources.files("segshift.configs").joinpath(name).read_text(encoding="utf-8")
    return parse_yaml(text) or {}


def base_defaults() -> Config:
    return _load_packaged("base.yaml")


def method_defaults(method: str) -> Config:
    """The packaged YAML of one method (empty if it has none)."""
    path = resources.files("segshift.configs").joinpath("methods").joinpath(f"{method}.yaml")
    if not path.is_file():
        return {}
    return parse_yaml(path.read_text(encoding="utf-8")) or {}


def load_yaml(path: str | Path) -> Config:
    path = Path(path)
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputFileError(path, "does not exist") from exc
    except yaml.YAMLError as exc:
        raise InputFileError(path, f"is not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputFileError(path, "must hold a YAML mapping at the top level")
    return data


def _check_type(key: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SegshiftError(f"config {key}: expected true/false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise SegshiftError(f"config {key}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SegshiftError(f"config {key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise SegshiftError(f"config {key}: expected a string, got {value!r}")
    if isinstance(default, list) and not isinstance(value, list):
        raise SegshiftError(f"config {key}: expected a list, got {value!r}")
    return value


# sections whose keys are free-form (network kwargs, loss weights)
_FREE = {"model.kwargs", "train.loss"}


def merge(base: Config, override: Mapping[str, Any], prefix: str = "", strict: bool = True) -> Config:
    """Recursively merge ``override`` into a copy of ``base``; unknown keys raise when ``strict``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        full = f"{prefix}{key}"
        if key not in out:
            if strict and prefix.rstrip(".") not in _FREE:
                known = ", ".join(sorted(out)) or "none"
                raise SegshiftError(f"config: unknown key {full!r} (known at this level: {known})")
            out[key] = copy.deepcopy(value)
            continue
        if isinstance(out[key], dict) and f"{full}" not in _FREE:
            if not isinstance(value, Mapping):
                raise SegshiftError(f"config {full}: expected a mapping, got {value!r}")
            out[key] = merge(out[key], value, prefix=f"{full}.", strict=strict)
        elif isinstance(out[key], dict):
            if not isinstance(value, Mapping):
                raise SegshiftError(f"config {full}: expected a mapping, got {value!r}")
            out[key] = copy.deepcopy(dict(value))
        else:
            out[key] = _check_type(full, out[key], copy.deepcopy(value))
    return out


def parse_set(items: Iterable[str]) -> Config:
    """``["train.steps=20", "augment.flip=true"]`` -> nested dict (values parsed as YAML)."""
    out: Config = {}
    for item in items:
        if "=" not in item:
            raise SegshiftError(f"--set: expected key.path=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise SegshiftError(f"--set: bad key {key!r}")
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise SegshiftError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from exc
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SegshiftError(f"--set: {key!r} conflicts with another --set")
        node[parts[-1]] = value
    return out


INF = float("inf")
RANGES: dict[str, tuple[float, float]] = {
    "seed": (0, 2**31 - 1),
    "data.preprocess.target_spacing": (0.05, 50.0),
    "data.preprocess.crop_size": (8, 4096),
    "data.preprocess.clip_percentiles": (0.0, 100.0),
    "data.preprocess.histmatch_levels": (2, 65536),
    "data.val_fraction": (0.0, 0.9),
    "train.steps": (1, 10**8),
    "train.batch_size": (1, 4096),
    "train.lr": (0.0, 10.0),  # 0: nothing learns (a frozen stage)
    "train.momentum": (0.0, 0.9999),
    "train.weight_decay": (0.0, 1.0),
    "train.poly_power": (1e-6, 100.0),
    "train.warmup_steps": (0, 10**8),
    "train.eval_every": (1, 10**8),
    "train.checkpoint_every": (1, 10**8),
    "train.log_every": (1, 10**8),
    "train.eval_batch_size": (1, 4096),
    "train.diverge_factor": (0.0, INF),
    "train.diverge_patience": (1, 10**8),
    "train.diverge_warmup": (0, 10**8),
    "augment.rotate_deg": (0.0, 180.0),
    "augment.scale": (1e-3, 100.0),
    "augment.translate": (0.0, 1.0),
    "augment.gamma": (1e-3, 100.0),
    "augment.contrast": (0.0, 100.0),
    "augment.brightness": (0.0, 100.0),
    "augment.noise_std": (0.0, 100.0),
    "augment.noise_std_min": (0.0, 100.0),
    "augment.blur_sigma": (0.0, 100.0),
    "augment.shear_deg": (0.0, 60.0),
    "augment.elastic_alpha": (0.0, 1000.0),
    "augment.elastic_sigma": (0.5, 100.0),
}
"""The allowed range (inclusive) of every numeric engine setting; a list value is checked element-wise.
(Method hyper-parameters are checked by their spec, :mod:`segshift.methods.hparams`; the
``augment.gin``/``augment.bigaug`` sections by their dataclasses.)"""


def check_ranges(cfg: Mapping[str, Any]) -> None:
    """Refuse any setting of :data:`RANGES` outside its range, naming the key, the value and the range."""
    for key, (lo, hi) in RANGES.items():
        try:
            value = get(cfg, key)
        except (KeyError, TypeError):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None or isinstance(v, bool):
                continue
            if not isinstance(v, (int, float)) or v != v or not lo <= v <= hi:
                raise SegshiftError(f"config {key}: {value!r} is outside its range [{lo:g}, {hi:g}]")


def check_values(cfg: Mapping[str, Any]) -> None:
    """:func:`check_ranges`, then the rules that tie engine settings together."""
    check_ranges(cfg)
    train = cfg.get("train") or {}
    if train.get("dice_background") and not (train.get("loss") or {}).get("dice"):
        raise SegshiftError(
            f"config train.dice_background: true needs a dice term in train.loss (got {dict(train.get('loss') or {})}); "
            "e.g. --set train.loss='{ce: 1, dice: 1}'"
        )


def with_augment_preset(cfg: Config, name: Any) -> Config:
    """``cfg`` with the ``augment:`` values of preset ``name`` (:data:`~segshift.transforms.augment.AUGMENT_PRESETS`)."""
    from segshift.transforms.augment import augment_preset

    out = copy.deepcopy(cfg)
    out["augment"] = merge(out["augment"], {**augment_preset(name), "preset": name}, prefix="augment.")
    return out


def resolve(method: str, user_files: Iterable[str | Path] = (), sets: Iterable[str] = ()) -> Config:
    """Full config of a run: base -> augment preset -> the method's hyper-parameter defaults -> method YAML -> user YAML -> --set.

    The preset is the one the merged layers name (``augment.preset``); it replaces the base
    values of the ``augment:`` section, and the layers are merged again on top. The
    ``method:`` section comes from the method class's spec (found by name), and is checked
    by its one validator (:meth:`~segshift.methods.base.Method.validate_hparams`); every engine
    setting by :func:`check_values`.
    """
    from segshift.methods import get_method

    cls = get_method(method)
    base = base_defaults()
    base["method"] = cls.hparam_defaults()
    layers = [method_defaults(method), *(load_yaml(path) for path in user_files), parse_set(sets)]
    cfg = base
    for layer in layers:
        cfg = merge(cfg, layer)
    cfg = with_augment_preset(base, cfg["augment"]["preset"])
    for layer in layers:
        cfg = merge(cfg, layer)
    cfg["method_name"] = method
    cfg["method"] = cls.validate_hparams(cfg["method"])
    check_values(cfg)
    return cfg


def get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every setting that differs between two configs, as ``key: old -> new`` (dotted keys,
    values compared as JSON: a list by its items, NaN equal to NaN).
    """
    unset = object()

    def show(v: Any) -> str:
        return "(unset)" if v is unset else repr(v)

    out: list[str] = []
    for key in [*old, *(k for k in new if k not in old)]:
        full = f"{prefix}{key}"
        a, b = old.get(key, unset), new.get(key, unset)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += changes(a, b, f"{full}.")
        elif a is unset or b is unset or json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{full}: {show(a)} -> {show(b)}")
    return out


def dump(cfg: Mapping[str, Any]) -> str:
    return yaml.dump(dict(cfg), Dumper=_Dumper, sort_keys=False)
