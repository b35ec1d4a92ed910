"""run.json's provenance fields."""

from __future__ import annotations

import re
import subprocess

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
