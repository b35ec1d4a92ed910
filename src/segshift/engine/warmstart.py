"""Warm start: a run that begins from the networks of a finished run (``init:``, ``--init RUN``).

Adaptation methods adapt a segmenter that was first trained on the source (AdaptSegNet,
ADVENT, AttENT's "train S, then adapt"; Unet-GAN and SDNet-FA are staged for the same
reason): alignment losses acting on a random network mostly add noise. So a run may start
from another run's ``best`` checkpoint. What it takes:

* the weights of the method's ``init_nets`` (the segmenter ``seg`` for the U-Net methods,
  ``sdnet`` for the SDNet family), batch-norm statistics included; every other network
  (discriminators, translators) starts fresh;
* the init run's preprocessing, histogram-matching reference included, so the weights see
  the inputs they were trained on; the one change allowed is *switching histogram matching
  on* (the ``+HM`` of Wang et al. 2019), whose reference is then fitted on the source
  training cases as in any run (with this run's ``histmatch_levels``) and recorded as ``fitted``;
* the init run's source train/validation split (model selection never sees a case the init
  trained on).

Anything else that differs is refused before anything is read or written, with one message
that lists every difference: the network (``model``), the preprocessing, the sources, the
label set, an unfinished init run, an init run without the networks this method takes. The
run's ``run.json`` records what was taken (``init``). :func:`like_for_like` is the rule on the
configuration, sources and split; the benchmark's planner applies it to every warm-started
row before anything trains.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segshift.engine import checkpoint as ckpt
from segshift.engine.config import Config, load_yaml
from segshift.errors import InputFileError, SegshiftError


@dataclasses.dataclass
class InitRun:
    """A finished run that a new run starts from (see the module docstring)."""

    path: Path
    cfg: Config
    info: dict[str, Any]
    summary: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoints" / "best"

    @property
    def method(self) -> str:
        return str(self.info.get("method"))

    @property
    def preprocess(self) -> Path:
        return self.path / "preprocess.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputFileError(path, "missing: the init run is not a finished segshift run") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"unreadable ({exc})") from exc
    if not isinstance(doc, dict):
        raise InputFileError(path, "is not a JSON object")
    return doc


def open_init(path: str | Path) -> InitRun:
    """Open and check an init run folder (finished, with a ``best`` checkpoint)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise InputFileError(path, "init run: no such run folder")
    if not (path / "config.yaml").is_file():
        raise InputFileError(path, "init run: not a segshift run folder (no config.yaml)")
    cfg = load_yaml(path / "config.yaml")
    info = _read_json(path / "run.json")
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        raise InputFileError(path, "init run has not finished training (no summary.json): finish it first (segshift train --resume)")
    summary = _read_json(summary_path)
    if not summary.get("finished"):
        raise InputFileError(path, f"init run has not finished training ({summary.get('steps_done')}/{summary.get('steps_total')} steps)")
    if not (path / "checkpoints" / "best" / "state.json").is_file():
        raise InputFileError(path / "checkpoints" / "best", "init run has no best checkpoint")
    if not (path / "preprocess.json").is_file():
        raise InputFileError(path / "preprocess.json", "missing: the init run's preprocessing is needed")
    return InitRun(path.resolve(), cfg, info, summary)


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str, skip: Sequence[str] = ()) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if key in skip:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, list) or isinstance(vb, list):
            va, vb = (list(va) if isinstance(va, (list, tuple)) else va), (list(vb) if isinstance(vb, (list, tuple)) else vb)
        if va != vb:
            out.append(f"{prefix}{key}: this run {vb!r}, init run {va!r}")
    return out


def split_differences(init_plan: Mapping[str, Any], plan: Mapping[str, Any]) -> list[str]:
    """Where two case plans' train/validation splits differ (``{"train": {domain: cases}, "val": ...}``)."""
    out = []
    for part, what in (("train", "training"), ("val", "validation")):
        old, new = init_plan.get(part) or {}, plan.get(part) or {}
        for dom in sorted(set(old) | set(new)):
            if list(new.get(dom) or []) != list(old.get(dom) or []):
                out.append(f"source {what} cases of {dom}: this run {new.get(dom)}, init run {old.get(dom)}")
    return out


