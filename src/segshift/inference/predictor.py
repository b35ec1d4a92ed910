"""Volume prediction: preprocess exactly as at training, predict slices, map back, score.

:class:`Predictor` loads a run folder without executing code from it (YAML/JSON configs,
safetensors weights), repeats the saved preprocessing, and returns a mask on the input's
own voxel grid: per-class probabilities are mapped back with the inverse of the in-plane
resampling and crop, then arg-maxed, so the output has the input's shape and affine.

Crop: prediction crops exactly as training did (``data.preprocess.crop_center``). Under
``image`` (the default) every case, labelled or not, is cropped around its image centre, in
training and here, so one pass is all. Runs made under the legacy ``label`` policy trained on
label-centred crops; for them the first pass is centred on the image and, if the predicted
heart's centroid lies more than ``relocate_px`` pixels from the crop centre, the volume is
cropped again around it and predicted once more (the model as its own localiser).
``center_source`` in the QC row says which was used.

Domain-specific parts apply only to images of the domain they were trained on, the run's
target domain: a target-to-source translator (``Method.can_translate``) and the target
batch-norm statistics of ``train.norm_stats: domain``. ``target_domain`` says whether the
inputs are of that domain (:func:`is_run_target` decides it for a domain folder); images of
any other domain (the source, an unseen domain) are segmented untranslated, with the
source statistics. The QC row records ``translated`` and ``target_norm``.

Quality control (per case): ``mean_entropy`` is the mean normalised predictive entropy
(``-sum p log p / log C``, in [0, 1]) over the cropped field of view; ``fg_entropy`` is the
same over pixels within 3 pixels of the predicted foreground, which is what rises when the
model is unsure of the heart's outline. Volumes per structure are in millilitres. With
test-time adaptation or augmentation (``tta``, :mod:`segshift.inference.tta`) these describe
the TTA prediction, and ``*_before_tta`` columns hold the same values of the plain prediction
of the same volume, so the QC shows what TTA changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi

from segshift.data.volume import Volume
from segshift.engine import checkpoint as ckpt
from segshift.engine.build import build_method
from segshift.engine.config import load_yaml
from segshift.engine.distributed import pick_device
from segshift.errors import InputFileError, SegshiftError
from segshift.inference.tta import TTA, TTAConfig
from segshift.methods.base import TARGET_NORM, Method
from segshift.transforms import Preprocessor


@dataclasses.dataclass(frozen=True)
class RunProgress:
    """How far a run's training got: ``step`` of ``steps_total`` (its ``last`` checkpoint), and whether it finished."""

    step: int | None
    steps_total: int
    finished: bool

    @classmethod
    def of(cls, run: str | Path, steps_total: int) -> RunProgress:
        """Read from the run folder: ``summary.json`` (written when training finishes) and ``checkpoints/last/state.json``."""
        run = Path(run)

        def read(path: Path) -> dict[str, Any]:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
            return doc if isinstance(doc, dict) else {}

        step = read(run / "checkpoints" / "last" / "state.json").get("step")
        return cls(int(step) if isinstance(step, int) else None, steps_total, read(run / "summary.json").get("finished") is True)

    def warning(self, run: str | Path, method: str, checkpoint: str, checkpoint_step: int | None) -> str | None:
        """One line for a run that has not finished training (``None`` once it has)."""
        if self.finished:
            return None
        reached = (
            f"stopped at step {self.step} of {self.steps_total}"
            if self.step is not None
            else f"{self.steps_total} steps planned, no last checkpoint"
        )
        return (
            f"{run} has not finished training ({reached}; segshift train --resume -m {method} -o {run} continues it): "
            f"using its {checkpoint} checkpoint, of step {checkpoint_step}"
        )


@dataclasses.dataclass
class Prediction:
    """A mask on the input grid plus its quality-control row."""

    mask: np.ndarray
    qc: dict[str, Any]


