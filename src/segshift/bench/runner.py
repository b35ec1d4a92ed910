"""Run a benchmark suite: every task x method x seed, resumable, then the tables.

The output folder::

    OUT/suite.yaml                      the suite as given
    OUT/phantom/<preset>/               generated domains (suites with a phantom: section)
    OUT/runs/<task>/<method or init id>/seed<k>/
        spec.json                       what this run is (written before it starts)
        train/                          the engine's run folder (config.yaml, run.json, logs/, checkpoints/, figures/)
        predictions/<test>/             masks of the test cases, in their input geometry
        evaluation/<test>/              per_case.csv, summary.json
        bench.json                      the done marker (written last): timings, steps, cases
    OUT/benchmark.json                  every run's status, skipped runs with the reason
    OUT/results/                        per_case.csv, summary.csv, results.json, results.md, qc_cases.csv,
                                        qc_validation.csv (see segshift.bench.tables and segshift.bench.qc)

Inits (the suite's ``inits:``): each is trained once per task and seed, into its own run
folder like any other run (cached, resumable), before the rows that name it; each of those
gets ``init=<the init's train folder>`` in its config, so the engine warm-starts its
networks from the init's ``best`` checkpoint, and its fingerprint includes the init's: a
changed init makes its dependants stale (refused like any other changed run). Before anything
trains, the plan checks that a dependant and its init share the networks a warm start loads
(``Method.init_nets``), and applies the engine's own like-for-like rule
(:func:`segshift.engine.warmstart.like_for_like`: ``model``, ``data.preprocess``, where
``histmatch`` may be switched on, sources and train/validation cases), so a suite that plans
is not refused when a row starts.

Prediction and evaluation: :class:`segshift.bench.pipeline.RunTester`, the one
implementation shared with the demo and ``segshift test``. What a run learnt of its target
domain (a translator, ``Method.can_translate``; target batch-norm statistics) is applied
only to test sets of the run's own target domain; every other test set (an unseen domain, a
source test set) is segmented untranslated with the source statistics. The flag is recorded
per test set in ``bench.json`` (``translate``).

Resumption: a run with ``bench.json`` (and the same spec) is skipped; a run whose training
finished (``train/summary.json``) is only predicted and evaluated; a run with a ``last``
checkpoint continues with the engine's resume (bit-identical to an uninterrupted run); any
other partial run is restarted from scratch. A run folder made by a *different* spec is an
error, never silently reused.

Target labels: non-oracle runs get the target pool as an unlabelled domain (the engine never
opens its label files); label files of test domains are read only by evaluation, and of the
oracle set only by oracle methods (``uses_target_labels``), which every table marks ORACLE.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segshift.data.domain import Domain
    from segshift.methods.base import Method

from segshift.bench.pipeline import TestSet
from segshift.bench.suite import PHANTOM_PREFIX, InitSpec, MethodSpec, Suite, TaskSpec, TestSpec
from segshift.errors import SegshiftError
from segshift.utils.atomic import check_disjoint, write_json, write_text


@dataclasses.dataclass(kw_only=True)
class RunPlan:
    """One training run of the benchmark, fully resolved before anything trains."""

    task: str
    method_id: str
    method: str
    seed: int
    oracle: bool
    folder: Path
    sources: list[Path]
    tests: list[TestSet]
    target: Path | None = None
    """The target domain it trains on: the unlabelled pool's (adaptation) or the oracle set's."""
    sets: list[str] = dataclasses.field(default_factory=list)
    """The ``--set`` overrides that make its config (``resolve(method, sets)``)."""
    steps: int = 0
    skipped: str | None = None
    """Why the run is not made (``None``: it is)."""
    phantom: dict[str, Any] | None = None
    role: str = "method"
    """``init`` (a shared first stage), ``method`` or ``oracle``."""
    init: RunPlan | None = None
    """The init run this run is warm-started from (same task and seed), if any."""
    label: str = ""
    """The row's name in tables and figures (default: the id; oracles say ORACLE)."""
    config: dict[str, Any] | None = dataclasses.field(default=None, repr=False, compare=False)
    labelled: list[tuple[str, list[str], list[str]]] = dataclasses.field(default_factory=list, repr=False, compare=False)
    """(domain folder, train cases, validation cases) of every labelled domain it trains on."""
    tta: dict[str, Any] | None = None
    """Test-time adaptation at prediction (``TTAConfig`` fields), or ``None``."""
    train_from: RunPlan | None = dataclasses.field(default=None, repr=False, compare=False)
    """The row whose trained model this row predicts with (the same training, another ``tta``)."""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = f"{self.method_id} (ORACLE)" if self.oracle else self.method_id

    @property
    def key(self) -> str:
        return f"{self.task}/{self.method_id}/seed{self.seed}"

    def spec(self) -> dict[str, Any]:
        """What the run is; its hash decides whether an existing run folder may be reused."""
        spec = {
            "task": self.task,
            "method_id": self.method_id,
            "method": self.method,
            "seed": self.seed,
            "oracle": self.oracle,
            "sources": [str(s) for s in self.sources],
            "target": str(self.target) if self.target else None,
            "sets": self.sets,
            "steps": self.steps,
            "tests": [{"name": t.name, "domain": str(t.domain), "cases": t.cases} for t in self.tests],
            "phantom": self.phantom,  # regenerated phantom domains invalidate the runs made on them
        }
        if self.role == "init":  # (keys added only where they apply: runs of suites without inits keep their fingerprints)
            spec["role"] = "init"
        if self.init is not None:
            spec["init"] = {"key": self.init.key, "fingerprint": self.init.fingerprint()}  # a changed init makes this run stale
        if self.tta is not None:
            spec["tta"] = dict(self.tta)
        if self.train_from is not None:
            spec["train_from"] = {"key": self.train_from.key, "fingerprint": self.train_from.fingerprint()}
        return spec

    @property
    def train_dir(self) -> Path:
        """The engine's run folder this row predicts with (its own, or that of the row it shares training with)."""
        return (self.train_from.folder if self.train_from is not None else self.folder) / "train"

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]


