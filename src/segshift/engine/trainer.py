"""The training loop: data, model selection, checkpoints, resume, precision, DDP.

``train(...)`` is what ``segshift train`` calls. :class:`Trainer` follows nnU-Net v2's
``nnUNetTrainer``: ``fit`` is a short loop over hooks a subclass can override
(``on_train_start``, ``train_step``, ``on_step_end``, ``validate``, ``on_validation_end``,
``select_final``, ``on_train_end``), and everything a resume restores besides weights and
optimisers is one :class:`~segshift.engine.state.TrainState`. Divergence checks live in
:mod:`segshift.engine.divergence`, run.json's provenance in :mod:`segshift.engine.provenance`,
the progress bar in :mod:`segshift.engine.progress`, the run folder (its staging, ``--overwrite``,
what a resume reads back) in :mod:`segshift.engine.run_folder`, building the method in
:mod:`segshift.engine.build`.

Model selection (``train.select``) never reads target labels: ``source_val`` keeps the step
with the best *source* validation Dice, ``last`` the final step; ``auto`` is ``last`` for a
warm-started run (an adaptation stage, which source validation cannot judge) and
``source_val`` otherwise. An oracle method trains on target labels by design and every
output then says ``oracle``.

A warm start (``init:``, ``segshift train --init RUN``; :mod:`segshift.engine.warmstart`)
loads the method's ``init_nets`` from a finished run and reuses its preprocessing and source
split; the run then trains its own ``train.steps``.

Randomness: the source and the target streams each have their own batch order *and* their
own augmentation generator, so a run at a given seed sees the same source batches whether
or not it also draws target batches (a paired comparison of ``source-only`` and an
adaptation method then differs only by the adaptation).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from segshift.data.cache import SliceCache
from segshift.data.domain import Domain
from segshift.engine import checkpoint as ckpt
from segshift.engine import distributed as ddp
from segshift.engine import run_folder
from segshift.engine.build import build_method
from segshift.engine.config import Config
from segshift.engine.divergence import DivergenceMonitor, TrainingDiverged, check_finite
from segshift.engine.figure_data import write_figure_data
from segshift.engine.logger import RunLogger
from segshift.engine.progress import ProgressBar
from segshift.engine.provenance import provenance
from segshift.engine.splits import select, split
from segshift.engine.state import TrainState
from segshift.engine.validate import validate
from segshift.engine.warmstart import InitRun, adopt_split, check_compatible, init_record, open_init
from segshift.errors import SegshiftError
from segshift.methods import get_method
from segshift.methods.base import Batch, FigureSamples, Method, resolve_norm_stats
from segshift.transforms import PreprocessConfig, Preprocessor
from segshift.transforms.augment import AugmentConfig, augment_batch
from segshift.transforms.gin import gin_views
from segshift.utils.atomic import write_json

__all__ = ["DivergenceMonitor", "Trainer", "TrainingDiverged", "resolve_select", "train"]  # the first two re-exported


def _label_set(domains: Sequence[Domain]) -> dict[str, int]:
    labels = domains[0].spec.labels
    for d in domains[1:]:
        if d.spec.labels != labels:
            raise SegshiftError(f"label sets differ: {domains[0].root} has {labels}, {d.root} has {d.spec.labels}")
    ids = sorted(labels.values())
    if ids != list(range(len(ids))):
        raise SegshiftError(f"{domains[0].root}: label ids must be 0..C-1 for training, got {labels}")
    return labels


SELECTIONS = ("auto", "source_val", "last")


def resolve_select(cfg: Config) -> str:
    """``source_val`` or ``last`` for a run config's ``train.select`` (``auto``: last when warm-started)."""
    rule = cfg["train"].get("select", "auto")
    if rule not in SELECTIONS:
        raise SegshiftError(f"train.select must be one of {', '.join(SELECTIONS)}, got {rule!r}")
    if rule == "auto":
        return "last" if cfg.get("init") else "source_val"
    return rule


def _check_train_values(cfg: Config) -> None:
    from segshift.engine.config import check_values

    check_values(cfg)
    t = cfg["train"]
    for key in ("steps", "batch_size", "eval_every", "checkpoint_every", "log_every"):
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SegshiftError(f"train.{key} must be a whole number >= 1, got {v!r}")