class Predictor:
    """A trained run, ready to segment volumes.

    Args:
        run: run folder written by ``segshift train``.
        checkpoint: ``"best"`` (model selection) or ``"last"``.
        device: ``cpu``/``cuda``; default GPU if available.
        batch_size: slices per forward pass.
        relocate_px: re-crop when the predicted heart centre is this far (pixels) from the crop centre.
        target_domain: whether the inputs are of the run's target domain (``True``: a
            translator and target batch-norm statistics apply, where the method has them)
            or of any other domain (``False``). ``translate`` is its former name.
        tta: test-time adaptation or augmentation per volume (:mod:`segshift.inference.tta`);
            the QC row then also holds the plain prediction's entropy and volumes
            (``*_before_tta``).
        precision: ``auto`` | ``fp32`` | ``bf16`` instead of the run's ``train.precision``
            (``None``); ``fp32`` reproduces an fp32 export (:mod:`segshift.inference.export`).

    Attributes:
        progress: how far the run's training got (:class:`RunProgress`).
        warnings: lines a command shows on stderr: a run that has not finished training, a TTA caveat.
    """

    def __init__(
        self,
        run: str | Path,
        checkpoint: str = "best",
        device: str | None = None,
        batch_size: int = 32,
        relocate_px: float = 8.0,
        target_domain: bool | None = None,
        translate: bool | None = None,
        tta: TTAConfig | None = None,
        precision: str | None = None,
    ) -> None:
        self.run = Path(run)
        if not (self.run / "config.yaml").is_file():
            raise InputFileError(self.run, "is not a segshift run folder (no config.yaml)")
        if checkpoint not in ("best", "last"):
            raise SegshiftError(f"checkpoint must be best or last, got {checkpoint!r}")
        self.cfg = load_yaml(self.run / "config.yaml")
        try:
            self.run_info = json.loads((self.run / "run.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputFileError(self.run / "run.json", f"unreadable ({exc})") from exc
        self.labels: dict[str, int] = self.run_info["labels"]
        self.structures = {k: v for k, v in self.labels.items() if v != 0}
        self.pre = Preprocessor.load(self.run / "preprocess.json")
        self.device = pick_device(0, device)
        folder = self.run / "checkpoints" / checkpoint
        self.state: dict[str, Any] = {}

        def load(method: Method) -> None:
            if (
                checkpoint == "best"
                and not (folder / "state.json").is_file()
                and (self.run / "checkpoints" / "last" / "state.json").is_file()
            ):
                raise InputFileError(
                    folder,
                    "missing: the run stopped before its first validation, so no model is selected yet; "
                    "use --checkpoint last for its latest weights, or finish it with segshift train --resume",
                )
            names = method.checkpoint_nets() if checkpoint == "best" else list(method.nets)
            self.state = ckpt.load_weights(folder, {k: method.nets[k] for k in names if _in_checkpoint(folder, k)})
            _check_recorded(
                self.run, self.state, {"config.yaml": self.cfg, "preprocess.json": self.pre.to_dict(), "run.json (labels)": self.labels}
            )

        self.method = build_method(self.cfg, "predict", num_classes=len(self.labels), device=self.device, precision=precision, load=load)
        self.target_domain = bool(target_domain if target_domain is not None else translate if translate is not None else True)
        self.method.translate_at_predict = self.target_domain and self.method.can_translate()
        self.oracle = bool(self.run_info.get("oracle"))
        self.batch_size = batch_size
        self.relocate_px = relocate_px
        self.tta = TTA(self.method, tta or TTAConfig())
        self.progress = RunProgress.of(self.run, self.method.total_steps())
        unfinished = self.progress.warning(self.run, self.method.name, checkpoint, self.state.get("step"))
        self.warnings = [*([unfinished] if unfinished else []), *self.tta.warnings(self.cfg)]

    @property
    def target_norm(self) -> bool:
        """Whether inputs are normalised with the target domain's batch-norm statistics (``norm_stats: domain``)."""
        return self.target_domain and self.method.uses_target_norm()

    def _probs(self, slices: np.ndarray, tta: bool = True) -> np.ndarray:
        if tta and self.tta.cfg.mode != "none":  # one volume, one batch (TENT adapts on the volume's statistics)
            x = torch.from_numpy(np.ascontiguousarray(slices))[:, None]
            with self.method.target_norm() if self.target_norm else contextlib.nullcontext():
                probs = self.tta.probs(x, self.method.predict_logits)
            return probs.float().cpu().numpy().transpose(1, 0, 2, 3)
        out = []
        for i in range(0, len(slices), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(slices[i : i + self.batch_size]))[:, None]
            with self.method.target_norm() if self.target_norm else contextlib.nullcontext():
                logits = self.method.predict_logits(x)
            out.append(torch.softmax(logits, dim=1).cpu().numpy())
        return np.concatenate(out).transpose(1, 0, 2, 3)  # (C, Z, H, W)

    def predict_volume(self, image: Volume) -> Prediction:
        """Segment one 3D volume; the mask has the volume's shape (and belongs to its affine)."""
        t0 = time.perf_counter()
        if image.array.ndim != 3:
            raise InputFileError(image.path or "<volume>", f"prediction needs a 3D volume, got shape {image.shape}")
        probs, prep = self.pre.predict(image, self._probs, self.relocate_px)
        mask, qc = self._mask_and_qc(probs, prep.geometry, image)
        qc.update(
            {
                "center_source": prep.geometry.center_source,
                "translated": bool(self.method.translate_at_predict),
                "target_norm": self.target_norm,
            }
        )
        if self.tta.cfg.mode != "none":
            _, before = self._mask_and_qc(self._probs(prep.image, tta=False), prep.geometry, image)
            qc.update({"tta": self.tta.cfg.describe(), **{f"{k}_before_tta": v for k, v in before.items()}})
        qc["seconds"] = round(time.perf_counter() - t0, 3)
        return Prediction(mask=mask, qc=qc)

    def _mask_and_qc(self, probs: np.ndarray, geometry: Any, image: Volume) -> tuple[np.ndarray, dict[str, Any]]:
        """The native-grid mask of class probabilities ``(C, Z, H, W)``, its entropy and volume columns."""
        mask = self.pre.invert_argmax(probs.astype(np.float32, copy=False), geometry)
        ent = -(probs * np.log(np.clip(probs, 1e-8, 1))).sum(0) / np.log(probs.shape[0])
        pred_fg = probs.argmax(0) > 0
        near = ndi.binary_dilation(pred_fg, structure=np.ones((1, 7, 7), bool)) if pred_fg.any() else pred_fg
        voxel_ml = float(np.prod(image.spacing)) / 1000.0
        return mask, {
            "mean_entropy": float(ent.mean()),
            "fg_entropy": float(ent[near].mean()) if near.any() else float("nan"),
            **{f"{name}_ml": round(float((mask == k).sum()) * voxel_ml, 3) for name, k in self.structures.items()},
        }


def _check_recorded(run: Path, state: dict[str, Any], files: dict[str, Any]) -> None:
    """Refuse a run whose config, preprocessing or labels differ from what its checkpoint recorded at training.

    The checkpoint's weights are hashed; its ``state.json`` holds the config, the
    preprocessing and the labels the weights were trained with, so an edited
    ``config.yaml``, ``preprocess.json`` or ``run.json`` cannot silently change a prediction.
    """
    recorded = {"config.yaml": state.get("config"), "preprocess.json": state.get("preprocess"), "run.json (labels)": state.get("labels")}
    for name, value in files.items():
        if recorded[name] is None:
            continue  # (a checkpoint that predates the record)
        # through JSON and back first: tuples become lists and keys strings, as in state.json
        if json.dumps(recorded[name], sort_keys=True, default=str) != json.dumps(
            json.loads(json.dumps(value, default=str)), sort_keys=True, default=str
        ):
            raise InputFileError(
                run / name.split(" ")[0],
                "differs from the copy recorded in the checkpoint at training (edited after training?); restore it, or retrain",
            )


def _in_checkpoint(folder: Path, net: str) -> bool:
    """Whether a checkpoint holds weights of ``net`` (runs made before per-domain statistics existed hold none)."""
    from safetensors import safe_open

    if not net.endswith(TARGET_NORM):
        return True
    with safe_open(str(folder / "weights.safetensors"), framework="pt") as f:
        return any(k.startswith(f"{net}.") for k in f.keys())  # noqa: SIM118 - safe_open is not iterable


def is_run_target(run_info: dict[str, Any], domain_root: str | Path) -> bool:
    """Whether a domain folder is the run's target domain (the one its translator was trained on).

    The same folder, or a domain whose ``domain.json`` has the same name, sequence and
    vendor as the run's target (a copy or a re-import of it).
    """
    target = run_info.get("target")
    if not target:
        return False
    root = Path(domain_root).resolve()
    if root == Path(target).resolve():
        return True
    from segshift.data.domain import Domain

    try:
        a, b = Domain(root).spec, Domain(target).spec
    except (SegshiftError, OSError):
        return False
    return (a.name, a.sequence, a.vendor) == (b.name, b.sequence, b.vendor)