def _yaml_value(v: Any) -> str:
    return json.dumps(v)  # JSON is YAML: lists and strings survive --set parsing unchanged


@dataclasses.dataclass(kw_only=True)
class _TaskContext:
    """A task's opened domains, target pool and test sets (shared by every run of the task)."""

    task: TaskSpec
    sources: list[Domain]
    tdom: Domain | None
    pool: list[str] | None
    odom: Domain | None
    tests: list[TestSet]


Labelled = list[tuple["Domain", list[str], list[str]]]
"""(domain, training cases, validation cases) of every labelled domain a run trains on."""


def _case_plan(run: RunPlan) -> dict[str, dict[str, list[str]]]:
    """A run's split in the engine's form: ``{"train": {domain: cases}, "val": {domain: cases}}``."""
    return {"train": {d: tr for d, tr, _ in run.labelled}, "val": {d: va for d, _, va in run.labelled}}


def _check_like_for_like(where: str, run: RunPlan, init: RunPlan) -> None:
    """Refuse, at planning, a warm-started row the engine would refuse when it starts.

    The rule is the engine's (:func:`segshift.engine.warmstart.like_for_like`): the init's
    network, preprocessing (histogram matching may be switched on), sources and split.
    """
    from segshift.engine.warmstart import like_for_like
    from segshift.methods import get_method

    problems = like_for_like(
        init.config or {},
        run.config or {},
        get_method(run.method).init_nets,
        [d for d, _, _ in init.labelled],
        [d for d, _, _ in run.labelled],
        _case_plan(init),
        _case_plan(run),
    )
    if problems:
        raise SegshiftError(
            f"{where}: differs from its init {init.method_id} in "
            + "; ".join(problems)
            + ". A warm-started run keeps the init's network, preprocessing and source split (the engine refuses it "
            "otherwise): fix model.* and data.preprocess.* in the suite's global set: (and leave the split to the task), "
            "or give this row init: none"
        )


