"""A training run's folder: the checks before a new one, its staging, ``--overwrite``, and what a resume reads back.

A new run reads all its input in a hidden staging folder (``.RUN.staging``, :func:`staging`)
that is renamed to the run folder once everything was read (:func:`publish`), so a failure
leaves no half-made run behind. ``--overwrite`` keeps the run it replaces aside
(``.RUN.replaced``) until the new one finishes (:func:`discard_replaced`). The run folder::

    RUN/
      config.yaml          the fully resolved config (re-used as is by --resume)
      run.json             method, domains, case splits, selection rule, versions, git revision
      preprocess.json      the preprocessing (with the fitted histogram reference, if any)
      checkpoints/last/    full state (resume)
      checkpoints/best/    the selected model (train.select: best source validation Dice, or the last step)
      logs/train.csv       losses, learning rate, validation Dice; logs/tb/ TensorBoard
      summary.json         written when training finishes

A resume (:func:`open_resume`) continues with the folder's own ``config.yaml`` (refused if it
was edited since the last checkpoint) and the domains recorded in ``run.json``, which may have
moved to another folder but must be the same data; :func:`resumed_plan` re-keys the recorded
case plan to the folders they moved to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from segshift.data.cache import SliceCache
from segshift.data.domain import Domain, identity_changes
from segshift.engine import checkpoint as ckpt
from segshift.engine.config import Config, changes, dump, load_yaml
from segshift.errors import InputFileError, SegshiftError
from segshift.transforms import Preprocessor
from segshift.utils.atomic import check_disjoint, hidden_sibling, remove_temporaries, write_json, write_text


def check_new(run: Path, sources: Sequence[str | Path], target: str | Path | None, init: str | None, overwrite: bool) -> None:
    """Refuse a new run's folder that overlaps its inputs, or that holds files without ``overwrite``;
    warn when the target is also a source. Writes nothing.
    """
    check_disjoint(run, [*sources, target, init], "run folder")
    if run.exists() and any(run.iterdir()) and not overwrite:
        raise SegshiftError(f"{run}: run folder exists and is not empty (use --resume to continue it or --overwrite)")
    if target is not None and any(Path(s).resolve() == Path(target).resolve() for s in sources):
        print(f"warning: the target {target} is also a source: nothing is adapted to another domain", file=sys.stderr)


@contextlib.contextmanager
def staging(run: Path) -> Iterator[Path]:
    """The hidden staging folder of a new ``run`` (emptied first); removed if the body raises."""
    stage = hidden_sibling(run, "staging")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def publish(stage: Path, run: Path, cfg: Config, pre: Preprocessor, info: dict[str, Any]) -> bool:
    """Write ``config.yaml``, ``preprocess.json`` and ``run.json`` (``info``) into ``stage`` and rename it
    to ``run``, setting an existing ``run`` aside first (``--overwrite``). Returns whether one was set aside.
    """
    replaces = run.exists()
    if replaces:
        _set_aside(run)
    (stage / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_text(stage / "config.yaml", dump(cfg))
    pre.save(stage / "preprocess.json")
    write_json(stage / "run.json", {**info, "replaces": _aside(run).name} if replaces else info)
    stage.rename(run)
    return replaces


def rehome(cache: SliceCache, old: Path, new: Path) -> SliceCache:
    """A cache built under ``old`` (the staging folder) pointed at ``new`` (the run folder it was
    renamed to); a cache elsewhere (``data.cache_dir``) as it is. Nothing is re-read: a cache holds
    its folder, its index and lazily opened arrays.
    """
    try:
        return dataclasses.replace(cache, root=new / cache.root.relative_to(old))
    except ValueError:  # not under the staging folder
        return cache


def _aside(run: Path) -> Path:
    """Where ``--overwrite`` keeps the run it replaces until the new one finishes."""
    return hidden_sibling(run, "replaced")


def discard_replaced(run: Path) -> None:
    """Delete the run that ``run`` replaced (``--overwrite``), once ``run`` finished."""
    shutil.rmtree(_aside(run), ignore_errors=True)


def _set_aside(run: Path) -> None:
    """Move an existing run folder aside (``--overwrite``); it is deleted when the new run finishes,
    so an interrupted or failed replacement loses nothing finished. If a run is already aside,
    ``run`` is itself an unfinished replacement and is deleted instead.
    """
    kept = _aside(run)
    if kept.exists():
        shutil.rmtree(run)
        print(
            f"note: {run} was an unfinished replacement and is deleted; the run it replaced is still kept at {kept} "
            "until this one finishes",
            file=sys.stderr,
        )
    else:
        run.rename(kept)
        print(f"note: the previous {run} is kept at {kept} until this run finishes", file=sys.stderr)


def remove_run_temporaries(run: Path) -> None:
    """Delete the temporaries a killed process left in ``run`` and its subfolders (a checkpoint's
    ``checkpoints/.last.*.tmp``, a cache's, a file's); a shared ``data.cache_dir`` is left alone.
    """
    remove_temporaries(run)
    for sub in run.iterdir():
        if sub.is_dir() and not sub.is_symlink():
            remove_temporaries(sub)


@dataclasses.dataclass(frozen=True)
class Resume:
    """What a resumed run continues with (:func:`open_resume`).

    Attributes:
        cfg: the run's own ``config.yaml``.
        sources: the source domain folders (recorded, or where they moved).
        target: the target domain folder, if any.
        moved: {recorded folder: new folder} for the domains that moved.
        replaces: whether this run replaces another (``--overwrite``) still kept aside.
    """

    cfg: Config
    sources: list[str]
    target: str | None
    moved: dict[str, str]
    replaces: bool


def open_resume(run: Path, given: Config | None, sources: Sequence[str | Path], target: str | Path | None) -> Resume:
    """Check that ``run`` can be resumed with the command line's config (``given``, for its method)
    and domains (``--source``/``--target`` for a domain that moved); writes nothing.
    """
    if not (run / "config.yaml").is_file():
        raise SegshiftError(f"{run}: nothing to resume (no config.yaml)")
    cfg = _resumable_config(run, given)
    recorded = json.loads((run / "run.json").read_text())
    srcs, tgt, moved = _resume_domains(run, recorded, sources, target)
    return Resume(cfg, srcs, tgt, moved, bool(recorded.get("replaces")))


def _resumable_config(run: Path, given: Config | None) -> Config:
    """The config a resumed run continues with: its ``config.yaml``, refused if it was edited since
    the last checkpoint (which records the config it was trained with), or if ``given`` (the
    command line's) names another method.
    """
    saved = load_yaml(run / "config.yaml")
    last = run / "checkpoints" / "last"
    if (last / "state.json").is_file():
        recorded = ckpt.read_state(last).get("config")
        edited = changes(recorded, saved) if recorded is not None else []
        if edited:
            raise InputFileError(
                run / "config.yaml",
                f"differs from the config this run was trained with ({'; '.join(edited)}); a resumed run keeps its "
                "config: restore these values to resume, or train a new run with the new ones",
            )
    name, want = saved.get("method_name"), (given or {}).get("method_name")
    if want is not None and want != name:
        raise SegshiftError(f"{run}: this run trains {name}, not {want}: resume it with -m {name}, or train {want} into a new run folder")
    return saved


def _resume_domains(
    run: Path, info: dict[str, Any], sources: Sequence[str | Path], target: str | Path | None
) -> tuple[list[str], str | None, dict[str, str]]:
    """The domains a resumed run continues with: the recorded folders, or the ``--source`` /
    ``--target`` given with ``--resume`` for a domain that moved.

    Every domain must still be the one the run started with (:meth:`Domain.identity`: name,
    labels, case files and sizes); a changed domain is refused with what changed. Returns
    (sources, target, {recorded folder: new folder} for those that moved).
    """
    rec_src, rec_tgt = list(info["sources"]), info["target"]
    ident = info.get("identity") or {}  # a run.json without identities: paths only
    if sources and len(sources) != len(rec_src):
        raise SegshiftError(
            f"{run}: --resume with --source: this run has {len(rec_src)} source domain(s) "
            f"({', '.join(rec_src)}); give all of them, in that order, or none"
        )
    if target is not None and rec_tgt is None:
        raise SegshiftError(f"{run}: --resume with --target: this run has no target domain")
    pairs = [(r, str(Path(g).resolve()) if sources else r, i, "--source") for i, (r, g) in enumerate(zip(rec_src, sources or rec_src))]
    if rec_tgt is not None:
        pairs.append((rec_tgt, str(Path(target).resolve()) if target is not None else rec_tgt, None, "--target"))
    moved: dict[str, str] = {}
    for recorded, now, i, flag in pairs:
        if not (Path(now) / "domain.json").is_file():
            hint = (
                f"if it moved, give its new folder with {flag} along with --resume" if now == recorded else f"{now} is not a domain folder"
            )
            raise SegshiftError(f"{run}: cannot resume: the domain {recorded} recorded in run.json is gone; {hint}")
        want = ident.get("sources", [None] * len(rec_src))[i] if i is not None else ident.get("target")
        if want is not None:
            differences = identity_changes(want, Domain(now).identity())
            if differences:
                raise SegshiftError(
                    f"{run}: cannot resume: {now} is not the domain this run started with "
                    f"({'; '.join(differences)}); start a new run for changed data"
                )
        if now != recorded:
            moved[recorded] = now
    return [moved.get(r, r) for r in rec_src], moved.get(rec_tgt, rec_tgt) if rec_tgt else None, moved


def resumed_plan(run: Path, moved: dict[str, str], write: bool) -> dict[str, Any]:
    """The case plan recorded in ``run.json``; domains that moved (same identity, new folder) are
    re-keyed, and, if ``write``, run.json records their new folders.
    """
    info = json.loads((run / "run.json").read_text())
    plan: dict[str, Any] = info["plan"]
    if moved:

        def move(keys: dict[str, Any]) -> dict[str, Any]:
            return {moved.get(k, k): v for k, v in keys.items()}

        plan = {**plan, "train": move(plan["train"]), "val": move(plan["val"])}
        info["sources"] = [moved.get(s, s) for s in info["sources"]]
        info["target"] = moved.get(info["target"], info["target"]) if info["target"] else None
        info["plan"] = plan
        info.setdefault("moved", []).append({"from_to": moved, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        if write:
            write_json(run / "run.json", info)
    return plan


__all__ = [
    "Resume",
    "check_new",
    "discard_replaced",
    "open_resume",
    "publish",
    "rehome",
    "remove_run_temporaries",
    "resumed_plan",
    "staging",
]
