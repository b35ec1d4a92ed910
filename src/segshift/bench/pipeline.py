"""Predict a labelled test set with a trained run and evaluate it: the one implementation.

Every place that scores a trained model (the benchmark runner, the demo, ``segshift test``,
the scripts under ``scripts/``) goes through :class:`RunTester`, so the choices that decide
a number are made once:

* **Which parts of the model apply.** What a run learnt of its target domain (a translator,
  ``Method.can_translate``; target batch-norm statistics) is applied only to a test set of
  the run's *own* target domain (:func:`segshift.inference.predictor.is_run_target`: the same
  folder, or a copy/re-import with the same name, sequence and vendor). Any other test set
  (the source, an unseen domain) is segmented untranslated with the source statistics. The
  decision can be forced (``target_domain=True/False``) for inputs whose domain is known
  otherwise; the result records it (``translate``).
* **Test-time adaptation** (:class:`segshift.inference.tta.TTAConfig`), per volume.
* **Prediction** of exactly the test cases (:func:`segshift.inference.predict_files.predict_paths`):
  masks in each input's own geometry, ``qc.csv``.
* **Evaluation** of those masks against the domain's labels in mm
  (:func:`segshift.metrics.evaluate.evaluate_folders`: Dice, Jaccard, ASSD, HD95 per case and
  structure; a structure missing from one mask scores the volume diagonal), written as
  ``per_case.csv`` and ``summary.json``.

Example:
    >>> tester = RunTester("runs/adaptseg", device="cpu")                        # doctest: +SKIP
    >>> res = tester.run(TestSet("lge", Path("data/mscmr_lge"), ["patient01"]),  # doctest: +SKIP
    ...                  Path("out/predictions/lge"), Path("out/evaluation/lge"))
    >>> res.summary["overall"]["dice"]["mean"]                                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segshift.errors import InputFileError, SegshiftError

if TYPE_CHECKING:  # torch-free import: the predictor is built on first use
    from segshift.inference.predictor import Predictor
    from segshift.inference.tta import TTAConfig
    from segshift.metrics.evaluate import EvaluationResult


@dataclasses.dataclass
class TestSet:
    """A labelled test set: a domain folder and the case ids to score (each must have a label)."""

    __test__ = False  # not a pytest test class

    name: str
    domain: Path
    cases: list[str]


@dataclasses.dataclass
class TestResult:
    """What :meth:`RunTester.run` did for one test set."""

    __test__ = False

    test: TestSet
    translate: bool
    """Whether the run's target-domain parts (translator, target statistics) applied."""
    predictions: Path
    evaluation: EvaluationResult
    predict_s: float
    evaluate_s: float
    qc: list[dict[str, Any]] = dataclasses.field(default_factory=list, repr=False)
    warnings: list[str] = dataclasses.field(default_factory=list)
    """The predictor's lines for stderr (a run that has not finished training, a TTA caveat)."""

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Per-case, per-structure metric rows (``case``, ``structure``, ``dice``, ... ``status``)."""
        return self.evaluation.rows

    @property
    def summary(self) -> dict[str, Any]:
        """Per-structure and overall statistics (:func:`segshift.metrics.surface.summarise`)."""
        return self.evaluation.summary

    @property
    def mean_dice(self) -> float:
        return float(self.summary["overall"]["dice"]["mean"])


class RunTester:
    """A trained run folder, ready to predict and evaluate labelled test sets.

    Predictors are built on first use, one for the run's own target domain and one for any
    other domain, and reused across test sets.

    Args:
        run: the engine's run folder (``config.yaml``, ``run.json``, ``checkpoints/``).
        device: ``cpu``, ``cuda``, ... (default: GPU if available).
        tta: test-time adaptation at prediction, or ``None``.
        checkpoint: ``best`` (model selection) or ``last``.
        batch_size: slices per forward pass.
    """

    def __init__(
        self, run: str | Path, device: str | None = None, tta: TTAConfig | None = None, checkpoint: str = "best", batch_size: int = 32
    ) -> None:
        self.run_dir = Path(run)
        info = self.run_dir / "run.json"
        if not info.is_file():
            raise InputFileError(self.run_dir, "is not a finished segshift run folder (no run.json)")
        self.run_info: dict[str, Any] = json.loads(info.read_text(encoding="utf-8"))
        self.device, self.tta, self.checkpoint, self.batch_size = device, tta, checkpoint, batch_size
        self._predictors: dict[bool, Predictor] = {}

    def is_target(self, domain: str | Path) -> bool:
        """Whether ``domain`` is the run's own target domain (its translator and statistics apply)."""
        from segshift.inference.predictor import is_run_target

        return is_run_target(self.run_info, domain)

    def predictor(self, target_domain: bool) -> Predictor:
        """The (cached) predictor for inputs of the run's target domain or of any other."""
        if target_domain not in self._predictors:
            from segshift.inference.predictor import Predictor

            self._predictors[target_domain] = Predictor(
                self.run_dir,
                checkpoint=self.checkpoint,
                device=self.device,
                batch_size=self.batch_size,
                target_domain=target_domain,
                tta=self.tta,
            )
        return self._predictors[target_domain]

    def run(
        self,
        test: TestSet,
        predictions: str | Path,
        evaluation: str | Path | None = None,
        target_domain: bool | None = None,
        overwrite: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> TestResult:
        """Predict ``test``'s cases into ``predictions`` and evaluate them against the domain's labels.

        Args:
            test: the domain folder and the case ids (all labelled).
            predictions: folder for the masks and ``qc.csv`` (replaced when ``overwrite``).
            evaluation: folder for ``per_case.csv`` and ``summary.json`` (``None``: not written).
            target_domain: ``None`` (decide with :meth:`is_target`), or force it.
            overwrite: replace an existing ``predictions`` folder.
            progress: called with each case id before it is predicted.

        Returns:
            The evaluation (per-case rows and summary), the translate decision and the timings.

        Raises:
            SegshiftError: a test case without a label, or a case the domain does not have.
        """
        from segshift.inference.predict_files import predict_paths
        from segshift.metrics.evaluate import evaluate_folders, write_evaluation

        if not test.cases:
            raise SegshiftError(f"test set {test.name}: no cases")
        translate = self.is_target(test.domain) if target_domain is None else bool(target_domain)
        predictions = Path(predictions)
        t0 = time.perf_counter()
        qc = predict_paths(
            self.predictor(translate), test.domain, predictions, overwrite=overwrite, progress=progress, cases=list(test.cases)
        )
        t1 = time.perf_counter()
        res = evaluate_folders(predictions, test.domain, cases=list(test.cases))
        if evaluation is not None:
            write_evaluation(res, evaluation)
        return TestResult(
            test, translate, predictions, res, t1 - t0, time.perf_counter() - t1, qc, list(self.predictor(translate).warnings)
        )


def predict_and_evaluate(
    run: str | Path,
    domain: str | Path,
    cases: Sequence[str] | str | None,
    out: str | Path,
    name: str | None = None,
    device: str | None = None,
    tta: TTAConfig | None = None,
    target_domain: bool | None = None,
    checkpoint: str = "best",
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> TestResult:
    """One run on one labelled test set: ``OUT/predictions/`` (masks, ``qc.csv``) and ``OUT/evaluation/``
    (``per_case.csv``, ``summary.json``); what ``segshift test`` does.

    ``cases`` are ids, a regex (full match) or ``None`` (every labelled case of the domain).

    Raises:
        SegshiftError: ``out`` holds files and ``overwrite`` is false, a selected case has no
            label, or the selection is empty.
    """
    from segshift.data.domain import Domain
    from segshift.engine.splits import select
    from segshift.utils.atomic import check_disjoint

    out = Path(out)
    check_disjoint(out, [run, domain], "--out folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SegshiftError(f"{out}: exists and is not empty (use --overwrite to replace its predictions and evaluation)")
    dom = Domain(domain)
    chosen = dom.labelled_cases if cases is None else select(dom.cases, cases, "cases")
    unlabelled = [c for c in chosen if c not in set(dom.labelled_cases)]
    if unlabelled or not chosen:
        raise SegshiftError(
            f"{dom.root}: cases without labels: {', '.join(unlabelled) or '(none selected)'}; a test set needs a label for every case"
        )
    tester = RunTester(run, device=device, tta=tta, checkpoint=checkpoint)
    test = TestSet(name or dom.root.name, dom.root.resolve(), list(chosen))
    return tester.run(test, out / "predictions", out / "evaluation", target_domain=target_domain, overwrite=True, progress=progress)


__all__ = ["RunTester", "TestResult", "TestSet", "predict_and_evaluate"]