class Benchmark:
    """A suite bound to an output folder.

    Args:
        suite: the parsed suite.
        out: the benchmark folder.
        device: training/prediction device (default: GPU if available).
        echo: progress messages.
    """

    def __init__(self, suite: Suite, out: str | Path, device: str | None = None, echo: Callable[[str], None] = print) -> None:
        self.suite, self.out, self.device, self.echo = suite, Path(out), device, echo
        self.phantom_root = self.out / "phantom"
        self._built: set[tuple[str, str, int]] = set()  # the configs _check_buildable has built

    # -- planning ---------------------------------------------------------------------
    def _domain(self, ref: str, task: str, role: str) -> Domain:
        from segshift.data.domain import Domain

        path = self.suite.domain_path(ref, self.phantom_root)
        try:
            return Domain(path)
        except SegshiftError as exc:
            raise SegshiftError(f"{self.suite.path}: task {task}: {role} domain {ref!r}: {exc}") from exc

    def _fail(self, task: str, problem: str) -> SegshiftError:
        return SegshiftError(f"{self.suite.path}: task {task}: {problem}")

    def make_phantom(self) -> None:
        """Generate the suite's phantom domains once (a ``.done`` marker makes it resumable)."""
        ph = self.suite.phantom
        if not ph:
            if any(r.startswith(PHANTOM_PREFIX) for r in self._refs()):
                raise SegshiftError(f"{self.suite.path}: uses phantom:<preset> domains but has no phantom: section")
            return
        from segshift.data.phantom import generate_phantom

        marker = self.phantom_root / ".done.json"
        want = {"presets": list(ph["presets"]), "cases": int(ph.get("cases", 20)), "seed": int(ph.get("seed", 0))}
        if marker.is_file() and json.loads(marker.read_text()) == want:
            return
        self.echo(f"phantom: {', '.join(want['presets'])} ({want['cases']} cases, seed {want['seed']}) -> {self.phantom_root}")
        generate_phantom(self.phantom_root, presets=want["presets"], n_cases=want["cases"], seed=want["seed"], overwrite=True)
        write_json(marker, want)

    def _check_out(self) -> None:
        """Refuse a benchmark folder that is, contains or lies inside a domain of the suite (its own
        phantom domains aside), before anything is written.
        """
        domains = [self.suite.domain_path(r, self.phantom_root) for r in self._refs() if not r.startswith(PHANTOM_PREFIX)]
        check_disjoint(self.out, domains, "benchmark folder")

    def _refs(self) -> list[str]:
        refs = []
        for t in self.suite.tasks:
            refs += [s.domain for s in t.sources] + [x.domain for x in t.tests]
            refs += [t.target.domain] if t.target else []
            refs += [t.oracle.domain] if t.oracle else []
        return refs

    def plan(self) -> list[RunPlan]:
        """Open every domain and resolve every run; all checks happen here, before training.

        Per task, the inits its rows need come first (one run per seed), then the rows.

        Raises:
            SegshiftError: a missing or invalid domain folder, a test case without a label,
                test cases that are oracle or source training/validation cases, a target
                pool that holds test cases (unless the task is ``transductive``), a budget
                that cannot be resolved, a row that cannot be warm-started from its init
                (other networks, model, preprocessing or source cases). Each message names
                the suite file and the task.
        """
        plans: list[RunPlan] = []
        for task in self.suite.tasks:
            ctx = self._open_task(task)
            rows = self._methods(task)
            inits: dict[tuple[str, int], RunPlan] = {}
            for spec in self.suite.inits:
                if any(m.init == spec.id for m in rows):
                    for seed in self.suite.seeds:
                        row = MethodSpec(id=spec.id, name=spec.method, sets=spec.sets, budget=spec.budget)
                        inits[spec.id, seed] = self._plan_run(ctx, row, seed, role="init", label=self._init_label(spec))
            dependants = []
            for m in rows:
                for seed in self.suite.seeds:
                    dependants.append(self._plan_run(ctx, m, seed, init=inits[m.init, seed] if m.init else None))
            dependants = _share_training(dependants)
            used = {(d.init.method_id, d.seed) for d in dependants if d.init is not None and not d.skipped}
            plans += [p for k, p in inits.items() if k in used] + dependants  # an init no run needs here is not made
        return plans

    def _open_task(self, task: TaskSpec) -> _TaskContext:
        """Open a task's domains and resolve its test sets and target pool (see :meth:`plan` for what is refused)."""
        from segshift.engine.splits import group_of, select

        tests = [self._test_set(task, t) for t in task.tests]
        sources = [self._domain(s.domain, task.name, "source") for s in task.sources]
        for s in sources:
            if not s.labelled_cases:
                raise self._fail(task.name, f"source domain {s.root} has no labelled cases")
        pool, tdom = None, None
        if task.target is not None:
            tdom = self._domain(task.target.domain, task.name, "target")
            held = {group_of(c) for ts in tests if ts.domain == tdom.root.resolve() for c in ts.cases}
            if task.target.cases is not None:
                pool = select(tdom.cases, task.target.cases, f"{self.suite.path}: task {task.name}: target cases")
                clash = [c for c in pool if group_of(c) in held]
                if clash and not task.transductive:
                    raise self._fail(
                        task.name,
                        f"the target pool holds test cases {', '.join(clash)} of {tdom.root} "
                        "(set transductive: true to adapt on the unlabelled test images on purpose)",
                    )
            else:
                pool = [c for c in tdom.cases if task.transductive or group_of(c) not in held]
            if not pool:
                raise self._fail(task.name, f"the target pool of {tdom.root} is empty")
        odom = self._domain(task.oracle.domain, task.name, "oracle") if task.oracle is not None else None
        return _TaskContext(task=task, sources=sources, tdom=tdom, pool=pool, odom=odom, tests=tests)

    def _test_set(self, task: TaskSpec, t: TestSpec) -> TestSet:
        """A test set's labelled cases (default: every labelled case of its domain)."""
        from segshift.engine.splits import select

        dom = self._domain(t.domain, task.name, f"test set {t.name}")
        cases = (
            select(dom.cases, t.cases, f"{self.suite.path}: task {task.name}: test {t.name} cases")
            if t.cases is not None
            else dom.labelled_cases
        )
        unlabelled = [c for c in cases if c not in set(dom.labelled_cases)]
        if unlabelled or not cases:
            raise self._fail(
                task.name,
                f"test set {t.name}: cases without labels in {dom.root}: {', '.join(unlabelled) or '(no labelled cases)'}",
            )
        return TestSet(t.name, dom.root.resolve(), cases)

    def _init_label(self, spec: InitSpec) -> str:
        """``source-only (init)``; ``sdnet-ss (init init-b)`` where two inits share a method."""
        twins = [i for i in self.suite.inits if i.method == spec.method]
        return f"{spec.method} (init)" if len(twins) == 1 else f"{spec.method} (init {spec.id})"

    def _methods(self, task: TaskSpec) -> list[MethodSpec]:
        return [
            m for m in self.suite.methods if (task.methods is None or m.id in task.methods) and (m.tasks is None or task.name in m.tasks)
        ]

    def _budget(self, task: TaskSpec, m: MethodSpec, role: str, init: RunPlan | None) -> dict[str, int]:
        """A row's own budget wins; an init has its own; a warm-started row gets the task's or the suite's
        (the adaptation stage); a row from scratch in a suite with inits gets the first init's.
        """
        if m.budget:
            return dict(m.budget)
        if role == "init" or init is not None or not self.suite.inits:
            return dict(task.budget or self.suite.budget)
        return dict(self.suite.inits[0].budget)

    def _check_buildable(self, cls: type[Method], cfg: Mapping[str, Any], num_classes: int) -> None:
        """Build a row's method (networks, optimisers; no data) once per config, so that a setting
        that only fails when its networks exist (a discriminator too deep for its input) stops the
        suite at planning, not at that row's first step after the rows before it have trained.
        """
        key = (cls.name, json.dumps({k: v for k, v in cfg.items() if k != "seed"}, sort_keys=True, default=str), num_classes)
        if key not in self._built:
            from segshift.engine.build import build_method

            build_method(dict(cfg), "plan", num_classes=num_classes)
            self._built.add(key)

    def _plan_run(
        self, ctx: _TaskContext, m: MethodSpec, seed: int, role: str | None = None, label: str = "", init: RunPlan | None = None
    ) -> RunPlan:
        """One run of row ``m`` at ``seed`` on the task: checked, its config and split resolved, or skipped with the reason."""
        from segshift.methods import get_method

        cls = get_method(m.name)
        role = role or ("oracle" if cls.uses_target_labels else "method")
        plan = RunPlan(
            task=ctx.task.name,
            method_id=m.id,
            method=m.name,
            seed=seed,
            oracle=cls.uses_target_labels,
            folder=self.out / "runs" / ctx.task.name / m.id / f"seed{seed}",
            sources=[s.root.resolve() for s in ctx.sources],
            tests=ctx.tests,
            phantom=dict(self.suite.phantom) if self.suite.phantom else None,
            role=role,
            init=init,
            label=label,
            tta=dict(m.tta) if m.tta else None,
        )
        where = f"{self.suite.path}: task {ctx.task.name}: " + (f"init {m.id}" if role == "init" else f"method {m.id}")
        if init is not None:
            _check_init_family(where, cls, m, init)
        if cls.uses_target_labels and ctx.odom is not None:  # an oracle bounds its own domain only
            plan.tests = [t for t in ctx.tests if t.domain == ctx.odom.root.resolve()]
        plan.skipped = _skip_reason(ctx, cls, plan.tests, init)
        if plan.skipped:
            return plan
        sets, cfg = self._config(where, ctx, m, seed, cls, init)
        labelled = _labelled(where, ctx, cls, seed, float(cfg["data"]["val_fraction"]))
        _check_no_test_case_trained(where, ctx.tests, labelled, cls.uses_target_labels)
        if cls.uses_target_labels:
            plan.target = ctx.odom.root.resolve()
        elif cls.uses_target:
            plan.target = ctx.tdom.root.resolve()
            sets.append(f"data.target_cases={_yaml_value(ctx.pool)}")
        _, tr0, va0 = labelled[0]
        sets += [f"data.train_cases={_yaml_value(tr0)}", f"data.val_cases={_yaml_value(va0)}"]
        steps = self._steps(ctx.task, m, role, init, labelled, int(cfg["train"]["batch_size"]))
        sets.append(f"train.steps={steps}")
        plan.labelled = [(str(dom.root.resolve()), tr, va) for dom, tr, va in labelled]
        plan.config = cfg
        if init is not None:
            _check_like_for_like(where, plan, init)
            sets.append(f"init={_yaml_value(str((init.folder / 'train').resolve()))}")
        plan.sets, plan.steps = sets, steps
        return plan

    def _config(
        self, where: str, ctx: _TaskContext, m: MethodSpec, seed: int, cls: type[Method], init: RunPlan | None
    ) -> tuple[list[str], dict[str, Any]]:
        """A run's overrides (suite, task, adaptation stage if warm-started, row, seed) and the config they
        resolve to, whose networks are built once to check them.
        """
        from segshift.engine.config import resolve

        stage = list(self.suite.stage_sets) if init is not None else []
        sets = list(self.suite.sets) + list(ctx.task.sets) + stage + list(m.sets) + [f"seed={seed}"]
        try:
            cfg = resolve(m.name, sets=sets)
            self._check_buildable(cls, cfg, len(ctx.sources[0].spec.labels))
        except SegshiftError as exc:
            raise SegshiftError(f"{where}: {exc}") from exc
        return sets, cfg

    def _steps(self, task: TaskSpec, m: MethodSpec, role: str, init: RunPlan | None, labelled: Labelled, batch_size: int) -> int:
        """Optimiser steps of a run: its budget's, or its epochs over the labelled training slices."""
        budget = self._budget(task, m, role, init)
        if "steps" in budget:
            return int(budget["steps"])
        n = sum(_slices(dom, tr) for dom, tr, _ in labelled)
        return max(1, math.ceil(budget["epochs"] * n / batch_size))

    # -- running ----------------------------------------------------------------------
    def run(self, only_plan: bool = False) -> dict[str, Any]:
        """Plan, run every run that is not done, then write the tables; returns ``benchmark.json``'s content."""
        self._check_out()
        self.make_phantom()
        plans = self.plan()
        for p in plans:  # refuse reuse of a folder made by another spec before anything trains
            self._check_spec(p)
        todo = [p for p in plans if not p.skipped]
        n_init = sum(p.role == "init" for p in todo)
        n_tta = sum(p.train_from is not None for p in todo)
        inits = f" ({n_init} of them inits, each warm-starting its rows)" if n_init else ""
        inits += f" ({n_tta} of them TTA rows predicting with another row's model)" if n_tta else ""
        self.echo(f"benchmark {self.suite.name}: {len(todo)} runs{inits} ({len(plans) - len(todo)} not made by design) -> {self.out}")
        doc = {
            "suite": self.suite.name,
            "suite_file": str(self.suite.path),
            "seeds": list(self.suite.seeds),
            "compare": [list(c) for c in self.suite.compare],
            "inits": [{"id": i.id, "method": i.method, "budget": dict(i.budget)} for i in self.suite.inits],
            "qc_threshold": self.suite.qc_threshold,
            "runs": [self._status(p, "planned", steps=p.steps) for p in plans],
        }
        if only_plan:  # --plan: nothing is written (but a phantom section's domains, needed for the checks)
            return doc
        self.out.mkdir(parents=True, exist_ok=True)
        write_text(self.out / "suite.yaml", self.suite.text)
        for i, p in enumerate(plans):  # benchmark.json is rewritten after each run, so a killed benchmark can be reported
            doc["runs"][i] = self.run_one(p, f"[{i + 1}/{len(plans)}]")
            write_json(self.out / "benchmark.json", doc)
        from segshift.bench.tables import write_tables

        write_tables(self.out)
        return doc

    def _status(self, p: RunPlan, state: str, **extra: Any) -> dict[str, Any]:
        return {
            "key": p.key,
            "task": p.task,
            "method_id": p.method_id,
            "method": p.method,
            "seed": p.seed,
            "oracle": p.oracle,
            "role": p.role,
            "init": p.init.method_id if p.init is not None else None,
            "label": p.label,
            "state": state,
            "skipped": p.skipped,
            "folder": str(p.folder.relative_to(self.out)),
            "train_folder": str(p.train_dir.relative_to(self.out)),
            "tta": p.tta,
            "shares_training": p.train_from.key if p.train_from is not None else None,
            **extra,
        }

    def _check_spec(self, p: RunPlan) -> None:
        f = p.folder / "spec.json"
        if p.skipped or not f.is_file():
            return
        old = json.loads(f.read_text())
        if old.get("fingerprint") != p.fingerprint():
            raise SegshiftError(
                f"{p.folder}: this run folder was made by a different spec (changed suite, budget or overrides); "
                "delete it, or write the benchmark to a new --out"
            )

    def run_one(self, p: RunPlan, tag: str = "") -> dict[str, Any]:
        """Train (or resume), predict and evaluate one run unless it is done."""
        if p.skipped:
            self.echo(f"{tag} {p.key}: skipped ({p.skipped})")
            return self._status(p, "skipped")
        done = p.folder / "bench.json"
        marker = json.loads(done.read_text()) if done.is_file() else {}
        if marker.get("fingerprint") == p.fingerprint():
            self.echo(f"{tag} {p.key}: done, skipped")
            timing = marker["timing"]
            return self._status(
                p,
                "done",
                **{
                    **timing,
                    "steps": _steps_trained(p.train_dir, timing.get("steps", p.steps)),
                    "selection": _selection(p.train_dir),
                    "translate": marker.get("translate"),
                },
            )
        p.folder.mkdir(parents=True, exist_ok=True)
        write_json(p.folder / "spec.json", {"fingerprint": p.fingerprint(), **p.spec()})
        timing = {"train_s": 0.0, "predict_s": 0.0, "evaluate_s": 0.0, "trained": "no", "steps": p.steps}
        train_dir = p.train_dir
        summary = _finished_summary(train_dir)
        if p.train_from is not None:
            if summary is None:
                raise SegshiftError(f"{p.key}: predicts with the model of {p.train_from.key}, which has not finished training")
            self.echo(f"{tag} {p.key}: the model of {p.train_from.key}, predicted with TTA {p.tta['mode']}")
            spent = p.train_from.folder / "train_seconds.json"
            timing["train_s"] = json.loads(spent.read_text())["seconds"] if spent.is_file() else None
            timing["trained"] = f"shared ({p.train_from.key})"
        elif summary is None:
            from segshift.engine.config import resolve

            resume = (train_dir / "checkpoints" / "last" / "state.json").is_file() and (train_dir / "run.json").is_file()
            oracle = " - ORACLE: trains on target labels" if p.oracle else ""
            start = f" from init {p.init.key}" if p.init is not None else " (init)" if p.role == "init" else ""
            self.echo(f"{tag} {p.key}: {'resume' if resume else 'train'} {p.steps} steps{start}{oracle}")
            spent = p.folder / "train_seconds.json"  # wall time of every session, a killed one included
            before = json.loads(spent.read_text())["seconds"] if resume and spent.is_file() else 0.0
            t0 = time.perf_counter()
            try:
                if resume:
                    train(None, [], None, train_dir, resume=True, device=self.device, progress=False)
                else:
                    cfg = resolve(p.method, sets=p.sets)
                    train(cfg, p.sources, p.target, train_dir, overwrite=True, device=self.device, progress=False)
            finally:
                write_json(spent, {"seconds": round(before + time.perf_counter() - t0, 2)})
            timing["train_s"] = json.loads(spent.read_text())["seconds"]
            timing["trained"] = "resumed" if resume else "yes"
        else:
            self.echo(f"{tag} {p.key}: training finished earlier; predict and evaluate")
            spent = p.folder / "train_seconds.json"
            timing["train_s"] = json.loads(spent.read_text())["seconds"] if spent.is_file() else None
        timing["steps"] = _steps_trained(train_dir, p.steps)  # staged methods (unetgan, sdnet-fa) train more than train.steps
        from segshift.bench.pipeline import RunTester
        from segshift.inference.tta import TTAConfig

        # a translator (and the target's batch-norm statistics) only ever see images of the domain they were
        # trained on: the run's own target domain; any other test set is segmented as source-like (RunTester)
        tester = RunTester(train_dir, device=self.device, tta=TTAConfig(**p.tta) if p.tta else None)
        translate = {}
        for ts in p.tests:
            res = tester.run(ts, p.folder / "predictions" / ts.name, p.folder / "evaluation" / ts.name)
            translate[ts.name] = res.translate
            timing["predict_s"] += round(res.predict_s, 2)
            timing["evaluate_s"] += round(res.evaluate_s, 2)
            self.echo(f"{tag} {p.key}: {ts.name}: mean Dice {res.mean_dice:.3f} over {len(ts.cases)} cases")
        write_json(
            done,
            {
                "fingerprint": p.fingerprint(),
                "key": p.key,
                "oracle": p.oracle,
                "role": p.role,
                "init": p.init.key if p.init is not None else None,
                "timing": timing,
                "tests": {t.name: t.cases for t in p.tests},
                "translate": translate,
            },
        )
        return self._status(p, "ran", **timing, selection=_selection(train_dir), translate=translate)