def like_for_like(
    init_cfg: Mapping[str, Any],
    cfg: Mapping[str, Any],
    init_nets: Sequence[str],
    init_sources: Sequence[str | Path],
    sources: Sequence[str | Path],
    init_plan: Mapping[str, Any] | None = None,
    plan: Mapping[str, Any] | None = None,
) -> list[str]:
    """Every way in which a run cannot start from an init run's networks; empty if it can.

    The run trains with ``cfg`` on ``sources``, the init run trained with ``init_cfg`` on
    ``init_sources`` (resolved folders). Compared: the ``model`` section (when ``init_nets``
    holds the segmenter ``seg``, the network built from it; SDNet ignores it), the
    preprocessing, histogram matching and the sources; with ``plan`` and ``init_plan`` also
    the source train/validation split (:func:`split_differences`).

    Histogram matching may be switched on by the run, never off. ``histmatch_levels`` and
    ``data.histmatch_reference`` count only where the init run matched histograms, since its
    reference is then reused; an init without one has nothing to reuse.
    """
    problems: list[str] = []
    if "seg" in init_nets:
        problems += _differences(init_cfg.get("model") or {}, cfg.get("model") or {}, "model.")
    pre_new, pre_old = cfg["data"]["preprocess"], init_cfg["data"]["preprocess"]
    hm_new, hm_old = bool(pre_new.get("histmatch")), bool(pre_old.get("histmatch"))
    skip = ("histmatch",) if hm_old else ("histmatch", "histmatch_levels")
    problems += _differences(pre_old, pre_new, "data.preprocess.", skip=skip)
    if hm_old and not hm_new:
        problems.append(
            "data.preprocess.histmatch: the init run's network was trained on histogram-matched images; "
            "this run switches histogram matching off"
        )
    if hm_old and hm_new and cfg["data"]["histmatch_reference"] != init_cfg["data"]["histmatch_reference"]:
        problems.append(
            f"data.histmatch_reference: this run {cfg['data']['histmatch_reference']!r}, "
            f"init run {init_cfg['data']['histmatch_reference']!r}"
        )
    mine = [str(Path(s).resolve()) for s in sources]
    theirs = [str(s) for s in init_sources]
    if mine != theirs:
        problems.append(f"sources: this run {mine}, init run {theirs}")
    elif plan is not None:
        problems += split_differences(init_plan or {}, plan)
    return problems


def check_compatible(init: InitRun, cfg: Config, init_nets: Sequence[str], sources: Sequence[Path], labels: Mapping[str, int]) -> str:
    """Refuse an init run this run cannot start from; returns how histogram matching is handled.

    The configuration and sources are compared by :func:`like_for_like`; then the label set
    and the networks in the init run's checkpoint. The split is adopted later (:func:`adopt_split`).

    Returns:
        ``"none"`` (no histogram matching), ``"reused"`` (the init run's reference) or
        ``"fitted"`` (switched on by this run; fitted on the source training cases).

    Raises:
        SegshiftError: listing every difference (network, preprocessing, sources, labels,
            missing networks in the init checkpoint).
    """
    problems = like_for_like(init.cfg, cfg, init_nets, init.info.get("sources") or [], sources)
    if dict(init.info.get("labels") or {}) != dict(labels):
        problems.append(f"labels: this run {dict(labels)}, init run {init.info.get('labels')}")
    ckpt.read_state(init.checkpoint)  # format and file hashes
    from safetensors import safe_open

    with safe_open(str(init.checkpoint / "weights.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    for name in init_nets:
        if not any(k.startswith(f"{name}.") for k in keys):
            have = sorted({k.split(".", 1)[0] for k in keys})
            problems.append(f"network {name!r}: the init run ({init.method}) has none (its checkpoint holds {', '.join(have)})")
    if problems:
        raise SegshiftError(f"{init.path}: cannot start from this init run:\n  " + "\n  ".join(problems))
    hm_old, hm_new = bool(init.cfg["data"]["preprocess"].get("histmatch")), bool(cfg["data"]["preprocess"].get("histmatch"))
    return "reused" if hm_old else ("fitted" if hm_new else "none")


def adopt_split(init: InitRun, plan: dict[str, Any], explicit: bool) -> dict[str, Any]:
    """The run's case plan with the init run's source train/validation split.

    ``explicit`` says whether the user set ``data.train_cases``/``data.val_cases``; then a
    split that differs from the init run's is refused (the init trained on some of this
    run's validation cases, or the other way round) instead of being replaced.
    """
    old = init.info.get("plan") or {}
    if not split_differences(old, plan):
        return plan
    if explicit:
        raise SegshiftError(
            f"{init.path}: the source train/validation split differs from the init run's "
            f"(this run validates on {plan['val']}, the init run on {old.get('val')}); a warm-started run keeps the init "
            f"run's split: leave data.train_cases/data.val_cases unset or give the init run's"
        )
    return {**plan, "train": old["train"], "val": old["val"]}


def load_init_weights(init: InitRun, nets: Mapping[str, Any]) -> dict[str, Any]:
    """Load the init run's ``best`` weights into ``nets`` (strict); returns its checkpoint state."""
    try:
        return ckpt.load_weights(init.checkpoint, nets)
    except InputFileError as exc:
        raise SegshiftError(f"{init.path}: cannot start from this init run: {exc}") from exc


def init_record(init: InitRun, nets: Sequence[str], histmatch: str) -> dict[str, Any]:
    """What ``run.json`` says of the warm start."""
    state = ckpt.read_state(init.checkpoint)
    return {
        "run": str(init.path),
        "method": init.method,
        "checkpoint": "best",
        "step": state.get("step"),
        "selection": init.summary.get("selection"),
        "val_mean_dice": init.summary.get("best_val_mean_dice"),
        "nets": list(nets),
        "histmatch": histmatch,
        "weights_sha256": (state.get("files") or {}).get("weights.safetensors"),
    }