def _configure_torch(cfg: Config) -> None:
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    import random

    random.seed(seed)
    if cfg["train"]["deterministic"]:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


class Trainer:
    """One training run (see the module docstring). Use :func:`train`, or a subclass as a
    context manager (``with cls(...) as trainer: trainer.fit()``), which leaves the DDP
    process group however training ends.

    The design follows nnU-Net v2's ``nnUNetTrainer``: :meth:`fit` is a short loop over hooks
    that a subclass may override, and one object (:class:`~segshift.engine.state.TrainState`)
    is everything a resume restores besides weights and optimisers.

    ================================  ==========================================================
    hook                              does
    ================================  ==========================================================
    :meth:`on_train_start`            build the method, read the data, compile/DDP, the state, logs
    :meth:`train_step`                one step: batch, ``method.train_step``, schedulers, NaN check
    :meth:`on_step_end`               divergence verdict, log row, validation when due, ``last``
    :meth:`validate`                  source-validation scores (rank 0, broadcast)
    :meth:`on_validation_end`         model selection (``best``)
    :meth:`select_final`              after the last step: ``best`` by rule, final nets, figures
    :meth:`on_train_end`              agree across ranks, ``summary.json``, the summary
    :meth:`save_checkpoint`           ``checkpoints/last`` or ``best`` (every rank calls it)
    :meth:`load_checkpoint`           resume from ``checkpoints/last``
    ================================  ==========================================================

    Example (count validations; ``train(..., trainer_cls=Counting)`` runs it)::

        class Counting(Trainer):
            def on_validation_end(self, step, vals):
                self.validations = getattr(self, "validations", 0) + 1
                super().on_validation_end(step, vals)

    After :meth:`on_train_start`: ``method``, ``plan``, ``pre``, the caches (``train_caches``,
    ``val_caches``, ``target_cache``), ``state``, ``total``, ``logger``, ``monitor``.
    """

    def __init__(
        self,
        cfg: Config,
        sources: Sequence[str | Path],
        target: str | Path | None,
        out: str | Path,
        resume: bool = False,
        overwrite: bool = False,
        device: str | None = None,
        progress: bool = True,
    ) -> None:
        self.dist = ddp.init(device)
        try:  # checks and state only: no file is written here
            self.run = Path(out)
            self.show_progress = progress and self.dist.is_main
            self._moved: dict[str, str] = {}  # resume: recorded domain folder -> where it is now
            self._replaces = False  # this run replaces one (--overwrite) kept aside until it finishes
            if resume:
                if overwrite:
                    raise SegshiftError("--resume continues a run in place and --overwrite replaces it with a new one: give one of them")
                resumed = run_folder.open_resume(self.run, cfg, sources, target)
                cfg, sources, target = resumed.cfg, resumed.sources, resumed.target
                self._moved, self._replaces = resumed.moved, resumed.replaces
            elif self.dist.is_main:
                run_folder.check_new(self.run, sources, target, cfg.get("init"), overwrite)
            self.cfg, self.tcfg = cfg, cfg["train"]
            self.resume = resume
            _check_train_values(cfg)
            self.method_cls = get_method(cfg["method_name"])
            if self.dist.enabled and not self.method_cls.supports_ddp:  # before anything is written
                raise SegshiftError(
                    f"{self.method_cls.name} does not run under torchrun/DDP yet (each generator is called twice per update); "
                    "train it in one process"
                )
            self.augment = AugmentConfig.from_dict(cfg["augment"], spacing=cfg["data"]["preprocess"]["target_spacing"])
            if self.augment.enabled and self.augment.gin.uses_consistency and not self.method_cls.supports_view_consistency:
                raise SegshiftError(
                    f"augment.gin.consistency={self.augment.gin.consistency:g}: method {self.method_cls.name} has no "
                    "GIN-IPA consistency term; set augment.gin.consistency=0 to use GIN's appearance randomisation alone"
                )
            self.sources = [Domain(s) for s in sources]
            self.target = Domain(target) if target is not None else None
            if not self.sources:
                raise SegshiftError("at least one --source domain is needed")
            if self.method_cls.uses_target and self.target is None:
                raise SegshiftError(f"method {self.method_cls.name} adapts to a target domain: give --target")
            if self.method_cls.uses_target_labels and self.target is None:
                raise SegshiftError(f"method {self.method_cls.name} trains on target labels: give --target")
            domains = self.sources + ([self.target] if self.target is not None else [])
            self.labels = _label_set(domains)
            self.structures = {k: v for k, v in self.labels.items() if v != 0}
            self.select = resolve_select(cfg)
            self.init: InitRun | None = None
            self.init_histmatch = "none"
            if cfg.get("init") and not resume:  # a resumed run has everything in its own checkpoint
                self.init = open_init(cfg["init"])
                cfg["init"] = str(self.init.path)
                self.init_histmatch = check_compatible(
                    self.init, cfg, self.method_cls.init_nets, [d.root for d in self.sources], self.labels
                )
        except BaseException:  # a refused run leaves the process group too (under torchrun)
            ddp.shutdown(self.dist)
            raise

    # -- data -----------------------------------------------------------------------
    def _plan(self) -> dict[str, Any]:
        """Which cases train, validate, and form the unlabelled target pool."""
        d = self.cfg["data"]
        seed = int(self.cfg["seed"])
        plan: dict[str, Any] = {"train": {}, "val": {}, "target_pool": None}
        labelled_domains = [self.target] if self.method_cls.uses_target_labels else self.sources
        for i, dom in enumerate(labelled_domains):
            cases = dom.labelled_cases
            if not cases:
                raise SegshiftError(f"{dom.root}: has no labelled cases to train on")
            # explicit case lists apply to the first labelled domain (the usual single-source case)
            tr, va = split(
                cases,
                float(d["val_fraction"]),
                seed,
                d["val_cases"] if i == 0 else None,
                d["train_cases"] if i == 0 else None,
                what=f"{dom.name}",
            )
            plan["train"][_key(dom.root)] = tr
            plan["val"][_key(dom.root)] = va
        if self.method_cls.uses_target:
            plan["target_pool"] = select(self.target.cases, d["target_cases"], "data.target_cases")
        if self.init is not None and not self.method_cls.uses_target_labels:
            plan = adopt_split(self.init, plan, explicit=d["train_cases"] is not None or d["val_cases"] is not None)
        return plan

    def _preprocessor(self, plan: dict[str, Any]) -> Preprocessor:
        if self.init is not None and self.init_histmatch == "reused":
            return Preprocessor.load(self.init.preprocess)  # the very reference the init network was trained with
        pcfg = dict(self.cfg["data"]["preprocess"])
        pre = Preprocessor(PreprocessConfig(**pcfg))
        if pre.config.histmatch:
            ref = self.cfg["data"]["histmatch_reference"]
            if ref == "source":
                dom = self.sources[0]
                cases = plan["train"].get(_key(dom.root)) or dom.cases
            elif ref == "target":
                if self.target is None:
                    raise SegshiftError("data.histmatch_reference=target needs --target")
                dom, cases = self.target, plan["target_pool"] or self.target.cases
            else:
                raise SegshiftError(f"data.histmatch_reference must be source or target, got {ref!r}")
            pre.fit_histogram_reference(dom.load_image(c) for c in cases)
        return pre

    def _cache_root(self, run: Path) -> Path:
        d = self.cfg["data"]
        return Path(d["cache_dir"]) if d["cache_dir"] else run / "cache"

    def _caches(self, plan: dict[str, Any], pre: Preprocessor, root: Path) -> None:
        mem = bool(self.cfg["data"]["in_memory"])

        def build(dom: Domain, cases: list[str], labels: bool) -> SliceCache:
            return SliceCache.build(dom, pre, root, cases=cases, with_labels=labels, in_memory=mem)

        doms = {_key(x.root): x for x in self.sources + ([self.target] if self.target else [])}
        self.train_caches = [build(doms[_key(k)], v, True) for k, v in plan["train"].items()]
        self.val_caches = [build(doms[_key(k)], v, True) for k, v in plan["val"].items() if v]
        self.target_cache = build(self.target, plan["target_pool"], False) if plan["target_pool"] else None

    def _rehome_caches(self, old: Path, new: Path) -> None:
        """Point the caches built under ``old`` (the staging folder) at ``new`` (the run folder it
        was renamed to); caches in ``data.cache_dir`` stay where they are (:func:`run_folder.rehome`).
        """
        self.train_caches = [run_folder.rehome(c, old, new) for c in self.train_caches]
        self.val_caches = [run_folder.rehome(c, old, new) for c in self.val_caches]
        self.target_cache = run_folder.rehome(self.target_cache, old, new) if self.target_cache is not None else None

    # -- the loop and its hooks ---------------------------------------------------------
    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        """Leave the process group (under torchrun), however training ended."""
        ddp.shutdown(self.dist)

    def fit(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to ``train.steps`` (or up to ``stop_after``); returns the run summary.

        The loop of nnU-Net v2's ``nnUNetTrainer.run_training``, by steps instead of epochs:
        :meth:`on_train_start`, then :meth:`train_step` and :meth:`on_step_end` per step
        (which calls :meth:`validate` and :meth:`on_validation_end` when validation is due),
        then :meth:`on_train_end`. Override a hook in a subclass to change one part.
        """
        self.stop_after = stop_after
        self.on_train_start()
        try:
            for step in range(self.state.step + 1, self.total + 1):
                self.state.step = step
                self.on_step_end(step, self.train_step(step))
                if stop_after is not None and step >= stop_after:
                    break
            if self.finished:
                self.select_final()
        finally:
            self.progress_bar.close()
            self.logger.close()
        return self.on_train_end()

    @property
    def finished(self) -> bool:
        return self.state.step == self.total

    def on_train_start(self) -> None:
        """Build the method, read the data (staging a new run folder), wrap the networks for
        compile/DDP, create or restore the :class:`TrainState`, open the logs.
        """
        _configure_torch(self.cfg)
        self.method = self._build_method()
        self._prepare_data()
        self._wrap_nets()
        self.total = self.method.total_steps()
        sizes = [len(c) for c in self.train_caches]
        self.state = TrainState.create(
            int(self.cfg["seed"]),
            int(self.tcfg["batch_size"]),
            sizes,
            len(self.target_cache) if self.target_cache is not None else None,
            self.dist.rank,
            self.dist.world_size,
        )
        if self.resume:
            self.load_checkpoint()
        start = self.state.step
        self.logger = RunLogger(self.run, self.dist.is_main, resume_step=start if self.resume else None)
        self.monitor = DivergenceMonitor(
            float(self.tcfg["diverge_factor"]), int(self.tcfg["diverge_patience"]), int(self.tcfg["diverge_warmup"])
        )
        if self.resume and self.state.monitor:  # as if never interrupted (older checkpoints: a fresh warm-up from here)
            self.monitor.load_state_dict(self.state.monitor)
        elif self.resume:
            self.monitor.warmup = start + self.monitor.warmup
        self.progress_bar = ProgressBar(self.show_progress, self.total, start)
        self._running: dict[str, list[float]] = {}
        self._step_lr = 0.0  # the learning rate of the last step (logged)
        self._t0 = time.time()
        self.method.train(True)

    def train_step(self, step: int) -> dict[str, float]:
        """One step: the next batch, the method's update, the schedulers, the divergence checks;
        returns the method's logged values (with the method's diagnostics on the steps the log keeps).
        """
        self.method.diagnostics = step % int(self.tcfg["log_every"]) == 0 or step == self.total
        values = self.method.train_step(self._batch(), step)
        opts = self.method.optimizers
        self._step_lr = float(next(iter(opts.values())).param_groups[0]["lr"]) if opts else 0.0  # the rate this step used
        self.method.step_schedulers()
        check_finite(step, values, self.run / "checkpoints" / "last", self.dist)
        self.monitor.update(step, values)
        return values

    def on_step_end(self, step: int, values: dict[str, float]) -> None:
        """After a step: the divergence verdict, the log row (with validation when due), the
        ``last`` checkpoint every ``train.checkpoint_every`` steps while the run is healthy.
        """
        t = self.tcfg
        is_ckpt = step % int(t["checkpoint_every"]) == 0 or step == self.total or step == self.stop_after
        healthy = True
        if step % int(t["log_every"]) == 0 or is_ckpt:
            healthy = self.monitor.verdict(step, self.run / "checkpoints" / "last", self.dist)
        for k, v in values.items():
            self._running.setdefault(k, []).append(v)
        do_eval = self.validation_due(step)
        if step % int(t["log_every"]) == 0 or step == self.total or do_eval:
            row = {k: float(np.mean(v)) for k, v in self._running.items()}
            row["lr"] = self._step_lr
            row["elapsed_s"] = time.time() - self._t0
            self._running = {}
            if do_eval:
                vals = self.validate(step)
                self.on_validation_end(step, vals)
                row.update({f"val_{k}": v for k, v in vals.items()})
            self.logger.log(step, row)
            self.progress_bar.update(step, row)
        new_best = do_eval and self.state.best["step"] == step  # `last` too, so a resume knows this best
        if (is_ckpt or new_best) and healthy:
            self.save_checkpoint("last")
            ddp.barrier(self.dist)

    def validation_due(self, step: int) -> bool:
        """Validate every ``train.eval_every`` steps, at the end, and at the end of a stage that
        validation covers (the method says which steps it covers).
        """
        m = self.method
        return (
            bool(self.val_caches)
            and m.validation_due(step)
            and (step % int(self.tcfg["eval_every"]) == 0 or step == self.total or not m.validation_due(step + 1))
        )

    def validate(self, step: int) -> dict[str, float]:
        """Source-validation scores (rank 0 computes, every rank gets them); kept in the state."""
        vals = self._validate() if self.dist.is_main else {}
        self.state.last_vals = cast("dict[str, float]", ddp.broadcast_object(self.dist, vals))
        return self.state.last_vals

    def on_validation_end(self, step: int, vals: dict[str, float]) -> None:
        """Model selection: under ``source_val``, a better mean Dice becomes ``best``."""
        if self.select == "source_val" and vals["mean"] > self.state.best["score"]:
            self.state.best = {"score": vals["mean"], "step": step}
            self.save_checkpoint("best")

    def select_final(self) -> None:
        """After the last step: the final model is ``best`` by rule (``last``) or for want of
        validation; then (rank 0) the final networks and the method's figures.
        """
        if self.select == "last" or not self.val_caches or self.state.best["step"] is None:
            self.state.best = {"score": self.state.last_vals.get("mean") if self.select == "last" else None, "step": self.total}
            self.save_checkpoint("best")
        if self.dist.is_main:
            self._finish()
            if self._replaces:  # the run this one replaced (--overwrite); never another folder of that name
                run_folder.discard_replaced(self.run)

    def on_train_end(self) -> dict[str, Any]:
        """Agree on the final buffers across ranks, write ``summary.json`` if finished, return the summary."""
        nets = self.method.nets
        ddp.sync_buffers(self.dist, nets.values())
        ddp.dump_replicas(self.dist, nets, self.run)
        summary = {
            "method": self.method.name,
            "oracle": self.method.uses_target_labels,
            "selection": self._selection(),
            "steps_done": self.state.step,
            "steps_total": self.total,
            "finished": self.finished,
            "best_step": self.state.best["step"],
            "best_val_mean_dice": self.state.best["score"],
            "last_val": self.state.last_vals,
            "train_seconds_this_session": round(time.time() - self._t0, 2),
            "world_size": self.dist.world_size,
        }
        if self.dist.is_main and self.finished:
            write_json(self.run / "summary.json", summary)
        self._remove_temporaries()
        ddp.barrier(self.dist)
        return summary

    # -- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, which: str) -> None:
        """Write ``checkpoints/<which>`` (``last``: everything a resume needs; ``best``: the
        method's checkpoint networks). Every rank calls it (the ranks' random states are gathered);
        rank 0 writes.
        """
        self.state.monitor = self.monitor.state_dict() if getattr(self, "monitor", None) is not None else {}
        ranks = cast("list[dict[str, Any]]", ddp.all_gather_object(self.dist, self.state.rank_state()))
        if not self.dist.is_main:
            return
        m = self.method
        doc = {
            **self.state.state_dict(ranks),
            "method": m.name,
            "oracle": m.uses_target_labels,
            "labels": self.labels,
            "config": self.cfg,
            "preprocess": self.pre.to_dict(),
        }
        folder = self.run / "checkpoints" / which
        if which == "last":
            ckpt.save_checkpoint(folder, m.nets, doc, m.optimizers, m.schedulers)
        else:
            ckpt.save_checkpoint(folder, {k: m.nets[k] for k in m.checkpoint_nets()}, doc)

    def load_checkpoint(self) -> None:
        """Resume from ``checkpoints/last``: weights, optimisers, schedulers and the :class:`TrainState`."""
        last = self.run / "checkpoints" / "last"
        doc = ckpt.load_weights(last, self.method.nets)
        ckpt.load_training_state(last, self.method.optimizers, self.method.schedulers)
        self.state.load_state_dict(doc, self.dist.rank)

    # -- the parts of on_train_start ----------------------------------------------------
    def _build_method(self) -> Method:
        """The method, built and warm-started before anything is written: an init whose
        weights do not fit is refused with no run folder left behind.
        """
        return build_method(self.cfg, "train", num_classes=len(self.labels), device=self.dist.device, init=self.init)

    def _prepare_data(self) -> None:
        """The plan, the preprocessing and the slice caches (``self.plan``, ``self.pre``, the caches).

        A new run reads all input (splits, histogram fit, caches) in a hidden staging folder
        that becomes the run folder only once everything was read; rank 0 keeps what it built
        (the caches re-pointed at the run folder). Other DDP ranks did not build: they wait,
        then load the saved preprocessing and open the caches rank 0 built (same keys).
        """
        info, root = self.dist, self._cache_root(self.run)
        if self.resume:
            self._remove_temporaries()
            self.plan = run_folder.resumed_plan(self.run, self._moved, write=info.is_main)
            self.pre = Preprocessor.load(self.run / "preprocess.json")
            if info.is_main:
                self._caches(self.plan, self.pre, root)  # opens them (or rebuilds any that were deleted)
            ddp.barrier(info)
            if not info.is_main:
                self._caches(self.plan, self.pre, root)
            return
        self.plan = self._plan()
        if info.is_main:
            self.pre = self._stage()
        ddp.barrier(info)
        if not info.is_main:
            self.pre = Preprocessor.load(self.run / "preprocess.json")
            self._caches(self.plan, self.pre, root)  # opens what rank 0 built

    def _stage(self) -> Preprocessor:
        """Rank 0 of a new run: fit the preprocessing and build the caches in the staging
        folder, write config, preprocessing and run.json there, and rename it to the run folder
        (setting an existing run aside under ``--overwrite``). Returns the preprocessing.
        """
        with run_folder.staging(self.run) as stage:
            pre = self._preprocessor(self.plan)
            self._caches(self.plan, pre, self._cache_root(stage))
            self._replaces = run_folder.publish(stage, self.run, self.cfg, pre, self._run_info(self.plan))
        self._rehome_caches(stage, self.run)
        return pre

    def _wrap_nets(self) -> None:
        """``train.compile`` (the method's execution policy) and, under torchrun, DDP (checkpoints unwrap both)."""
        if self.method.execution.compile:  # in place (Module.compile): same objects and state-dict keys, so
            for net in self.method.nets.values():  # batch-norm stores and methods holding a network keep working
                net.compile()
        if self.dist.enabled:
            self.method.wrap(ddp.wrap_ddp(self.dist))

    # -- helpers --------------------------------------------------------------------------
    def _remove_temporaries(self) -> None:
        """Rank 0: delete the temporaries a killed process left in the run folder and its subfolders
        (a checkpoint's ``checkpoints/.last.*.tmp``, a cache's, a file's); a shared ``data.cache_dir`` is left alone.
        """
        if self.dist.is_main:
            run_folder.remove_run_temporaries(self.run)

    def _selection(self) -> str:
        """The model-selection rule in words (tables and reports print it)."""
        if self.select == "last":
            return "last step"
        if not self.val_caches:
            return "last step (no validation cases)"
        return "oracle: validation on labelled target cases" if self.method.uses_target_labels else "source validation Dice"

    def _finish(self) -> None:
        """After the last step: final weights of ``final_nets`` into ``best``, then the data of the method's figures."""
        method = self.method
        final = tuple(method.final_nets())
        if final:
            ckpt.replace_weights(self.run / "checkpoints" / "best", {k: method.nets[k] for k in final}, final_nets=list(final))
        method.train(False)
        try:
            write_figure_data(self.run, method.figures(self._figure_samples()))
        finally:
            method.train(True)

    def _figure_samples(self, n: int = 4) -> FigureSamples:
        """The middle slice of up to ``n`` source training cases and ``n`` target pool cases."""

        def mids(cache: SliceCache) -> np.ndarray:
            return np.array([r[len(r) // 2] for r in (cache.case_rows(c) for c in cache.cases[:n])])

        src = self.train_caches[0]
        img, lab = src.batch(mids(src))
        tgt = self.target_cache.batch(mids(self.target_cache))[0] if self.target_cache is not None else None
        return FigureSamples(img, lab, tgt)

    def _validate(self) -> dict[str, float]:
        scores = [validate(self.method, c, self.structures, int(self.tcfg["eval_batch_size"])) for c in self.val_caches]
        return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}

    def _batch(self) -> Batch:
        """The next batch: each source stream's share (augmented with the source generator, then
        GIN views if on), and the target stream's (augmented with the target generator).
        """
        st, aug, dev = self.state, self.augment, self.method.device
        gen = st.augment_rng
        imgs, labs, doms = [], [], []
        for i, (stream, cache) in enumerate(zip(st.source_streams, self.train_caches)):
            im, lb = cache.batch(stream.next())
            imgs.append(im)
            labs.append(lb)
            doms.append(np.full(len(im), i))
        image = torch.from_numpy(np.concatenate(imgs))[:, None]
        label = torch.from_numpy(np.concatenate(labs).astype(np.int64))
        image, label = augment_batch(image, label, aug, gen)
        views = None
        if aug.enabled and aug.gin.enabled:  # GIN-IPA (Ouyang et al. 2022): source images only, after the other transforms
            views = gin_views(image, aug.gin, gen)
            image = views[0]
            views = views.to(dev) if aug.gin.uses_consistency else None
        target = None
        if st.target_stream is not None:
            tim, _ = self.target_cache.batch(st.target_stream.next())
            target, _ = augment_batch(torch.from_numpy(tim)[:, None], None, aug, st.augment_rng_target)
            target = target.to(dev)
        return Batch(image.to(dev), label.to(dev), torch.from_numpy(np.concatenate(doms)).to(dev), target, views)

    def _run_info(self, plan: dict[str, Any]) -> dict[str, Any]:
        return {
            "method": self.method_cls.name,
            "oracle": self.method_cls.uses_target_labels,
            "sources": [str(d.root.resolve()) for d in self.sources],
            "target": str(self.target.root.resolve()) if self.target else None,
            "identity": {"sources": [d.identity() for d in self.sources], "target": self.target.identity() if self.target else None},
            "labels": self.labels,
            "plan": plan,
            "selection": self.select if not self.method_cls.uses_target_labels else f"{self.select} (oracle: target labels)",
            "init": init_record(self.init, self.method_cls.init_nets, self.init_histmatch) if self.init is not None else None,
            "norm_stats": resolve_norm_stats(self.cfg),
            "crop_center": self.cfg["data"]["preprocess"]["crop_center"],
            **provenance(self.dist.world_size),
        }


def _key(root: str | Path) -> str:
    """A domain's key in a run's plan: its resolved folder (a relative --source resumes from anywhere)."""
    return str(Path(root).resolve())


def train(
    cfg: Config,
    sources: Sequence[str | Path],
    target: str | Path | None,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    device: str | None = None,
    progress: bool = True,
    trainer_cls: type[Trainer] | None = None,
) -> dict[str, Any]:
    """Train a method; returns the run summary. See :class:`Trainer`; ``trainer_cls`` runs a
    subclass of it instead.
    """
    with (trainer_cls or Trainer)(
        cfg, sources, target, out, resume=resume, overwrite=overwrite, device=device, progress=progress
    ) as trainer:
        return trainer.fit(stop_after=stop_after)