def _check_init_family(where: str, cls: type[Method], m: MethodSpec, init: RunPlan) -> None:
    """A row loads the networks its init has (``Method.init_nets``): the U-Net segmenter, or SDNet."""
    from segshift.methods import get_method

    want = get_method(init.method).init_nets
    if cls.init_nets != want:
        raise SegshiftError(
            f"{where}: cannot be warm-started from init {init.method_id} ({init.method}): a warm start of {m.name} "
            f"loads its networks {', '.join(cls.init_nets)}, and {init.method} has {', '.join(want)}; name an init "
            f"of the same family (the row's init:, or method_init: {{{m.name}: ...}}), or init: none"
        )


def _skip_reason(ctx: _TaskContext, cls: type[Method], tests: list[TestSet], init: RunPlan | None) -> str | None:
    """Why a run is not made on this task by design (``tests``: the test sets it would be scored on), or ``None``."""
    if cls.uses_target_labels:
        if ctx.odom is None:
            return "an oracle method needs the task's labelled oracle set (oracle:); this task has none"
        if not tests:
            return f"no test set of the task is of the oracle's domain {ctx.odom.root}"
    if cls.uses_target and not cls.uses_target_labels and ctx.tdom is None:
        return "adapts to an unlabelled target pool (target:); this task has none (unseen-domain task)"
    if init is not None and init.skipped:
        return f"its init {init.method_id} is not made on this task ({init.skipped})"
    return None


