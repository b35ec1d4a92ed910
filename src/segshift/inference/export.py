"""``segshift export RUN --format onnx|torchscript OUT``: a trained model for runtimes without segshift's training code.

The export is one graph from preprocessed slices to logits, ``image (B, 1, H, W) float32 ->
logits (B, C, H, W) float32``: the method's own prediction path (:meth:`Method.predict_logits`)
traced once. For a translation method that can translate (cyclegan, unetgan, attent with
``direction: target_to_source``) the graph is the translator followed by the segmenter, and
under ``train.norm_stats: domain`` the segmenter carries the target domain's batch-norm
statistics: the model is then for images of the run's target domain, as ``segshift predict``
uses it on them (``target_domain=False`` exports the plain segmenter, for any other domain).
The manifest says which (``translates``, ``target_norm``).

The graph is traced in float32 whatever ``train.precision`` says: bf16 autocast is a training
speed choice and is never baked into an export. After writing, the exported file is run
once on random slices (ONNX Runtime for ONNX, ``torch.jit.load`` for TorchScript) and compared
with the PyTorch model; the largest difference is recorded in the manifest, and an export that
differs by more than :data:`PARITY_TOL` is refused.

Output folder::

    OUT/model.onnx | model.pt     the graph
    OUT/preprocess.json           the run's preprocessing, unchanged
    OUT/manifest.json             labels, input size, spacing, method, translates, ...

:mod:`segshift.inference.exported` predicts NIfTI volumes from such a folder without
segshift's training code.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segshift.errors import SegshiftError
from segshift.inference.exported import MANIFEST_KIND, MANIFEST_VERSION, MODEL_FILES
from segshift.utils.atomic import atomic_dir, check_disjoint, write_json

FORMATS = ("onnx", "torchscript")
OPSET = 18
"""The ONNX opset of exports: the one torch's ``torch.export``-based exporter writes natively."""
PARITY_TOL = 1e-4
"""Largest allowed difference between the exported graph's logits and PyTorch's on the check input."""


@dataclasses.dataclass
class ExportReport:
    """What :func:`export_model` wrote."""

    folder: Path
    manifest: dict[str, Any]
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Lines for stderr (the predictor's: a run that has not finished training)."""

    def lines(self) -> list[str]:
        m = self.manifest
        what = "translator + segmenter" if m["translates"] else "segmenter"
        norm = ", target-domain batch-norm statistics" if m["target_norm"] else ""
        written = (
            f"wrote {self.folder / m['model_file']} ({m['format']}, {what}{norm}; {m['method']}, fp32), preprocess.json and manifest.json"
        )
        shapes = (
            f"input {m['input']['name']} {m['input']['shape']} at {m['spacing_mm']} mm in-plane; output {m['output']['name']} "
            f"{m['output']['shape']}, labels {m['labels']}; parity check: max |diff| {m['parity']['max_abs_diff']:.2e} "
            f"({m['parity']['runtime']})"
        )
        return [written, shapes]


class _Graph(nn.Module):
    """The prediction path of a method (a private copy), as one module: ``predict_logits`` without ``no_grad`` wrappers
    mattering (the trace sees the operations either way).
    """

    def __init__(self, method: Any, used: list[str]) -> None:
        super().__init__()
        self.nets = nn.ModuleDict({k: method.nets[k] for k in used})  # the parameters the trace records
        self._method = method

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self._method.segmenter_logits(self._method.prediction_input(image))


def _fp32_copy(method: Any, target_norm: bool) -> Any:
    """A CPU, float32, eval-mode copy of a loaded method; the target batch-norm statistics swapped in if asked."""
    from segshift.methods.base import TARGET_NORM
    from segshift.utils.execution import ExecutionPolicy

    m = copy.deepcopy(method)
    if target_norm:
        m.nets[m.segmenter_net + TARGET_NORM].swap(m.nets[m.segmenter_net])  # for good: this copy is the target-domain model
    for name in [n for n in m.nets if n.endswith(TARGET_NORM)]:
        del m.nets[name]
    m.configure(ExecutionPolicy("fp32"))  # never bake bf16 autocast (or a memory format) into an export
    m.device = torch.device("cpu")
    m.nets.to("cpu")
    m.train(False)
    for p in m.nets.parameters():
        p.requires_grad_(False)
    return m


def _used_nets(method: Any, x: torch.Tensor) -> list[str]:
    """The networks one prediction pass calls (the translator only where it translates)."""
    called: list[str] = []
    hooks = [net.register_forward_hook(lambda *_a, _n=name: called.append(_n)) for name, net in method.nets.items()]
    try:
        with torch.no_grad():
            method.segmenter_logits(method.prediction_input(x))
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(called))


