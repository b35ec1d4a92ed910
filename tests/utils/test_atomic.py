"""Atomic writes (segshift.utils.atomic): what the final rename replaces and what it refuses, the temporaries'
modes under the umask, hidden names for long destinations, link loops."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from segshift.errors import SegshiftError
from segshift.utils.atomic import atomic_dir, atomic_path, check_disjoint, hidden_sibling, write_text


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_folder_that_appears_during_the_block_is_kept(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(SegshiftError, match="another folder was written there while this command ran"), atomic_dir(dest) as tmp:
        (tmp / "mine.txt").write_text("new")
        dest.mkdir()
        (dest / "precious.txt").write_text("x")
    assert _entries(dest) == ["precious.txt"] and _entries(tmp_path) == ["out"]


def test_overwrite_replaces_only_the_folder_that_was_there_before(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with atomic_dir(dest, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _entries(dest) == ["new.txt"] and _entries(tmp_path) == ["out"]

    appeared = "another folder was written there while this command ran"
    with pytest.raises(SegshiftError, match=appeared), atomic_dir(dest, overwrite=True) as tmp:
        (tmp / "mine.txt").write_text("mine")
        dest.rename(tmp_path / "moved")  # another command replaces dest while this one runs
        dest.mkdir()
        (dest / "theirs.txt").write_text("theirs")
    assert _entries(dest) == ["theirs.txt"] and _entries(tmp_path) == ["moved", "out"]


def test_an_empty_folder_at_dest_is_no_obstacle(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("a")
    assert _entries(dest) == ["a.txt"] and _entries(tmp_path) == ["out"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "f.txt", "x")
        with atomic_path(tmp_path / "g.nii.gz", suffix=".nii.gz") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "d") as tmp:
            write_text(tmp / "inner.json", "{}")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")}
    files, folders = 0o666 & ~umask, 0o777 & ~umask
    assert modes == {"f.txt": files, "g.nii.gz": files, "d": folders, "inner.json": files}


def test_hidden_names_stay_short_and_distinct():
    long_a, long_b = "a" * 250, "a" * 249 + "b"
    a, b = hidden_sibling(Path(long_a), "staging"), hidden_sibling(Path(long_b), "staging")
    assert a != b and len(a.name) < 64 and len(b.name) < 64
    assert hidden_sibling(Path("x") / "run", "staging") == Path("x") / ".run.staging"  # short names kept readable


def test_a_250_character_destination_is_written(tmp_path):
    name = "n" * 250
    write_text(tmp_path / name, "x")
    with atomic_dir(tmp_path / f"{name[:-1]}d") as tmp:
        (tmp / "a").write_text("a")
    with atomic_dir(tmp_path / f"{name[:-1]}d", overwrite=True) as tmp:
        (tmp / "b").write_text("b")
    assert _entries(tmp_path) == sorted([name, f"{name[:-1]}d"]) and _entries(tmp_path / f"{name[:-1]}d") == ["b"]


def test_a_link_loop_is_one_error_naming_it(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    message = re.escape(f"{loop}: is a loop of symbolic links")
    with pytest.raises(SegshiftError, match=message):
        check_disjoint(tmp_path / "out", [loop])
    with pytest.raises(SegshiftError, match=message):
        write_text(loop, "x")
    with pytest.raises(SegshiftError, match=re.escape(f"{loop / 'd'}: is a loop")), atomic_dir(loop / "d"):
        pass
    assert _entries(tmp_path) == ["loop"]
