"""Predict with an exported model (``segshift export RUN --format onnx|torchscript OUT``), without training code.

This module imports neither :mod:`segshift.methods` nor :mod:`segshift.engine`: it needs the
export folder, NumPy/SciPy/nibabel, the preprocessing of :mod:`segshift.transforms` (the very
functions ``segshift predict`` uses to prepare slices and map probabilities back onto the
input's voxel grid), and one runtime: ONNX Runtime for ``model.onnx`` (no PyTorch at all), or
PyTorch for a TorchScript ``model.pt``.

What it does per volume is what ``segshift predict`` does without test-time adaptation: the
saved preprocessing, the graph on batches of slices, softmax, the probabilities mapped back
(inverse crop and in-plane resampling) and arg-maxed, so the mask has the input's shape and
affine. For runs trained on label-centred crops (``crop_center: label``) the same second
pass around the predicted heart is made.

Example:
    >>> from segshift.inference.exported import ExportedModel     # doctest: +SKIP
    >>> model = ExportedModel("exports/lge-cyclegan")              # doctest: +SKIP
    >>> mask = model.predict_file("patient01.nii.gz", "patient01_mask.nii.gz")   # doctest: +SKIP

or from a shell: ``python -m segshift.inference.exported EXPORT_DIR INPUT.nii.gz MASK.nii.gz [--overwrite]``
(the mask may not be the input, and an existing mask file is replaced only with ``--overwrite``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segshift.data.volume import Volume, check_volume, read_volume, write_nifti
from segshift.errors import InputFileError, SegshiftError
from segshift.transforms import Preprocessor

MANIFEST_KIND = "segshift-export"
MANIFEST_VERSION = 1
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}

Runner = Callable[[np.ndarray], np.ndarray]
"""Maps preprocessed slices ``(B, 1, H, W)`` float32 to logits ``(B, C, H, W)`` float32."""


def load_runtime(path: str | Path, fmt: str) -> tuple[Runner, str]:
    """A function running the exported graph, and the runtime's name (``onnxruntime x.y`` or ``torch x.y``)."""
    path = Path(path)
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise SegshiftError("running an ONNX export needs onnxruntime: pip install 'segshift[export]'") from exc
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise InputFileError(path, f"is not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
        name = session.get_inputs()[0].name

        def run_onnx(x: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0], dtype=np.float32)

        return run_onnx, f"onnxruntime {ort.__version__}"
    if fmt == "torchscript":
        import torch

        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError, OSError) as exc:
            raise InputFileError(path, f"is not a loadable TorchScript model ({exc})") from exc

        def run_torchscript(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()

        return run_torchscript, f"torch {torch.__version__}"
    raise SegshiftError(f"unknown export format {fmt!r} (onnx, torchscript)")


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """A numerically stable softmax in float32."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z, dtype=np.float32)
    return e / e.sum(axis=axis, keepdims=True)


def check_dest(source: str | Path, dest: str | Path, overwrite: bool = False) -> None:
    """Refuse a mask path that is the input image itself, a folder, or (without ``overwrite``) an existing file."""
    source, dest = Path(source), Path(dest)
    same = dest.resolve() == source.resolve()
    if not same and dest.exists() and source.exists():
        try:
            same = dest.samefile(source)  # a hard link
        except OSError:
            same = False
    if same:
        raise InputFileError(dest, f"is the input image {source}: writing the mask there would destroy it; choose another output path")
    if dest.is_dir():
        raise InputFileError(dest, "is a folder: give the mask's file name (e.g. mask.nii.gz)")
    if (dest.exists() or dest.is_symlink()) and not overwrite:
        raise InputFileError(dest, "exists: replaced only with --overwrite (overwrite=True from Python)")


class ExportedModel:
    """An export folder, ready to segment volumes.

    Args:
        folder: written by ``segshift export RUN --format ... OUT``.
        batch_size: slices per run of the graph.

    Attributes:
        manifest: ``manifest.json`` (labels, input size, spacing, method, ``translates``, ...).
        labels: label name -> id of the mask.
        pre: the run's preprocessing.
    """

    def __init__(self, folder: str | Path, batch_size: int = 32) -> None:
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputFileError(path, "missing: not a folder written by segshift export") from exc
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputFileError(path, f"unreadable ({exc})") from exc
        if not isinstance(self.manifest, dict) or self.manifest.get("kind") != MANIFEST_KIND:
            raise InputFileError(path, f"is not a segshift export manifest (kind {MANIFEST_KIND!r})")
        if int(self.manifest.get("version", 0)) > MANIFEST_VERSION:
            raise InputFileError(path, f"version {self.manifest.get('version')} is newer than this segshift reads ({MANIFEST_VERSION})")
        self.labels: dict[str, int] = {str(k): int(v) for k, v in self.manifest["labels"].items()}
        self.pre = Preprocessor.load(self.folder / self.manifest.get("preprocess", "preprocess.json"))
        self.run, self.runtime = load_runtime(self.folder / self.manifest["model_file"], self.manifest["format"])
        self.batch_size = int(batch_size)
        self.relocate_px = 8.0

    def logits(self, slices: np.ndarray) -> np.ndarray:
        """Logits ``(Z, C, H, W)`` of preprocessed slices ``(Z, H, W)``."""
        out = [self.run(slices[i : i + self.batch_size, None]) for i in range(0, len(slices), self.batch_size)]
        return np.concatenate(out)

    def probabilities(self, image: Volume) -> tuple[np.ndarray, Any]:
        """Per-class probabilities ``(C, Z, H, W)`` on the preprocessed grid, and the geometry record to invert them."""
        probs, prep = self.pre.predict(image, lambda slices: softmax(self.logits(slices)).transpose(1, 0, 2, 3), self.relocate_px)
        return probs, prep.geometry

    def predict_volume(self, image: Volume) -> np.ndarray:
        """The label mask (uint8) of a 3D volume, on the volume's own voxel grid."""
        if image.array.ndim != 3:
            raise InputFileError(image.path or "<volume>", f"prediction needs a 3D volume, got shape {image.shape}")
        probs, geometry = self.probabilities(image)
        return self.pre.invert_argmax(probs, geometry)

    def predict_file(self, source: str | Path, dest: str | Path | None = None, overwrite: bool = False) -> np.ndarray:
        """Segment a NIfTI (or any volume segshift reads); write the mask with the input's affine to ``dest`` if given.

        Nothing is overwritten without being asked: ``dest`` may not be ``source`` (by any path
        or link), and an existing ``dest`` is replaced only with ``overwrite=True``. Both are
        checked before anything is read or written (:class:`~segshift.errors.InputFileError`).
        """
        if dest is not None:
            check_dest(source, dest, overwrite)
        vol = read_volume(source)
        check_volume(vol)
        mask = self.predict_volume(vol)
        if dest is not None:
            write_nifti(dest, mask, vol.affine)
        return mask


USAGE = "usage: python -m segshift.inference.exported EXPORT_DIR INPUT.nii.gz MASK.nii.gz [--overwrite]"


def main(argv: list[str] | None = None) -> int:
    """``python -m segshift.inference.exported EXPORT_DIR INPUT MASK [--overwrite]``.

    ``MASK`` may not be ``INPUT``; an existing ``MASK`` is replaced only with ``--overwrite``.
    """
    given = sys.argv[1:] if argv is None else argv
    overwrite = "--overwrite" in given
    args = [a for a in given if a != "--overwrite"]
    if len(args) != 3 or any(a.startswith("--") for a in args):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        check_dest(args[1], args[2], overwrite)  # before loading the model: refuse at once
        model = ExportedModel(args[0])
        mask = model.predict_file(args[1], args[2], overwrite=overwrite)
    except (SegshiftError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = {name: int((mask == k).sum()) for name, k in model.labels.items() if k != 0}
    print(f"wrote {args[2]} ({model.manifest['method']}, {model.runtime}); voxels per label {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
