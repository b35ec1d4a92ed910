"""Atomic writes: a reader sees either the old file/folder or the complete new one.

Files are written to a temporary sibling and moved into place with :func:`os.replace`;
folders are built under a temporary sibling and renamed. On any error the temporary is
removed and the destination is untouched. Temporaries are created with the mode the umask
gives (as ``open`` and ``mkdir`` do), so outputs are as readable as any other file the user
writes; their hidden names stay short whatever the length of the destination's name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from segshift.errors import SegshiftError

_KEEP = 48  # a destination name longer than this is cut to 40 characters and a hash in hidden names


def hidden_sibling(dest: str | Path, tag: str) -> Path:
    """``.NAME.TAG`` beside ``dest``, for a temporary or set-aside copy of it.

    A NAME longer than 48 characters is cut to its first 40 and a hash of the whole name,
    so that the hidden name fits the file system's 255 wherever ``dest``'s name does, and
    two destinations never share one.
    """
    dest = Path(dest)
    name = dest.name
    if len(name) > _KEEP:
        name = f"{name[:40]}-{hashlib.sha256(name.encode()).hexdigest()[:7]}"
    return dest.parent / f".{name}.{tag}"


def _new_sibling(dest: Path, kind: str, suffix: str = "", folder: bool = False) -> Path:
    """Create a new, empty hidden file (or folder) ``.NAME.<random>.KIND<suffix>`` beside ``dest``.

    It gets mode 0666 (0777 for a folder) less the umask, where ``mkstemp``/``mkdtemp`` would
    give 0600/0700, so the rename leaves the output with the permissions of any file the user writes.
    """
    for _ in range(100):
        path = _random_sibling(dest, kind, suffix)
        try:
            if folder:
                os.mkdir(path, 0o777)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(dest.parent))


def _random_sibling(dest: Path, kind: str, suffix: str = "") -> Path:
    """``.NAME.<random>.KIND<suffix>`` beside ``dest`` (not created)."""
    return hidden_sibling(dest, f"{secrets.token_hex(4)}.{kind}{suffix}")


def resolved(path: str | Path) -> Path:
    """``path`` made absolute with every symbolic link followed; a link loop is an error naming ``path``."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: Python < 3.13; OSError(ELOOP) after
        if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
            raise
        raise SegshiftError(
            f"{path}: is a loop of symbolic links (a link that leads back to itself); remove it or give another path"
        ) from None


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; move it onto ``dest`` if the block succeeds.

    ``suffix`` is kept on the temporary name so that writers that infer the format from the
    extension (``.nii.gz``, ``.png``) still work.
    """
    dest = Path(dest)
    resolved(dest)  # a link loop is refused before anything is written
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_sibling(dest, "tmp", suffix)
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
    o = resolved(out)
    for item in inputs:
        if item is None:
            continue
        i = resolved(item)
        how = "is" if o == i else "contains" if o in i.parents else "lies inside" if i in o.parents else None
        if how:
            raise SegshiftError(
                f"{out}: the {what} {how} the input {item}; write it somewhere else (--overwrite would replace the input with it)"
            )


def _identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of ``path`` itself (a link is not followed), or None if nothing is there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def atomic_dir(dest: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary sibling; rename it onto ``dest`` on success.

    Only a ``dest`` that was there when the block started is replaced, and only with
    ``overwrite``: it is moved aside, and deleted once the new one is in place. A folder
    that appeared at ``dest`` while the block ran (another command writing there) is never
    replaced: the rename refuses it and the new folder is discarded.

    Args:
        dest: the final folder.
        overwrite: replace an existing ``dest``. Without it an existing non-empty ``dest``
            is an error raised before anything is written. (Commands check ``dest`` against
            their inputs with :func:`check_disjoint` before they read anything.)
    """
    dest = Path(dest)
    resolved(dest)  # a link loop is refused before anything is written
    if dest.exists() and not dest.is_dir():
        raise SegshiftError(f"{dest}: exists and is not a folder")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise SegshiftError(f"{dest}: folder exists and is not empty (use --overwrite to replace it)")
    before = _identity(dest) if overwrite else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling(dest, "tmp", folder=True)
    try:
        yield tmp
        _install(tmp, dest, before)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _install(tmp: Path, dest: Path, replaces: tuple[int, int] | None) -> None:
    """Rename ``tmp`` onto ``dest``, first moving aside the folder ``replaces`` identifies if it is still
    there; any other non-empty folder at ``dest`` is refused (a rename never replaces one).
    """
    appeared = SegshiftError(
        f"{dest}: another folder was written there while this command ran (a second command with the same output?); "
        "it is left as it is and this command's output is discarded: write to another folder, or run again"
    )
    old = None
    if replaces is not None and _identity(dest) is not None:
        old = _random_sibling(dest, "old")
        os.rename(dest, old)
        if _identity(old) != replaces:
            os.rename(old, dest)
            raise appeared
    try:
        os.rename(tmp, dest)  # onto nothing or an empty folder; a non-empty one fails
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        if old is not None:
            raise SegshiftError(f"{appeared} (the folder it was to replace is kept at {old})") from None
        raise appeared from None
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
