"""The deterministic preprocessing pipeline, saved with every model.

Steps, in order, on a 3D volume whose last axis is the slice axis:

1. in-plane resampling to ``target_spacing`` mm (linear for images; for labels, linear on
   per-label indicator maps then argmax);
2. percentile clipping (per volume);
3. optional histogram matching to a fitted reference (:mod:`segshift.transforms.intensity`);
4. normalisation (z-score per volume by default);
5. crop/pad of every slice to ``crop_size``: around the image centre (``crop_center=
   "image"``, the default: the same for labelled and unlabelled cases, in training and at
   prediction, so the crop position tells no domain apart), around a localiser's answer
   when one is passed, or (``crop_center="label"``) around the label's foreground
   centroid when a label is given. The same centre is used for every slice of a volume.

:meth:`Preprocessor.apply` returns slices ``(Z, H, W)`` plus a :class:`GeometryRecord`;
:meth:`Preprocessor.invert` maps network outputs (labels or per-class probabilities) back
onto the input's exact voxel grid, so masks are written with the input's shape and affine.

The whole pipeline (configuration and fitted histogram reference) is a JSON document
(:meth:`to_dict`/:meth:`save`); loading it never executes code.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segshift.errors import InputFileError, SegshiftError
from segshift.transforms import intensity, spatial
from segshift.transforms.volume import Volume
from segshift.utils.atomic import write_json
from segshift.utils.jsonfile import read_json

KIND = "segshift-preprocess"
VERSION = 1
Localiser = Callable[[np.ndarray], tuple[float, float]]
"""Maps resampled, normalised slices ``(Z, H, W)`` to a heart centre ``(i, j)`` in pixels."""


@dataclasses.dataclass
class PreprocessConfig:
    """Preprocessing choices (all serialisable).

    Attributes:
        target_spacing: in-plane pixel size in mm after resampling; ``None`` keeps native.
        crop_size: ``(H, W)`` of every output slice; ``None`` keeps the resampled size.
        crop_center: ``"image"`` (the image centre, or the localiser when one is passed) or
            ``"label"`` (label centroid when a label is given, else as ``"image"``:
            labelled and unlabelled cases are then cropped differently).
        clip_percentiles: per-volume clipping percentiles; ``None`` disables clipping.
        normalise: ``"zscore"``, ``"minmax"`` or ``"none"``.
        histmatch: apply histogram matching (needs :meth:`Preprocessor.fit_histogram_reference`).
        histmatch_levels: number of quantile levels of the reference.
    """

    target_spacing: float | None = 1.25
    crop_size: tuple[int, int] | None = (192, 192)
    crop_center: str = "image"
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)
    normalise: str = "zscore"
    histmatch: bool = False
    histmatch_levels: int = intensity.DEFAULT_LEVELS

    def __post_init__(self) -> None:
        if self.target_spacing is not None and not (float(self.target_spacing) > 0):
            raise SegshiftError(f"preprocess: target_spacing must be > 0, got {self.target_spacing}")
        if self.crop_size is not None:
            self.crop_size = tuple(int(v) for v in self.crop_size)  # type: ignore[assignment]
            if len(self.crop_size) != 2 or min(self.crop_size) < 1:
                raise SegshiftError(f"preprocess: crop_size must be two positive integers, got {self.crop_size}")
        if self.crop_center not in ("label", "image"):
            raise SegshiftError(f"preprocess: crop_center must be 'label' or 'image', got {self.crop_center!r}")
        if self.clip_percentiles is not None:
            lo, hi = (float(v) for v in self.clip_percentiles)
            if not 0 <= lo < hi <= 100:
                raise SegshiftError(f"preprocess: clip_percentiles must satisfy 0 <= low < high <= 100, got {self.clip_percentiles}")
            self.clip_percentiles = (lo, hi)
        if self.normalise not in ("zscore", "minmax", "none"):
            raise SegshiftError(f"preprocess: normalise must be zscore, minmax or none, got {self.normalise!r}")


@dataclasses.dataclass
class GeometryRecord:
    """Where the slices came from: enough to map outputs back to the input grid exactly."""

    shape: tuple[int, int, int]
    affine: list[list[float]]
    resampled_hw: tuple[int, int]
    corner: tuple[int, int]
    center: tuple[float, float]
    center_source: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Prepared:
    """Output of :meth:`Preprocessor.apply`: slices first, ``(Z, H, W)``."""

    image: np.ndarray
    label: np.ndarray | None
    geometry: GeometryRecord


class Preprocessor:
    """Serialisable preprocessing pipeline.

    Example:
        >>> pre = Preprocessor(PreprocessConfig(target_spacing=1.25, crop_size=(160, 160)))
        >>> # pre.fit_histogram_reference(volumes_of_reference_domain)   # optional HM
        >>> # prepared = pre.apply(image_volume, label_volume)
        >>> # mask = pre.invert(pred_slices, prepared.geometry)           # input's grid
    """

    def __init__(self, config: PreprocessConfig | None = None, reference: Iterable[float] | None = None) -> None:
        self.config = config or PreprocessConfig()
        self.reference = None if reference is None else np.asarray(list(reference), dtype=np.float64)

    # -- fitting --------------------------------------------------------------------
    def fit_histogram_reference(self, volumes: Iterable[Volume | np.ndarray]) -> Preprocessor:
        """Fit the histogram-matching reference on the volumes of a reference domain."""

        def clipped() -> Iterable[np.ndarray]:
            for v in volumes:
                yield self._clip(v.array if isinstance(v, Volume) else np.asarray(v))

        self.reference = intensity.fit_reference(clipped(), self.config.histmatch_levels)
        return self

    # -- applying -------------------------------------------------------------------
    def _clip(self, x: np.ndarray) -> np.ndarray:
        if self.config.clip_percentiles is None:
            return x.astype(np.float32, copy=False)
        return intensity.clip_percentiles(x, *self.config.clip_percentiles)

    def _intensity(self, x: np.ndarray) -> np.ndarray:
        x = self._clip(x)
        if self.config.histmatch:
            if self.reference is None:
                raise SegshiftError("preprocess: histmatch is on but no reference was fitted (fit_histogram_reference)")
            x = intensity.match_histogram(x, self.reference)
        if self.config.normalise == "zscore":
            return intensity.zscore(x)
        if self.config.normalise == "minmax":
            return intensity.minmax(x)
        return x.astype(np.float32, copy=False)

    def resampled_hw(self, image: Volume) -> tuple[int, int]:
        h, w = image.array.shape[:2]
        if self.config.target_spacing is None:
            return h, w
        si, sj, _ = image.spacing
        t = float(self.config.target_spacing)
        return spatial.resampled_size(h, si, t), spatial.resampled_size(w, sj, t)

    def apply(self, image: Volume, label: Volume | None = None, localiser: Localiser | None = None) -> Prepared:
        """Preprocess one volume (and its label) into slices ``(Z, H, W)``."""
        arr = image.array
        if arr.ndim != 3:
            raise InputFileError(image.path or "<volume>", f"preprocessing needs a 3D volume, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise InputFileError(image.path or "<volume>", "contains NaN/Inf intensities")
        if label is not None and label.array.shape != arr.shape:
            raise InputFileError(label.path or "<label>", f"label shape {label.array.shape} != image shape {arr.shape}")
        out_hw = self.resampled_hw(image)
        slices = np.transpose(arr, (2, 0, 1))
        img = spatial.resize_inplane(slices.astype(np.float32), out_hw, order=1)
        img = self._intensity(img)
        lab = None
        if label is not None:
            lab = spatial.resize_labels(np.transpose(label.array, (2, 0, 1)), out_hw)

        center, source = (out_hw[0] / 2.0, out_hw[1] / 2.0), "image"
        if self.config.crop_center == "label" and lab is not None and lab.any():
            _, ii, jj = np.nonzero(lab)
            center, source = (float(ii.mean()) + 0.5, float(jj.mean()) + 0.5), "label"
        elif localiser is not None:
            center, source = tuple(float(c) for c in localiser(img)), "localiser"  # type: ignore[assignment]
        size = self.config.crop_size or out_hw
        corner = spatial.crop_box(out_hw, size, center)
        fill = float(img.min()) if img.size else 0.0
        img = spatial.crop_or_pad(img, corner, size, fill)
        if lab is not None:
            lab = spatial.crop_or_pad(lab, corner, size, 0)
        geom = GeometryRecord(
            shape=tuple(int(s) for s in arr.shape),  # type: ignore[arg-type]
            affine=np.asarray(image.affine, dtype=float).tolist(),
            resampled_hw=tuple(out_hw),  # type: ignore[arg-type]
            corner=tuple(int(c) for c in corner),  # type: ignore[arg-type]
            center=tuple(float(c) for c in center),  # type: ignore[arg-type]
            center_source=source,
        )
        return Prepared(image=np.ascontiguousarray(img, dtype=np.float32), label=lab, geometry=geom)

    def predict(
        self, image: Volume, probabilities: Callable[[np.ndarray], np.ndarray], relocate_px: float = 8.0
    ) -> tuple[np.ndarray, Prepared]:
        """Preprocess ``image`` and return the per-class probabilities ``(C, Z, H, W)`` that
        ``probabilities`` gives for its slices ``(Z, H, W)``, with the :class:`Prepared` volume.

        Runs trained on label-centred crops (``crop_center: label``) get a second pass
        centred on the predicted heart when it lies more than ``relocate_px`` pixels from the
        crop's centre. (Shared by the predictor and the exported-model path.)
        """
        prep = self.apply(image)
        probs = probabilities(prep.image)
        fg = probs[1:].sum(0) > 0.5
        if self.config.crop_center == "label" and fg.any():
            _, ii, jj = np.nonzero(fg)
            ci, cj = ii.mean() + 0.5, jj.mean() + 0.5
            h, w = prep.image.shape[1:]
            if np.hypot(ci - h / 2, cj - w / 2) > relocate_px:
                corner = prep.geometry.corner
                centre = (corner[0] + ci, corner[1] + cj)
                prep = self.apply(image, localiser=lambda _s: centre)
                probs = probabilities(prep.image)
        return probs, prep

    def invert_argmax(self, probs: np.ndarray, geometry: GeometryRecord) -> np.ndarray:
        """The label mask ``(i, j, k)`` (uint8) of per-class probabilities ``(C, Z, H, W)`` on the
        input grid: :meth:`invert`, then the argmax over classes (taken before the axes are
        reordered, where it is contiguous and fast).
        """
        native = self._invert_probs(probs, geometry)  # (C, Z, h, w)
        return np.ascontiguousarray(np.transpose(native.argmax(0).astype(np.uint8), (1, 2, 0)))

    def _invert_probs(self, output: np.ndarray, geometry: GeometryRecord) -> np.ndarray:
        h, w, z = geometry.shape
        if output.ndim != 4 or output.shape[1] != z:
            raise SegshiftError(f"invert: probabilities must be (C, {z}, H, W), got {output.shape}")
        canvas = spatial.uncrop(output.astype(np.float32), geometry.corner, geometry.resampled_hw, 0.0)
        canvas[0][canvas.sum(0) == 0] = 1.0
        return spatial.resize_inplane(canvas, (h, w), order=1)

    def invert(self, output: np.ndarray, geometry: GeometryRecord) -> np.ndarray:
        """Map network output back to the input voxel grid ``(i, j, k)``.

        Args:
            output: integer labels ``(Z, H, W)`` (indicator maps, linear, argmax) or float per-class
                probabilities ``(C, Z, H, W)`` (linear; returned as ``(C, i, j, k)``, outside
                the crop filled with probability 1 for class 0).
            geometry: the record returned by :meth:`apply` for that volume.
        """
        h, w, z = geometry.shape
        is_prob = np.issubdtype(output.dtype, np.floating)
        if is_prob:
            return np.transpose(self._invert_probs(output, geometry), (0, 2, 3, 1))
        if output.ndim != 3 or output.shape[0] != z:
            raise SegshiftError(f"invert: labels must be ({z}, H, W), got {output.shape}")
        canvas = spatial.uncrop(output, geometry.corner, geometry.resampled_hw, 0)
        native = spatial.resize_labels(canvas, (h, w))
        return np.transpose(native, (1, 2, 0))

    # -- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.config)
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
        return {
            "kind": KIND,
            "version": VERSION,
            "config": cfg,
            "histmatch_reference": None if self.reference is None else self.reference.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "preprocess") -> Preprocessor:
        if not isinstance(d, Mapping) or d.get("kind") != KIND:
            raise SegshiftError(f"{where}: not a segshift preprocessing document")
        if int(d.get("version", 0)) > VERSION:
            raise SegshiftError(f"{where}: version {d.get('version')} is newer than this segshift understands")
        names = {f.name for f in dataclasses.fields(PreprocessConfig)}
        raw = d.get("config") or {}
        unknown = set(raw) - names
        if unknown:
            raise SegshiftError(f"{where}: unknown preprocessing fields {sorted(unknown)}")
        try:
            config = PreprocessConfig(**raw)
        except TypeError as exc:
            raise SegshiftError(f"{where}: malformed preprocessing config ({exc})") from exc
        return cls(config, d.get("histmatch_reference"))

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Preprocessor:
        return cls.from_dict(read_json(path, "does not exist"), where=str(path))

    def fingerprint(self) -> str:
        """A stable hash of the pipeline (used as a cache key)."""
        import hashlib

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
