"""Atomic writes: a reader sees either the old file/folder or the complete new one.

Files are written to a temporary sibling and moved into place with :func:`os.replace`;
folders are built under a temporary sibling and renamed. On any error the temporary is
removed and the destination is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from segshift.errors import SegshiftError


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; move it onto ``dest`` if the block succeeds.

    ``suffix`` is kept on the temporary name so that writers that infer the format from the
    extension (``.nii.gz``, ``.png``) still work.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def oserror_names(path: str | Path) -> Iterator[None]:
    """Re-raise an :class:`OSError` that names no file as one that names ``path``.

    A failed ``write`` or ``close`` (a full disk: ``ENOSPC``) names no file; wrapped in this,
    the CLI's one error line says which file could not be written.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def write_text(dest: str | Path, text: str) -> None:
    """Write ``text`` to ``dest`` atomically (UTF-8)."""
    with atomic_path(dest) as tmp, oserror_names(dest):
        tmp.write_text(text, encoding="utf-8")


def write_json(dest: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``dest`` atomically."""
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def check_disjoint(out: str | Path, inputs: Iterable[str | Path | None], what: str = "output folder") -> None:
    """Refuse an output folder that is, contains or lies inside one of a command's inputs.

    ``--overwrite`` replaces the output folder, so such an output would delete (or pollute)
    the input it was made from: the raw data, a domain, a run, the volumes predicted.
    """
    o = Path(out).resolve()
    for item in inputs:
        if item is None:
            continue
        i = Path(item).resolve()
        how = "is" if o == i else "contains" if o in i.parents else "lies inside" if i in o.parents else None
        if how:
            raise SegshiftError(
                f"{out}: the {what} {how} the input {item}; write it somewhere else (--overwrite would replace the input with it)"
            )


@contextlib.contextmanager
def atomic_dir(dest: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary sibling; rename it onto ``dest`` on success.

    The old ``dest`` (with ``overwrite``) is moved aside, and deleted only once the new one is
    in place.

    Args:
        dest: the final folder.
        overwrite: replace an existing ``dest``. Without it an existing non-empty ``dest``
            is an error raised before anything is written. (Commands check ``dest`` against
            their inputs with :func:`check_disjoint` before they read anything.)
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise SegshiftError(f"{dest}: exists and is not a folder")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise SegshiftError(f"{dest}: folder exists and is not empty (use --overwrite to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries that :func:`atomic_path` and :func:`atomic_dir` leave in ``folder``
    when their process is killed (``.NAME.*.tmp*`` files and folders, ``.NAME.old-PID`` folders);
    returns what was deleted. Only for a folder no other process is writing into.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [
        p
        for p in folder.iterdir()
        if p.name.startswith(".") and (p.name.endswith(".tmp") or ".tmp." in p.name or ".old-" in p.name) and not p.is_symlink()
    ]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale
