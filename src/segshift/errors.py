"""Errors that speak to the user.

Every error caused by the user's input (a file, a folder, an argument) is a
:class:`SegshiftError`; the CLI prints its message and exits with status 2. Anything else
is a bug and propagates with a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SegshiftError(Exception):
    """A problem with the user's input, described so that the user can fix it."""


class InputFileError(SegshiftError):
    """A specific file (or folder) is unreadable, malformed or inconsistent.

    Args:
        path: the offending file or folder.
        problem: what is wrong with it, and ideally what to do.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
