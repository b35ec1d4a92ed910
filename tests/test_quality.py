"""The quality gate (`make lint`) under `make test`: ruff check, ruff format --check and mypy.

The rules, the line length and the modules mypy checks strictly are configured in
pyproject.toml. Each check runs the tool of this environment (the pinned `dev` extra) from
the repository root and fails with the tool's own report; it is skipped, saying why, only
when the tool is not installed. `make format` applies the fixes that are safe to automate.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO

CHECKS = {
    "ruff check": ("ruff", ["check", "--no-cache", "--output-format", "concise", "."], "make format fixes some; the rest by hand"),
    "ruff format": ("ruff", ["format", "--check", "--no-cache", "--output-format", "concise", "."], "make format rewrites these files"),
    "mypy": ("mypy", ["--no-error-summary"], "type errors in the modules listed in [tool.mypy] of pyproject.toml"),
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
