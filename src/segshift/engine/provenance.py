"""Provenance of a run: package versions and the git revision, recorded in ``run.json``."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any


def git_revision() -> str | None:
    """The commit segshift runs from (``git rev-parse HEAD`` beside this file), or None outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Versions of segshift, torch, numpy, python and (if installed) MONAI."""
    import numpy as np
    import torch

    import segshift

    v = {"segshift": segshift.__version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        import monai

        v["monai"] = monai.__version__
    except ImportError:
        pass
    return v


def provenance(world_size: int) -> dict[str, Any]:
    """``run.json``'s provenance fields: ``versions``, ``git_revision`` and the DDP ``world_size``."""
    return {"versions": versions(), "git_revision": git_revision(), "world_size": world_size}