def _labelled(where: str, ctx: _TaskContext, cls: type[Method], seed: int, val_fraction: float) -> Labelled:
    """The labelled domains a run trains on, split into training and validation cases as the engine splits them:
    the oracle set for an oracle, else every source (the task's explicit cases apply to the first).
    """
    from segshift.engine.splits import split

    if cls.uses_target_labels:
        o = ctx.task.oracle
        tr, va = split(ctx.odom.labelled_cases, val_fraction, seed, o.val_cases, o.train_cases, what=f"{where}: oracle")
        return [(ctx.odom, tr, va)]
    s0 = ctx.task.sources[0]
    out = []
    for i, dom in enumerate(ctx.sources):
        first = i == 0
        tr, va = split(
            dom.labelled_cases,
            val_fraction,
            seed,
            s0.val_cases if first else None,
            s0.train_cases if first else None,
            what=f"{where}: source {dom.root}",
        )
        out.append((dom, tr, va))
    return out


def _check_no_test_case_trained(where: str, tests: Sequence[TestSet], labelled: Labelled, oracle: bool) -> None:
    """Refuse a test case (or another slice group of its patient) that a run trains or selects on."""
    from segshift.engine.splits import group_of

    for dom, tr, va in labelled:
        used = {group_of(c) for c in tr + va}
        for ts in tests:
            leak = [c for c in ts.cases if ts.domain == dom.root.resolve() and group_of(c) in used]
            if leak:
                role = "oracle training/validation" if oracle else "source training/validation"
                raise SegshiftError(
                    f"{where}: test set {ts.name} cases {', '.join(leak)} of {ts.domain} are also "
                    f"{role} cases; test cases must never be trained or selected on"
                )


