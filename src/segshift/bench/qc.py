"""QC validation: do the cheap quality scores of ``qc.csv`` flag the cases a run segmented badly?

Every prediction writes one quality-control row per volume (``predictions/<test>/qc.csv``,
:mod:`segshift.inference.predictor`), computed from the image and the prediction alone, so
it is available where no label is. The benchmark measures how well each score would have
told the bad cases apart, **against the test labels**: this is evaluation, like the Dice
tables, and nothing here feeds back into training, selection or prediction.

**The scores, oriented so that higher = more suspicious** (:data:`SCORES`):

* ``mean_entropy``: mean normalised predictive entropy over the field of view (in [0, 1]);
  an unsure model is more often wrong.
* ``fg_entropy``: the same over pixels within 3 pixels of the predicted foreground (the
  heart's outline). A case with nothing predicted has none; it counts as 1, the maximum (an
  empty prediction is the most suspicious), and the number of such cases is reported.
* ``volume_z_<structure>``: how far the predicted volume of the structure (mL, in the
  input's geometry) lies from the volumes of the *source* training labels:
  ``|ln(v + 1 mL) - mean| / std`` of ``ln(v_ref + 1 mL)`` over the labelled training cases of
  the run's source domain(s) (sample std). Too large and too small are both suspicious. The
  reference uses source labels only: the run's own training cases of its source domains; an
  ORACLE row (trained on target labels) borrows the reference of a non-oracle row of its task
  and seed, so no target label is read for anything but evaluation.
* ``volume_z_max``: the largest of the structures' ``volume_z``: the most anomalous structure.

**The statistics, per run and test set** (and pooled over the rows of a test set), against
each case's Dice averaged over structures (:func:`validate`); for a task with several test
sets also over all of them together (:data:`ALL_TESTS`: what a deployment faces, a mix of
domains the model handles well and badly):

* Spearman's rank correlation rho between score and Dice
  (:func:`segshift.metrics.stats.spearman`): a useful score has rho < 0 (−1: it ranks the
  cases exactly in reverse order of Dice);
* the area under the ROC curve of the score flagging the cases with Dice below the
  threshold (suite ``qc_threshold:``, default :data:`DEFAULT_THRESHOLD`;
  :func:`segshift.metrics.stats.roc_auc`): 1 = every bad case scores above every good one,
  0.5 = chance, below 0.5 = the score points the wrong way.

Small samples are reported as such: with fewer than :data:`MIN_CASES` cases both are
undefined (NaN, ``null`` in JSON), and the AUC is undefined when no case, or every case, is
below the threshold; each undefined value carries a note saying why. The pooled line of a
test set puts every row's cases together, so a case appears once per row: its cases are not
independent samples, and its numbers say how the score separates good from bad
segmentations across models, not per model.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segshift.errors import SegshiftError
from segshift.metrics.stats import csv_value, is_defined, mean_of_all, roc_auc, spearman

DEFAULT_THRESHOLD = 0.7
"""A case "fails" below this mean Dice (over structures), unless the suite says ``qc_threshold:``."""
MIN_CASES = 5
"""Fewer cases than this: no Spearman and no AUC (undefined, with a note)."""
EPS_ML = 1.0
"""Added to every volume (mL) before the logarithm, so an empty structure has a finite, very low log volume."""
POOLED = "pooled (all rows)"
"""The row label of the pooled line of a test set."""
ALL_TESTS = "all test sets"
"""The pseudo test set of a task with several: every test set's cases together (each run's, and pooled)."""

SCORES: dict[str, str] = {
    "mean_entropy": "mean normalised predictive entropy over the field of view",
    "fg_entropy": "mean normalised entropy within 3 px of the predicted foreground (empty prediction: 1)",
    "volume_z_max": "largest |z| over structures of the log predicted volume against the source training labels' log volumes",
}
"""The main scores (shown in the figure), each oriented higher = more suspicious; ``volume_z_<structure>`` follow in the tables."""

ORIENTATION = (
    "every score is oriented so that higher = more suspicious; rho is Spearman's rank correlation of the score "
    "with the case's Dice (mean over structures), so a useful score has rho < 0; AUC is the area under the ROC "
    "curve of the score flagging the cases below the Dice threshold (1 = perfect, 0.5 = chance)"
)


def score_names(structures: Sequence[str]) -> list[str]:
    """The main scores, then ``volume_z_<structure>`` per structure."""
    return [*SCORES, *(f"volume_z_{s}" for s in structures)]


def label_volumes(domain: str | Path, case: str, structures: Sequence[str]) -> dict[str, float]:
    """Volume (mL) of each named structure in a case's label map (the domain's own label ids)."""
    from segshift.data.domain import Domain

    dom = Domain(domain)
    lab = dom.load_label(case)
    if lab is None:
        raise ValueError(f"{dom.root}: case {case} has no label")
    voxel_ml = float(np.prod(lab.spacing)) / 1000.0
    ids = dom.spec.labels
    return {s: float((lab.array == ids[s]).sum()) * voxel_ml if s in ids else math.nan for s in structures}


def volume_reference(volumes: Sequence[Mapping[str, float]], structures: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and sample std of ``ln(v + EPS_ML)`` per structure over reference cases (NaN std under 2 cases)."""
    out = {}
    for s in structures:
        v = np.log(np.asarray([c[s] for c in volumes if is_defined(c.get(s))], dtype=np.float64) + EPS_ML)
        out[s] = {
            "mean": float(v.mean()) if v.size else math.nan,
            "std": float(v.std(ddof=1)) if v.size > 1 else math.nan,
            "n": int(v.size),
        }
    return out


