"""The quality gate (`make lint`) under `make test`: ruff check, ruff format --check and mypy.

The rules, the line length and the modules mypy checks strictly are configured in
pyproject.toml. Each check runs the tool of this environment (the pinned `dev` extra) from
the repository root and fails with the tool's own report; it is skipped, saying why, only
when the tool is not installed. `make format` applies the fixes that are safe to automate.

mypy keeps its incremental cache in the system's temporary folder, so a fresh clone (CI) checks
in seconds instead of re-analysing PyTorch's stubs (about 30 s on 2 CPU cores). The cache cannot
answer stale: mypy re-checks any module whose content hash or options differ from the cached ones.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

MYPY_CACHE = Path(tempfile.gettempdir()) / f"segshift-mypy-cache-{os.getuid()}"
"""mypy's cache, shared by this user's checkouts (per user: another user's cache folder would not be writable)."""

CHECKS = {
    "ruff check": ("ruff", ["check", "--no-cache", "--output-format", "concise", "."], "make format fixes some; the rest by hand"),
    "ruff format": ("ruff", ["format", "--check", "--no-cache", "--output-format", "concise", "."], "make format rewrites these files"),
    "mypy": (
        "mypy",
        ["--no-error-summary", "--cache-dir", str(MYPY_CACHE)],
        "type errors in the modules listed in [tool.mypy] of pyproject.toml",
    ),
}


@pytest.mark.parametrize("check", list(CHECKS))
def test_quality_gate(check):
    tool, args, hint = CHECKS[check]
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed in this environment: pip install -e '.[dev]' (make setup) installs the pinned version")
    res = subprocess.run([sys.executable, "-m", tool, *args], cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=600)
    report = (res.stdout + res.stderr).strip()
    if res.returncode != 0:
        lines = report.splitlines()
        shown = "\n".join(lines[:300]) + (f"\n... and {len(lines) - 300} more lines" if len(lines) > 300 else "")
        pytest.fail(f"`{tool} {' '.join(args)}` failed ({hint}):\n{shown}", pytrace=False)