def _share_training(plans: list[RunPlan]) -> list[RunPlan]:
    """A TTA row trained exactly like a row without TTA predicts with that row's model (and runs after it)."""

    def training(p: RunPlan) -> tuple:
        return (p.method, p.seed, tuple(p.sets), p.steps, p.init.key if p.init is not None else None)

    plain = {training(p): p for p in plans if p.tta is None and not p.skipped}
    for p in plans:
        if p.tta is not None and not p.skipped and training(p) in plain:
            p.train_from = plain[training(p)]
    return [p for p in plans if p.train_from is None] + [p for p in plans if p.train_from is not None]


def train(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The engine's :func:`segshift.engine.trainer.train` (a module-level name, so a test can wrap it)."""
    from segshift.engine import trainer

    return trainer.train(*args, **kwargs)


def _finished_summary(run: Path) -> dict[str, Any] | None:
    f = run / "summary.json"
    if not f.is_file():
        return None
    s = json.loads(f.read_text())
    return s if s.get("finished") and (run / "checkpoints" / "best").is_dir() else None


def _selection(run: Path) -> str | None:
    """The model-selection rule a finished run applied (``summary.json``, else ``run.json``)."""
    for name in ("summary.json", "run.json"):
        f = run / name
        if f.is_file():
            sel = json.loads(f.read_text()).get("selection")
            if sel:
                return str(sel)
    return None


def _steps_trained(run: Path, default: int) -> int:
    """Optimiser steps of all stages (``steps_total`` of the run's summary), else ``default``."""
    s = _finished_summary(run)
    return int(s.get("steps_total", default)) if s else default


def _slices(dom: Domain, cases: Sequence[str]) -> int:
    from segshift.data.cache import _nifti_slices

    return sum(_nifti_slices(dom.image_path(c)) for c in cases)


def run_benchmark(
    suite: Suite, out: str | Path, device: str | None = None, echo: Callable[[str], None] = print, only_plan: bool = False
) -> dict[str, Any]:
    """Run (or continue) ``suite`` into ``out``; see :class:`Benchmark`."""
    return Benchmark(suite, out, device=device, echo=echo).run(only_plan=only_plan)


__all__ = ["Benchmark", "RunPlan", "TestSet", "run_benchmark"]