def case_scores(
    qc_row: Mapping[str, Any], reference: Mapping[str, Mapping[str, float]] | None, structures: Sequence[str]
) -> dict[str, float]:
    """The oriented scores of one ``qc.csv`` row (see the module docstring); undefined ones NaN."""

    def num(key: str) -> float:
        v = qc_row.get(key)
        try:
            return float(v) if v not in (None, "", "nan") else math.nan
        except (TypeError, ValueError):
            return math.nan

    out = {"mean_entropy": num("mean_entropy"), "fg_entropy": num("fg_entropy")}
    if not is_defined(out["fg_entropy"]) and is_defined(out["mean_entropy"]):
        out["fg_entropy"] = 1.0  # nothing predicted: no foreground to measure, the most suspicious case
    zs = {}
    for s in structures:
        ref = (reference or {}).get(s, {})
        v, mu, sd = num(f"{s}_ml"), ref.get("mean", math.nan), ref.get("std", math.nan)
        ok = is_defined(v) and is_defined(mu) and is_defined(sd) and sd > 0
        zs[s] = abs(math.log(v + EPS_ML) - mu) / sd if ok else math.nan
    finite_z = [z for z in zs.values() if is_defined(z)]
    out["volume_z_max"] = max(finite_z) if len(finite_z) == len(structures) and finite_z else math.nan
    out.update({f"volume_z_{s}": z for s, z in zs.items()})
    return out


def validate(scores: Sequence[float], dice: Sequence[float], threshold: float, min_cases: int = MIN_CASES) -> dict[str, Any]:
    """Spearman's rho of ``scores`` with ``dice`` and the ROC AUC of ``scores`` flagging ``dice < threshold``.

    Cases with an undefined score or Dice are left out (``n_nan`` counts them). Returns
    ``{"n", "n_nan", "n_below", "spearman", "auc", "note"}``; ``note`` says why a value is
    undefined ("" when both are defined).
    """
    s = np.asarray(scores, dtype=np.float64)
    d = np.asarray(dice, dtype=np.float64)
    keep = np.isfinite(s) & np.isfinite(d)
    s, d = s[keep], d[keep]
    n, below = int(s.size), int((d < threshold).sum())
    out: dict[str, Any] = {"n": n, "n_nan": int(keep.size - n), "n_below": below, "spearman": math.nan, "auc": math.nan, "note": ""}
    if n < min_cases:
        out["note"] = f"n = {n} < {min_cases} cases: undefined"
        return out
    out["spearman"] = spearman(s, d)
    if below == 0:
        out["note"] = f"no case below Dice {threshold:g}: AUC undefined"
    elif below == n:
        out["note"] = f"every case below Dice {threshold:g}: AUC undefined"
    else:
        out["auc"] = roc_auc(s, d < threshold)
    if not is_defined(out["spearman"]):
        out["note"] = "; ".join(x for x in (out["note"], "constant score or Dice: rho undefined") if x)
    return out


