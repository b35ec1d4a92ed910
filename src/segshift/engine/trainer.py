"""The training loop: data, model selection, checkpoints, resume, precision, DDP.

``train(...)`` is what ``segshift train`` calls. The run folder::

    RUN/
      config.yaml          the fully resolved config (re-used as is by --resume)
      run.json             method, domains, case splits, selection rule, versions, git revision
      preprocess.json      the preprocessing (with the fitted histogram reference, if any)
      checkpoints/last/    full state (resume)
      checkpoints/best/    the selected model (train.select: best source validation Dice, or the last step)
      logs/train.csv       losses, learning rate, validation Dice; logs/tb/ TensorBoard
      summary.json         written when training finishes

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

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segshift.data.cache import SliceCache
from segshift.data.domain import Domain, identity_changes
from segshift.data.sampling import BatchStream
from segshift.engine import checkpoint as ckpt
from segshift.engine import distributed as ddp
from segshift.engine.config import Config, dump, load_yaml
from segshift.engine.logger import RunLogger
from segshift.engine.splits import select, split
from segshift.engine.validate import validate
from segshift.engine.warmstart import InitRun, adopt_split, check_compatible, init_record, load_init_weights, open_init
from segshift.errors import SegshiftError
from segshift.methods import get_method
from segshift.methods.base import Batch, FigureSamples, Method, resolve_norm_stats
from segshift.transforms import PreprocessConfig, Preprocessor
from segshift.transforms.augment import AugmentConfig, augment_batch
from segshift.transforms.gin import gin_views
from segshift.utils.atomic import check_disjoint, write_json, write_text


class TrainingDiverged(SegshiftError):
    """A loss became NaN/Inf or the supervised loss ran away; the last good checkpoint is kept."""


class DivergenceMonitor:
    """Catches a run whose supervised source loss runs away although it stays finite.

    Adversarial training fails this way: the discriminator wins, the segmenter's adversarial
    gradient swamps its supervised one and the source loss climbs. The monitor keeps an
    exponential moving average (``alpha``) of ``loss_seg`` (else ``loss``) and its lowest
    value after ``warmup`` steps. The run is *unhealthy* while the average is above
    ``factor x max(lowest, floor)``; unhealthy for ``patience`` consecutive steps means
    diverged. ``factor`` 0 switches the check off. While unhealthy no ``last`` checkpoint is
    written, so the kept one predates the climb.
    """

    def __init__(self, factor: float, patience: int, warmup: int, alpha: float = 0.02, floor: float = 0.05) -> None:
        if factor < 0 or (0 < factor <= 1):
            raise SegshiftError(f"train.diverge_factor must be 0 (off) or > 1, got {factor}")
        self.factor, self.patience, self.warmup, self.alpha, self.floor = factor, max(1, patience), warmup, alpha, floor
        self.ema: float | None = None
        self.lowest = math.inf
        self.bad_steps = 0
        self.onset: int | None = None
        self.diverged: str | None = None

    @property
    def healthy(self) -> bool:
        return self.bad_steps == 0

    def update(self, step: int, values: dict[str, float]) -> None:
        """Feed one step's logged values (the verdict is in :attr:`diverged`)."""
        if not self.factor or self.diverged:
            return
        key = "loss_seg" if "loss_seg" in values else "loss" if "loss" in values else None
        if key is None:
            return
        v = values[key]
        self.ema = v if self.ema is None else (1 - self.alpha) * self.ema + self.alpha * v
        if step <= self.warmup:
            return
        limit = self.factor * max(self.lowest, self.floor)
        if self.lowest < math.inf and self.ema > limit:
            self.bad_steps += 1
            self.onset = self.onset or step
            if self.bad_steps >= self.patience:
                self.diverged = (
                    f"the supervised loss ({key}) diverged: its running mean rose from {self.lowest:.4g} to {self.ema:.4g} "
                    f"(limit {limit:.4g}, train.diverge_factor {self.factor:g}) and stayed above the limit for "
                    f"{self.bad_steps} steps since step {self.onset}; for adversarial methods lower the adversarial "
                    f"weight or the discriminator lr"
                )
        else:
            self.bad_steps, self.onset = 0, None
            self.lowest = min(self.lowest, self.ema)


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    import segshift

    v = {"segshift": segshift.__version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        import monai

        v["monai"] = monai.__version__
    except ImportError:
        pass
    return v


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
    from segshift.engine.config import check_ranges

    check_ranges(cfg)
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
    """One training run (see the module docstring). Use :func:`train`."""

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
        self.run = Path(out)
        self.progress = progress and self.dist.is_main
        self._moved: dict[str, str] = {}  # resume: recorded domain folder -> where it is now
        if resume:
            if not (self.run / "config.yaml").is_file():
                raise SegshiftError(f"{self.run}: nothing to resume (no config.yaml)")
            cfg = load_yaml(self.run / "config.yaml")
            sources, target, self._moved = _resume_domains(self.run, json.loads((self.run / "run.json").read_text()),
                                                           sources, target)
        elif self.dist.is_main:
            check_disjoint(self.run, [*sources, target, cfg.get("init")], "run folder")
            if self.run.exists() and any(self.run.iterdir()) and not overwrite:
                raise SegshiftError(f"{self.run}: run folder exists and is not empty (use --resume to continue it or --overwrite)")
            if target is not None and any(Path(s).resolve() == Path(target).resolve() for s in sources):
                print(f"warning: the target {target} is also a source: nothing is adapted to another domain", file=sys.stderr)
        self.cfg = cfg
        self.resume = resume
        _check_train_values(cfg)
        self.method_cls = get_method(cfg["method_name"])
        self.augment = AugmentConfig.from_dict(cfg["augment"], spacing=cfg["data"]["preprocess"]["target_spacing"])
        if self.augment.enabled and self.augment.gin.uses_consistency and not self.method_cls.supports_view_consistency:
            raise SegshiftError(f"augment.gin.consistency={self.augment.gin.consistency:g}: method {self.method_cls.name} has no "
                                "GIN-IPA consistency term; set augment.gin.consistency=0 to use GIN's appearance randomisation alone")
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
            self.init_histmatch = check_compatible(self.init, cfg, self.method_cls.init_nets, [d.root for d in self.sources], self.labels)

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

    # -- run ------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> dict[str, Any]:
        cfg, tcfg, info = self.cfg, self.cfg["train"], self.dist
        _configure_torch(cfg)
        # the method is built (and warm-started) before anything is written: an init whose
        # weights do not fit is refused with no run folder left behind
        method: Method = self.method_cls(cfg, num_classes=len(self.labels), in_channels=1, device=info.device)
        method.build()
        method.add_domain_norm()
        if self.init is not None:
            load_init_weights(self.init, {k: method.nets[k] for k in method.init_nets})
            method.reset_target_norm()
        method.to_device()
        if self.resume:
            plan = self._resumed_plan()
            pre = Preprocessor.load(self.run / "preprocess.json")
        else:
            # Everything that reads input (splits, histogram fit, slice caches) happens in a
            # hidden staging folder; the run folder appears only once all input was read.
            plan = self._plan()
            stage = self.run.parent / f".{self.run.name}.staging"
            if info.is_main:
                shutil.rmtree(stage, ignore_errors=True)
                try:
                    pre = self._preprocessor(plan)
                    self._caches(plan, pre, self._cache_root(stage))
                    if self.run.exists():  # only reached with --overwrite (checked in __init__)
                        _set_aside(self.run)
                    (stage / "checkpoints").mkdir(parents=True, exist_ok=True)
                    write_text(stage / "config.yaml", dump(cfg))
                    pre.save(stage / "preprocess.json")
                    write_json(stage / "run.json", self._run_info(plan))
                    stage.rename(self.run)
                except BaseException:
                    shutil.rmtree(stage, ignore_errors=True)
                    raise
            ddp.barrier(info)
            pre = Preprocessor.load(self.run / "preprocess.json")
        if info.is_main:
            self._caches(plan, pre, self._cache_root(self.run))  # opens the caches just built
        ddp.barrier(info)
        if not info.is_main:
            self._caches(plan, pre, self._cache_root(self.run))  # same keys: opens what rank 0 built

        if tcfg["compile"]:
            for name in list(method.nets.keys()):
                method.nets[name] = torch.compile(method.nets[name])
        if info.enabled:
            method.wrap(ddp.wrap_ddp(info))

        seed = int(cfg["seed"])
        bs = int(tcfg["batch_size"])
        n_src = len(self.train_caches)
        per_src = [bs // n_src + (1 if i < bs % n_src else 0) for i in range(n_src)]
        src_streams = [BatchStream(len(c), max(1, b), seed + 101 * i, info.rank, info.world_size) for i, (c, b) in enumerate(zip(self.train_caches, per_src))]
        tgt_stream = BatchStream(len(self.target_cache), bs, seed + 7919, info.rank, info.world_size) if self.target_cache else None
        # one augmentation generator per stream: the source batches do not depend on whether a target stream exists
        gen = torch.Generator().manual_seed(seed * 1000 + info.rank)
        gen_tgt = torch.Generator().manual_seed(seed * 1000 + info.rank + 7_919_000)
        aug = self.augment

        start, best = 0, {"score": -math.inf, "step": None}
        if self.resume:
            last = self.run / "checkpoints" / "last"
            state = ckpt.load_weights(last, method.nets)
            ckpt.load_training_state(last, method.optimizers, method.schedulers)
            start, best = int(state["step"]), state["best"]
            rs = state["ranks"][str(info.rank)] if str(info.rank) in state.get("ranks", {}) else state["ranks"]["0"]
            ckpt.set_rng_state(rs["rng"])
            gen.set_state(torch.tensor(rs["augment_rng"], dtype=torch.uint8))
            if "augment_rng_target" in rs:
                gen_tgt.set_state(torch.tensor(rs["augment_rng_target"], dtype=torch.uint8))
            for s, st in zip(src_streams, state["streams"]["source"]):
                s.load_state_dict(st)
            if tgt_stream is not None:
                tgt_stream.load_state_dict(state["streams"]["target"])

        logger = RunLogger(self.run, info.is_main, resume_step=start if self.resume else None)
        total = method.total_steps()
        eval_every, ckpt_every, log_every = int(tcfg["eval_every"]), int(tcfg["checkpoint_every"]), int(tcfg["log_every"])
        t0 = time.time()
        last_vals: dict[str, float] = {}
        running: dict[str, list[float]] = {}

        def save(step: int, which: str) -> None:
            rank_state = {"rng": ckpt.rng_state(), "augment_rng": gen.get_state().tolist(),
                          "augment_rng_target": gen_tgt.get_state().tolist()}
            gathered = [rank_state]
            if info.enabled:
                gathered = [None] * info.world_size
                torch.distributed.all_gather_object(gathered, rank_state)
            if not info.is_main:
                return
            state = {
                "step": step,
                "method": method.name,
                "oracle": method.uses_target_labels,
                "best": best,
                "val": last_vals,
                "ranks": {str(r): s for r, s in enumerate(gathered)},
                "streams": {"source": [s.state_dict() for s in src_streams], "target": tgt_stream.state_dict() if tgt_stream else None},
                "labels": self.labels,
                "config": cfg,
                "preprocess": pre.to_dict(),
            }
            if which == "last":
                ckpt.save_checkpoint(self.run / "checkpoints" / "last", method.nets, state, method.optimizers, method.schedulers)
            else:
                ckpt.save_checkpoint(self.run / "checkpoints" / "best", {k: method.nets[k] for k in method.checkpoint_nets()}, state)

        monitor = DivergenceMonitor(float(tcfg["diverge_factor"]), int(tcfg["diverge_patience"]), start + int(tcfg["diverge_warmup"]))
        progress = _progress(self.progress, total, start)
        method.train(True)
        step = start
        try:
            for step in range(start + 1, total + 1):
                batch = self._batch(method, src_streams, tgt_stream, gen, gen_tgt, aug)
                values = method.train_step(batch, step)
                method.step_schedulers()
                if not all(math.isfinite(v) for v in values.values()):
                    raise TrainingDiverged(
                        f"training diverged at step {step} ({', '.join(f'{k}={v:.4g}' for k, v in values.items())}); "
                        f"the last good checkpoint is kept in {self.run / 'checkpoints' / 'last'}"
                    )
                monitor.update(step, values)
                is_ckpt = step % ckpt_every == 0 or step == total or step == stop_after
                healthy = True
                if step % log_every == 0 or is_ckpt:  # rank 0's verdict, so every process acts alike
                    diverged, healthy, onset = ddp.broadcast_object(info, (monitor.diverged, monitor.healthy, monitor.onset))
                    if diverged:
                        raise TrainingDiverged(f"training diverged at step {step}: {diverged}; the last good checkpoint "
                                               f"(written before step {onset}) is kept in {self.run / 'checkpoints' / 'last'}")
                for k, v in values.items():
                    running.setdefault(k, []).append(v)
                # validate every eval_every steps, at the end, and at the end of a stage that validation covers
                do_eval = bool(self.val_caches) and method.validation_due(step) and (
                    step % eval_every == 0 or step == total or not method.validation_due(step + 1))
                if step % log_every == 0 or step == total or do_eval:
                    row = {k: float(np.mean(v)) for k, v in running.items()}
                    row["lr"] = float(next(iter(method.optimizers.values())).param_groups[0]["lr"]) if method.optimizers else 0.0
                    row["elapsed_s"] = time.time() - t0
                    running = {}
                    if do_eval:
                        if info.is_main:
                            last_vals = self._validate(method)
                        last_vals = ddp.broadcast_object(info, last_vals)
                        row.update({f"val_{k}": v for k, v in last_vals.items()})
                        if self.select == "source_val" and last_vals["mean"] > best["score"]:
                            best = {"score": last_vals["mean"], "step": step}
                            save(step, "best")
                    logger.log(step, row)
                    progress.update(step, row)
                if is_ckpt and healthy:
                    save(step, "last")
                    ddp.barrier(info)
                if stop_after is not None and step >= stop_after:
                    break
            if step == total and (self.select == "last" or not self.val_caches or best["step"] is None):
                # the final model is "best": by rule (last), or for want of validation cases
                best = {"score": last_vals.get("mean") if self.select == "last" else None, "step": total}
                save(total, "best")
            if step == total and info.is_main:
                self._finish(method)
                shutil.rmtree(_aside(self.run), ignore_errors=True)  # the run this one replaced (--overwrite)
        finally:
            progress.close()
            logger.close()
        if info.enabled:  # DDP syncs buffers (BN statistics) at each forward; make the final state agree too
            for net in method.nets.values():
                for buf in net.buffers():
                    torch.distributed.broadcast(buf, src=0)
        if os.environ.get("SEGSHIFT_DUMP_RANK_WEIGHTS"):  # test hook: compare DDP replicas
            from safetensors.torch import save_file

            dump_dir = self.run / "rank_weights"
            dump_dir.mkdir(exist_ok=True)
            save_file({f"{n}.{k}": v.detach().cpu().contiguous() for n, net in method.nets.items() for k, v in net.state_dict().items()},
                      str(dump_dir / f"rank{info.rank}.safetensors"))
        summary = {
            "method": method.name,
            "oracle": method.uses_target_labels,
            "selection": self._selection(method),
            "steps_done": step,
            "steps_total": total,
            "finished": step == total,
            "best_step": best["step"],
            "best_val_mean_dice": best["score"],
            "last_val": last_vals,
            "train_seconds_this_session": round(time.time() - t0, 2),
            "world_size": info.world_size,
        }
        if info.is_main and step == total:
            write_json(self.run / "summary.json", summary)
        ddp.barrier(info)
        return summary

    def _selection(self, method: Method) -> str:
        """The model-selection rule in words (tables and reports print it)."""
        if self.select == "last":
            return "last step"
        if not self.val_caches:
            return "last step (no validation cases)"
        return "oracle: validation on labelled target cases" if method.uses_target_labels else "source validation Dice"

    def _finish(self, method: Method) -> None:
        """After the last step: final weights of ``final_nets`` into ``best``, then the method's figures."""
        final = tuple(method.final_nets())
        if final:
            ckpt.replace_weights(self.run / "checkpoints" / "best", {k: method.nets[k] for k in final}, final_nets=list(final))
        method.train(False)
        try:
            method.save_figures(self.run / "figures", self._figure_samples())
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

    def _validate(self, method: Method) -> dict[str, float]:
        scores = [validate(method, c, self.structures, int(self.cfg["train"]["eval_batch_size"])) for c in self.val_caches]
        return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}

    def _batch(self, method: Method, src_streams: list[BatchStream], tgt_stream: BatchStream | None, gen: torch.Generator,
               gen_tgt: torch.Generator, aug: AugmentConfig) -> Batch:
        imgs, labs, doms = [], [], []
        for i, (stream, cache) in enumerate(zip(src_streams, self.train_caches)):
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
            views = views.to(method.device) if aug.gin.uses_consistency else None
        target = None
        if tgt_stream is not None:
            tim, _ = self.target_cache.batch(tgt_stream.next())
            target, _ = augment_batch(torch.from_numpy(tim)[:, None], None, aug, gen_tgt)
            target = target.to(method.device)
        dev = method.device
        return Batch(image.to(dev), label.to(dev), torch.from_numpy(np.concatenate(doms)).to(dev), target, views)

    def _resumed_plan(self) -> dict[str, Any]:
        """The recorded plan; domains that moved (same identity, new folder) are re-keyed, and
        run.json records their new folders."""
        info = json.loads((self.run / "run.json").read_text())
        plan = info["plan"]
        if self._moved:
            def move(keys: dict[str, Any]) -> dict[str, Any]:
                return {self._moved.get(k, k): v for k, v in keys.items()}

            plan = {**plan, "train": move(plan["train"]), "val": move(plan["val"])}
            info["sources"] = [self._moved.get(s, s) for s in info["sources"]]
            info["target"] = self._moved.get(info["target"], info["target"]) if info["target"] else None
            info["plan"] = plan
            info.setdefault("moved", []).append({"from_to": self._moved, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            if self.dist.is_main:
                write_json(self.run / "run.json", info)
        return plan

    def _run_info(self, plan: dict[str, Any]) -> dict[str, Any]:
        return {
            "method": self.method_cls.name,
            "oracle": self.method_cls.uses_target_labels,
            "sources": [str(d.root.resolve()) for d in self.sources],
            "target": str(self.target.root.resolve()) if self.target else None,
            "identity": {"sources": [d.identity() for d in self.sources],
                         "target": self.target.identity() if self.target else None},
            "labels": self.labels,
            "plan": plan,
            "selection": self.select if not self.method_cls.uses_target_labels else f"{self.select} (oracle: target labels)",
            "init": init_record(self.init, self.method_cls.init_nets, self.init_histmatch) if self.init is not None else None,
            "norm_stats": resolve_norm_stats(self.cfg),
            "crop_center": self.cfg["data"]["preprocess"]["crop_center"],
            "versions": _versions(),
            "git_revision": _git_revision(),
            "world_size": self.dist.world_size,
        }


def _resume_domains(run: Path, info: dict[str, Any], sources: Sequence[str | Path],
                    target: str | Path | None) -> tuple[list[str], str | None, dict[str, str]]:
    """The domains a resumed run continues with: the recorded folders, or the ``--source`` /
    ``--target`` given with ``--resume`` for a domain that moved.

    Every domain must still be the one the run started with (:meth:`Domain.identity`: name,
    labels, case files and sizes); a changed domain is refused with what changed. Returns
    (sources, target, {recorded folder: new folder} for those that moved).
    """
    rec_src, rec_tgt = list(info["sources"]), info["target"]
    ident = info.get("identity") or {}  # runs from before identities were recorded: paths only
    if sources and len(sources) != len(rec_src):
        raise SegshiftError(f"{run}: --resume with --source: this run has {len(rec_src)} source domain(s) "
                            f"({', '.join(rec_src)}); give all of them, in that order, or none")
    if target is not None and rec_tgt is None:
        raise SegshiftError(f"{run}: --resume with --target: this run has no target domain")
    pairs = [(r, str(Path(g).resolve()) if sources else r, i, "--source")
             for i, (r, g) in enumerate(zip(rec_src, sources or rec_src))]
    if rec_tgt is not None:
        pairs.append((rec_tgt, str(Path(target).resolve()) if target is not None else rec_tgt, None, "--target"))
    moved: dict[str, str] = {}
    for recorded, now, i, flag in pairs:
        if not (Path(now) / "domain.json").is_file():
            hint = (f"if it moved, give its new folder with {flag} along with --resume" if now == recorded
                    else f"{now} is not a domain folder")
            raise SegshiftError(f"{run}: cannot resume: the domain {recorded} recorded in run.json is gone; {hint}")
        want = ident.get("sources", [None] * len(rec_src))[i] if i is not None else ident.get("target")
        if want is not None:
            changes = identity_changes(want, Domain(now).identity())
            if changes:
                raise SegshiftError(f"{run}: cannot resume: {now} is not the domain this run started with "
                                    f"({'; '.join(changes)}); start a new run for changed data")
        if now != recorded:
            moved[recorded] = now
    return [moved.get(r, r) for r in rec_src], moved.get(rec_tgt, rec_tgt) if rec_tgt else None, moved


def _aside(run: Path) -> Path:
    """Where ``--overwrite`` keeps the run it replaces until the new one finishes."""
    return run.parent / f".{run.name}.replaced"


def _set_aside(run: Path) -> None:
    """Move an existing run folder aside (``--overwrite``); it is deleted when the new run finishes,
    so an interrupted or failed replacement loses nothing finished. If a run is already aside,
    ``run`` is itself an unfinished replacement and is deleted instead."""
    aside = _aside(run)
    if aside.exists():
        shutil.rmtree(run)
        print(f"note: {run} was an unfinished replacement and is deleted; the run it replaced is still kept at {aside} "
              "until this one finishes", file=sys.stderr)
    else:
        run.rename(aside)
        print(f"note: the previous {run} is kept at {aside} until this run finishes", file=sys.stderr)


def _key(root: str | Path) -> str:
    """A domain's key in a run's plan: its resolved folder (a relative --source resumes from anywhere)."""
    return str(Path(root).resolve())


class _progress:
    """A rich progress bar with the latest losses and ETA (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.task = self.bar.add_task("train", total=total, completed=start, info="")
        self.bar.start()

    def update(self, step: int, row: dict[str, float]) -> None:
        if self.bar is None:
            return
        keys = [k for k in ("loss", "val_mean") if k in row]
        self.bar.update(self.task, completed=step, info=" ".join(f"{k}={row[k]:.3f}" for k in keys))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


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
) -> dict[str, Any]:
    """Train a method; returns the run summary. See :class:`Trainer`."""
    trainer = Trainer(cfg, sources, target, out, resume=resume, overwrite=overwrite, device=device, progress=progress)
    try:
        return trainer.fit(stop_after=stop_after)
    finally:
        ddp.shutdown(trainer.dist)
