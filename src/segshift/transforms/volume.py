"""The volume type every layer shares: a NumPy array with its voxel-to-world affine.

A :class:`Volume` is an array in voxel order ``(i, j, k)`` plus the 4x4 voxel-to-world
affine in NIfTI's RAS+ millimetre convention; the third axis ``k`` is the slice
(through-plane) axis of a short-axis stack. Spacing is always derived from the affine
(column norms), never stored separately, so the two cannot disagree. Readers and writers
are in :mod:`segshift.data.volume`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class Volume:
    """An array with its voxel-to-world affine.

    Attributes:
        array: voxel data, 3D ``(i, j, k)`` (or 4D ``(i, j, k, t)`` straight from a reader).
        affine: 4x4 voxel-to-world matrix, RAS+ millimetres.
        path: where it was read from, for error messages.
        notes: geometry fixes applied while reading (shown in import reports).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three voxel axes (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


__all__ = ["Volume"]
