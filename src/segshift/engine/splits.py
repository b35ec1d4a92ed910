"""Case selection and patient-grouped train/validation splits.

Cases of one patient (ACDC's ``patient071_frame01`` and ``patient071_frame09``) always fall
on the same side of a split: a case's *group* is its id with a trailing ``_frameNN``
removed (``data.group_pattern`` is not configurable yet; the rule is documented here).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segshift.errors import InputFileError, SegshiftError

_FRAME = re.compile(r"^(?P<group>.*?)(_frame\d+)?$")


def group_of(case: str) -> str:
    return _FRAME.fullmatch(case).group("group")  # type: ignore[union-attr]


def select(cases: Sequence[str], selector: str | Sequence[str] | None, what: str) -> list[str]:
    """Cases named by ``selector``: ``None`` (all), a list of ids, or a regex (full match)."""
    cases = list(cases)
    if selector is None:
        return cases
    if isinstance(selector, str):
        try:
            rx = re.compile(selector)
        except re.error as exc:
            raise SegshiftError(f"{what}: {selector!r} is not a valid regular expression ({exc})") from exc
        chosen = [c for c in cases if rx.fullmatch(c)]
        if not chosen:
            raise SegshiftError(f"{what}: regex {selector!r} matches no case (cases: {', '.join(cases[:8])}...)")
        return chosen
    missing = [c for c in selector if c not in cases]
    if missing:
        raise SegshiftError(f"{what}: unknown case(s) {', '.join(map(str, missing))}")
    return [c for c in cases if c in set(selector)]


def split(
    cases: Sequence[str],
    val_fraction: float,
    seed: int,
    val_cases: str | Sequence[str] | None = None,
    train_cases: str | Sequence[str] | None = None,
    what: str = "data",
) -> tuple[list[str], list[str]]:
    """``(train, val)`` case lists, grouped by patient, reproducible from ``seed``."""
    cases = sorted(cases)
    if val_cases is not None:
        val = select(cases, val_cases, f"{what}.val_cases")
    else:
        groups = sorted({group_of(c) for c in cases})
        n_val = int(round(val_fraction * len(groups)))
        if val_fraction > 0 and n_val == 0 and len(groups) > 1:
            n_val = 1
        rng = np.random.default_rng(seed)
        val_groups = set(rng.permutation(groups)[:n_val].tolist())
        val = [c for c in cases if group_of(c) in val_groups]
    rest = [c for c in cases if c not in set(val)]
    train = select(rest, train_cases, f"{what}.train_cases") if train_cases is not None else rest
    leaked = {group_of(c) for c in train} & {group_of(c) for c in val}
    if leaked:
        raise SegshiftError(f"{what}: patients {sorted(leaked)} are in both the training and validation cases")
    if not train:
        raise SegshiftError(f"{what}: no training cases left after the validation split")
    return train, val


def group_folds(cases: Sequence[str], k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """``(train, val)`` folds of a cross-validation grouped by patient: every case is validated in exactly one fold.

    The patients (:func:`group_of`) are shuffled with ``seed`` and each is given to the fold with
    the fewest validation cases so far (ties: the lower fold), so folds differ by at most one
    patient's cases. With fewer than ``k`` patients there is one fold per patient; with fewer
    than two, none.
    """
    cases = sorted(cases)
    groups = sorted({group_of(c) for c in cases})
    k = min(k, len(groups))
    if k < 2:
        return []
    size = {g: sum(group_of(c) == g for c in cases) for g in groups}
    val_groups: list[set[str]] = [set() for _ in range(k)]
    counts = [0] * k
    for g in np.random.default_rng(seed).permutation(groups).tolist():
        i = counts.index(min(counts))
        val_groups[i].add(g)
        counts[i] += size[g]
    return [([c for c in cases if group_of(c) not in vg], [c for c in cases if group_of(c) in vg]) for vg in val_groups]


def recorded_split(run: str | Path, domain_root: str | Path, identity: Mapping[str, Any] | None = None) -> tuple[list[str], list[str]]:
    """The ``(train, val)`` cases a run's ``run.json`` plan recorded for one of its labelled domains.

    The domain is found by its folder (the plan's key) or, for a domain that moved or was
    copied, by its :meth:`~segshift.data.domain.Domain.identity` (pass ``identity``).
    """
    run = Path(run)
    path = run / "run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        plan = info["plan"]
        train, val = dict(plan["train"]), dict(plan["val"])
    except FileNotFoundError as exc:
        raise InputFileError(path, "missing: --run needs a run folder written by segshift train") from exc
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputFileError(path, f"has no readable split plan ({type(exc).__name__}: {exc})") from exc
    key = str(Path(domain_root).resolve())
    if key not in train and identity is not None:
        recorded = (info.get("identity") or {}).get("sources") or []
        for folder, ident in zip(info.get("sources") or [], recorded):
            if ident and ident.get("sha256") == identity.get("sha256") and folder in train:
                key = folder
                break
    if key not in train:
        raise SegshiftError(f"{domain_root}: is not a labelled domain of the run {run} (its split covers {', '.join(train) or 'nothing'})")
    return list(train[key]), list(val.get(key) or [])
