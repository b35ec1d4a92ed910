"""run.json's provenance fields."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from segshift.engine import provenance


def test_provenance_fields():
    p = provenance.provenance(world_size=3)
    assert set(p) == {"versions", "git_revision", "world_size"} and p["world_size"] == 3
    assert p["versions"]["torch"] == torch.__version__
    assert {"segshift", "numpy", "python"} <= set(p["versions"])
    assert p["git_revision"] is None or re.fullmatch(r"[0-9a-f]{40}", p["git_revision"])


def test_no_git_means_no_revision(monkeypatch):
    def fail(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", fail)
    assert provenance.git_revision() is None


@pytest.mark.parametrize("installed", [True, False])
def test_monai_version_is_recorded_where_monai_is_installed(monkeypatch, installed):
    monkeypatch.setitem(sys.modules, "monai", types.SimpleNamespace(__version__="9.9") if installed else None)  # None: not importable
    assert provenance.versions().get("monai") == ("9.9" if installed else None)


def test_monai_is_a_test_dependency_only():
    # segshift runs without MONAI: the metric tests compare with it, run.json records it only where installed
    tomllib = pytest.importorskip("tomllib")
    repo = Path(__file__).resolve().parents[2]
    project = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(requirements):
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}

    assert "monai" not in names(project["dependencies"]) and "monai" in names(project["optional-dependencies"]["dev"])
    users = [p for p in (repo / "src").rglob("*.py") if re.search(r"^\s*(import|from) monai\b", p.read_text(encoding="utf-8"), re.M)]
    assert [p.name for p in users] == ["provenance.py"]