def export_model(
    run: str | Path, out: str | Path, fmt: str, checkpoint: str = "best", target_domain: bool = True, overwrite: bool = False
) -> ExportReport:
    """Export the run's model as ONNX or TorchScript with its preprocessing and a manifest (see the module docstring)."""
    from segshift.inference.predictor import Predictor

    run, out = Path(run), Path(out)
    if fmt not in FORMATS:
        raise SegshiftError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    check_disjoint(out, [run], "export folder")
    if fmt == "onnx":
        for module in ("onnx", "onnxscript"):
            _require(module, "ONNX export")
    pred = Predictor(run, checkpoint=checkpoint, device="cpu", target_domain=target_domain)
    pre = pred.pre.config
    if pre.crop_size is not None:
        h, w = pre.crop_size
    else:
        h = w = 128  # a check size only: height and width stay free in the graph
    method = _fp32_copy(pred.method, pred.target_norm)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, h, w, generator=g)
    graph = _Graph(method, _used_nets(method, x)).eval()
    with torch.no_grad():
        reference = graph(x).numpy()
    n_classes = len(pred.labels)
    if reference.shape != (2, n_classes, h, w):
        raise SegshiftError(f"{run}: the model maps {tuple(x.shape)} to {reference.shape}, not (B, {n_classes}, {h}, {w})")
    model_file = MODEL_FILES[fmt]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if fmt == "onnx":
            _to_onnx(graph, x, tmp / model_file, free_hw=pre.crop_size is None)
        else:
            _to_torchscript(graph, x, tmp / model_file)
        diff, runtime = _parity(tmp / model_file, fmt, x, reference)
        if not diff <= PARITY_TOL:
            raise SegshiftError(
                f"{run}: the exported {fmt} graph's logits differ from PyTorch's by {diff:.3g} "
                f"(more than {PARITY_TOL:g}); nothing was written"
            )
        pred.pre.save(tmp / "preprocess.json")
        manifest = {
            "kind": MANIFEST_KIND,
            "version": MANIFEST_VERSION,
            "format": fmt,
            "model_file": model_file,
            "sha256": hashlib.sha256((tmp / model_file).read_bytes()).hexdigest(),
            "preprocess": "preprocess.json",
            "method": pred.method.name,
            "oracle": pred.oracle,
            "translates": bool(pred.method.translate_at_predict),
            "target_norm": bool(pred.target_norm),
            "target_domain": bool(target_domain),
            "target": pred.run_info.get("target"),
            "labels": dict(pred.labels),
            "input": {
                "name": "image",
                "shape": ["batch", 1, h if pre.crop_size else "height", w if pre.crop_size else "width"],
                "dtype": "float32",
                "layout": "preprocessed slices (see preprocess.json), slice axis first",
            },
            "output": {
                "name": "logits",
                "shape": ["batch", n_classes, h if pre.crop_size else "height", w if pre.crop_size else "width"],
                "dtype": "float32",
            },
            "spacing_mm": pre.target_spacing,
            "crop_size": list(pre.crop_size) if pre.crop_size else None,
            "crop_center": pre.crop_center,
            "precision": "fp32",
            "opset": OPSET if fmt == "onnx" else None,
            "parity": {"max_abs_diff": diff, "runtime": runtime, "tolerance": PARITY_TOL},
            "run": str(run.resolve()),
            "checkpoint": checkpoint,
            "step": pred.state.get("step"),
            "steps_done": pred.progress.step,
            "steps_total": pred.progress.steps_total,
            "finished": pred.progress.finished,
            "versions": {"torch": torch.__version__, **_versions()},
        }
        write_json(tmp / "manifest.json", manifest)
    return ExportReport(folder=out, manifest=manifest, warnings=list(pred.warnings))


def _require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise SegshiftError(f"{what} needs the {module} package: pip install 'segshift[export]' (onnx, onnxscript, onnxruntime)")


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """The ``name`` logger at ERROR level for a block (torch.onnx warns about every torchvision operator it skips)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _to_onnx(graph: nn.Module, x: torch.Tensor, path: Path, free_hw: bool) -> None:
    """``graph`` as one ONNX file, through ``torch.export`` (torch's ONNX exporter with ``dynamo=True``).

    The batch axis is symbolic (``batch``), and so are height and width when ``free_hw``; the
    weights are stored inside the file (no external data), so the file alone is the model.
    """
    from torch.export import Dim

    axes: dict[int, Any] = {0: Dim("batch")}
    if free_hw:  # unnamed: the graph's own divisibility rules (poolings) become guards, not errors
        axes.update({2: Dim.DYNAMIC, 3: Dim.DYNAMIC})
    with warnings.catch_warnings(), _quiet_logger("torch.onnx"), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.export notes on the traced Python code
        program = torch.onnx.export(
            graph,
            (x,),
            dynamo=True,
            verbose=False,  # no progress lines on stdout
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=(axes,),
            opset_version=OPSET,
            optimize=True,
        )
    if program is None:  # pragma: no cover - only the TorchScript exporter returns nothing
        raise SegshiftError("torch.onnx.export returned no ONNX program")
    program.save(str(path), external_data=False)


def _to_torchscript(graph: nn.Module, x: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on shape comparisons (fixed input size)
        traced = torch.jit.trace(graph, (x,), check_trace=False)
    torch.jit.save(traced, str(path))


def _parity(path: Path, fmt: str, x: torch.Tensor, reference: np.ndarray) -> tuple[float, str]:
    """The largest difference between the exported file's logits and ``reference`` (also at another batch size)."""
    from segshift.inference.exported import load_runtime

    runner, runtime = load_runtime(path, fmt)
    diff = float(np.abs(runner(x.numpy()) - reference).max())
    diff = max(diff, float(np.abs(runner(x.numpy()[:1]) - reference[:1]).max()))  # the batch axis is free
    return diff, runtime


def _versions() -> dict[str, str]:
    out = {}
    for name in ("onnx", "onnxscript", "onnxruntime"):
        with contextlib.suppress(ImportError):
            out[name] = __import__(name).__version__
    return out