# -- the benchmark folder -----------------------------------------------------------------------------------------------
def _train_folder(out: Path, run: Mapping[str, Any]) -> Path:
    return out / (run.get("train_folder") or f"{run['folder']}/train")


def _read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _source_training(out: Path, run: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(domain folder, case) of the labelled training cases of the run's source domains (its ``run.json``)."""
    info_path = _train_folder(out, run) / "run.json"
    if not info_path.is_file():
        return []
    info = json.loads(info_path.read_text(encoding="utf-8"))
    sources = set(info.get("sources") or [])
    plan = (info.get("plan") or {}).get("train") or {}
    return [(dom, c) for dom, cases in plan.items() if dom in sources for c in cases]


def compute_qc(
    out: str | Path,
    rows: Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
    structures: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """The QC validation of a benchmark folder: per-case scores and, per run and test set, rho and AUC.

    Args:
        out: the benchmark folder.
        rows: the long per-case table (:func:`segshift.bench.tables.collect_rows`).
        runs: ``benchmark.json``'s runs (those done are used).
        structures: the structures of the per-case table.
        threshold: a case is "bad" below this mean Dice.

    Returns:
        ``{"threshold", "min_cases", "scores", "orientation", "cases", "validation", "references", "notes"}``:
        ``cases`` one entry per run, test set and case (its Dice and scores), ``validation``
        one per task, test set (and :data:`ALL_TESTS`), row (or the pooled line) and score.
    """
    out = Path(out)
    names = score_names(structures)
    dice: dict[tuple[str, str, str, int], dict[str, list[float]]] = {}
    for r in rows:
        dice.setdefault((r["task"], r["test"], r["method_id"], int(r["seed"])), {}).setdefault(r["case"], []).append(r["dice"])
    done = [r for r in runs if r.get("state") in ("ran", "done") and not r.get("skipped")]
    vol_cache: dict[tuple[str, str], dict[str, float]] = {}
    notes: list[str] = []

    def reference_of(run: Mapping[str, Any]) -> tuple[dict[str, dict[str, float]] | None, str]:
        donor = run
        if run.get("oracle"):  # never a target label: borrow the source reference of a row of its task (same seed first)
            same = [r for r in done if r["task"] == run["task"] and not r.get("oracle")]
            same.sort(key=lambda r: r["seed"] != run["seed"])
            if not same:
                return None, "no non-oracle row in the task to take the source reference from"
            donor = same[0]
        cases = _source_training(out, donor)
        if not cases:
            return None, f"{donor['key']}: no source training cases recorded (train/run.json)"
        try:
            vols = []
            for dom, c in cases:
                if (dom, c) not in vol_cache:
                    vol_cache[dom, c] = label_volumes(dom, c, structures)
                vols.append(vol_cache[dom, c])
        except (OSError, ValueError, SegshiftError) as exc:  # a moved or changed source domain: no volume scores, said so
            return None, f"source labels unreadable ({exc})"
        return volume_reference(vols, structures), f"{len(cases)} source training labels of {donor['key']}"

    cases_out: list[dict[str, Any]] = []
    references: dict[str, Any] = {}
    for run in done:
        bench = out / run["folder"] / "bench.json"
        if not bench.is_file():
            continue
        ref, where = reference_of(run)
        references[run["key"]] = {"from": where, "structures": ref}
        for test in json.loads(bench.read_text(encoding="utf-8"))["tests"]:
            qc_path = out / run["folder"] / "predictions" / test / "qc.csv"
            if not qc_path.is_file():
                notes.append(f"{run['key']}: no {qc_path.relative_to(out)}")
                continue
            per_case = dice.get((run["task"], test, run["method_id"], int(run["seed"])), {})
            for q in _read_csv(qc_path):
                if q["case"] not in per_case:
                    continue
                cases_out.append(
                    {
                        "task": run["task"],
                        "test": test,
                        "method_id": run["method_id"],
                        "label": run.get("label") or run["method_id"],
                        "seed": int(run["seed"]),
                        "oracle": bool(run.get("oracle")),
                        "case": q["case"],
                        "dice": mean_of_all(per_case[q["case"]]),
                        "empty_prediction": all(_zero(q.get(f"{s}_ml")) for s in structures),
                        **case_scores(q, ref, structures),
                    }
                )
    validation: list[dict[str, Any]] = []
    per_test = list(dict.fromkeys((c["task"], c["test"]) for c in cases_out))
    tasks = list(dict.fromkeys(task for task, _ in per_test))
    several = [(task, ALL_TESTS) for task in tasks if sum(t == task for t, _ in per_test) > 1]
    for task, test in per_test + several:
        sel = unit_cases(cases_out, task, test)
        groups = list(dict.fromkeys((c["method_id"], c["seed"]) for c in sel))
        lines = [((mid, seed), [c for c in sel if (c["method_id"], c["seed"]) == (mid, seed)]) for mid, seed in groups]
        lines.append(((POOLED, None), sel))
        for (mid, seed), cs in lines:
            first = cs[0]
            for name in names:
                v = validate([c[name] for c in cs], [c["dice"] for c in cs], threshold)
                validation.append(
                    {
                        "task": task,
                        "test": test,
                        "method_id": mid,
                        "seed": seed,
                        "label": POOLED if mid == POOLED else first["label"],
                        "oracle": mid != POOLED and first["oracle"],
                        "score": name,
                        "n_empty": sum(c["empty_prediction"] for c in cs),
                        **v,
                    }
                )
    return {
        "threshold": float(threshold),
        "min_cases": MIN_CASES,
        "scores": names,
        "main_scores": list(SCORES),
        "descriptions": {
            **SCORES,
            **{f"volume_z_{s}": f"|z| of the log predicted {s} volume against the source training labels'" for s in structures},
        },
        "orientation": ORIENTATION,
        "evaluation": "against the test labels (evaluation only: no score uses a target label)",
        "cases": cases_out,
        "validation": validation,
        "references": references,
        "notes": notes,
    }


def unit_title(task: str, test: str) -> str:
    """``task T, test set S`` (or ``task T, all test sets together``)."""
    return f"task {task}, " + ("all test sets together" if test == ALL_TESTS else f"test set {test}")


def unit_cases(cases: Sequence[Mapping[str, Any]], task: str, test: str) -> list[Mapping[str, Any]]:
    """The per-case entries of one task and test set (:data:`ALL_TESTS`: of every test set of the task)."""
    return [c for c in cases if c["task"] == task and (test == ALL_TESTS or c["test"] == test)]


def _zero(v: Any) -> bool:
    try:
        return float(v) == 0.0
    except (TypeError, ValueError):
        return False


# -- tables ---------------------------------------------------------------------------------------------------------
CASE_COLUMNS = ("task", "test", "method_id", "label", "seed", "oracle", "case", "dice", "empty_prediction")
VALIDATION_COLUMNS = (
    "task",
    "test",
    "method_id",
    "label",
    "seed",
    "oracle",
    "score",
    "n",
    "n_nan",
    "n_below",
    "n_empty",
    "spearman",
    "auc",
    "note",
)


def cases_csv(qc: Mapping[str, Any]) -> str:
    """Text of ``qc_cases.csv``: one line per run, test set and case: its Dice (mean over structures) and every score."""
    cols = [*CASE_COLUMNS, *qc["scores"]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for c in qc["cases"]:
        w.writerow([csv_value(c.get(k, "")) for k in cols])
    return buf.getvalue()


def validation_csv(qc: Mapping[str, Any]) -> str:
    """Text of ``qc_validation.csv``: one line per task, test set, row (and pooled line) and score."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(VALIDATION_COLUMNS)
    for v in qc["validation"]:
        w.writerow([csv_value(v.get(k, "")) if v.get(k) is not None else "" for k in VALIDATION_COLUMNS])
    return buf.getvalue()


def units(qc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (task, test set) pairs with QC numbers, in order."""
    return list(dict.fromkeys((v["task"], v["test"]) for v in qc["validation"]))


def _fmt(v: Any, fmt: str) -> str:
    return format(float(v), fmt) if is_defined(v) else "n/a"


def table_rows(qc: Mapping[str, Any], task: str, test: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one test set's QC table: per row (and pooled) n, n below, then ``rho / AUC`` per score, and the notes."""
    sel = [v for v in qc["validation"] if v["task"] == task and v["test"] == test]
    head = ["row", "seed", "n", f"n < {qc['threshold']:g}"] + [f"{s}: rho / AUC" for s in qc["scores"]] + ["note"]
    body = []
    for key in dict.fromkeys((v["method_id"], v["seed"]) for v in sel):
        by_score = {v["score"]: v for v in sel if (v["method_id"], v["seed"]) == key}
        first = by_score[qc["scores"][0]]
        pieces = [(s, piece) for s, v in by_score.items() for piece in v["note"].split("; ") if piece]
        constant = [s for s, piece in pieces if piece.startswith("constant")]
        notes = list(dict.fromkeys(piece for _, piece in pieces if not piece.startswith("constant")))
        if constant:
            notes.append(f"rho undefined (constant score or Dice): {', '.join(constant)}")
        if first["n_empty"]:
            notes.append(f"{first['n_empty']} empty prediction(s): fg_entropy 1")
        label = first["label"] + (" (ORACLE)" if first["oracle"] and "ORACLE" not in first["label"] else "")
        body.append(
            [label, "" if first["seed"] is None else str(first["seed"]), str(first["n"]), str(first["n_below"])]
            + [f"{_fmt(by_score[s]['spearman'], '+.2f')} / {_fmt(by_score[s]['auc'], '.2f')}" for s in qc["scores"]]
            + ["; ".join(notes)]
        )
    return head, body


def sentence(qc: Mapping[str, Any]) -> str:
    """What the QC tables are (one paragraph)."""
    return (
        f"Evaluation against the test labels: how well the label-free QC scores of qc.csv flag the cases segmented "
        f"with a mean Dice below {qc['threshold']:g} (the suite's qc_threshold). {ORIENTATION[0].upper()}{ORIENTATION[1:]}. "
        f"Undefined (n/a) with fewer than {qc['min_cases']} cases, and the AUC when no case or every case is below the "
        f"threshold. volume_z: |z| of ln(volume + {EPS_ML:g} mL) against the source training labels (source labels only; "
        f"ORACLE rows borrow a non-oracle row's reference). The pooled line puts every row's cases together (a case "
        f"counts once per row: not independent samples); '{ALL_TESTS}' puts the test sets of a task together."
    )


def markdown(qc: Mapping[str, Any]) -> str:
    """The ``## QC validation`` section of ``results.md``."""
    parts = ["## QC validation (evaluation against test labels)", "", sentence(qc), ""]
    for task, test in units(qc):
        parts += [f"### Task `{task}`, " + ("all test sets together" if test == ALL_TESTS else f"test set `{test}`"), ""]
        head, body = table_rows(qc, task, test)
        parts += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body] + [""]
    if qc.get("notes"):
        parts += [f"- {n}" for n in qc["notes"]] + [""]
    return "\n".join(parts)


__all__ = [
    "ALL_TESTS",
    "DEFAULT_THRESHOLD",
    "MIN_CASES",
    "POOLED",
    "SCORES",
    "case_scores",
    "cases_csv",
    "compute_qc",
    "label_volumes",
    "markdown",
    "score_names",
    "table_rows",
    "unit_cases",
    "unit_title",
    "units",
    "validate",
    "validation_csv",
    "volume_reference",
]
