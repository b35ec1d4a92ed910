"""Benchmark tables and statistics from the runs' per-case evaluations.

Everything is computed from one long per-case table (one row per task, test set, method,
seed, case and structure: ``results/per_case.csv``) and the runs' records in
``benchmark.json`` (role, init, steps, model-selection rule):

* per structure and for the mean over structures: Dice, Jaccard, ASSD and HD95, mean ± std
  across test cases (population std, as ``segshift evaluate``). With several seeds a case's
  score is first averaged over seeds (so cases stay the unit of the std and of the tests);
  a case's mean over structures is NaN when one of its structures is NaN;
* rows in the papers' order: the inits first (``source-only (init)``), then every method,
  the oracle last (labelled ``ORACLE`` everywhere);
* each row's **reference**: the init it was warm-started from; for a row trained from
  scratch (and the oracle), the suite's first init. In a suite without inits the reference
  is the ``source-only`` row;
* **Δ vs init**: the row's mean Dice (per structure and over structures) minus its
  reference's, over the same test cases;
* **gap recovered** = (row - reference) / (oracle - reference) on the mean Dice and the mean
  Jaccard (:func:`segshift.metrics.stats.gap_recovered`): 0 for the init, 1 for the oracle;
* paired tests on per-case mean-over-structure scores, every row against its reference and
  the suite's ``compare`` pairs: Wilcoxon signed-rank and paired t-test p-values, percentile
  bootstrap CI of the mean difference, and Holm's correction over all tests of one metric
  (their number is stated);
* steps as ``init + stage`` for a warm-started row, and the model-selection rule each run
  applied (its ``summary.json``'s ``selection``).

Outputs (``OUT/results/``): ``per_case.csv``, ``summary.csv`` (one line per task, test set
and row), ``results.json`` and ``results.md``; and the QC validation
(:mod:`segshift.bench.qc`: how well the label-free QC scores of ``qc.csv`` flag the cases
below the suite's ``qc_threshold``, evaluated against the test labels): ``qc_cases.csv``,
``qc_validation.csv``, ``results.json``'s ``qc`` and a section of ``results.md``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segshift.errors import InputFileError
from segshift.metrics.stats import (
    csv_value,
    describe,
    finite_mean,
    gap_recovered,
    holm,
    is_defined,
    mean_of_all,
    nan_to_none,
    paired_comparison,
)
from segshift.utils.atomic import write_json, write_text

METRICS = ("dice", "jaccard", "assd_mm", "hd95_mm")
HEADERS = {"dice": "Dice", "jaccard": "Jaccard", "assd_mm": "ASSD mm", "hd95_mm": "HD95 mm"}
PER_CASE_COLUMNS = ("task", "test", "method_id", "method", "oracle", "role", "init", "seed", "case", "structure", *METRICS, "status")
MEAN = "mean"
"""The pseudo-structure holding each case's mean over structures."""
BASELINE = "source-only"
"""The reference row of a suite without inits."""
ROLES = ("init", "method", "oracle")


def _float(v: Any) -> float:
    return math.nan if v in (None, "", "nan") else float(v)


def run_role(run: Mapping[str, Any]) -> str:
    """``init``, ``method`` or ``oracle`` (benchmarks written before inits existed have no role)."""
    return run.get("role") or ("oracle" if run.get("oracle") else "method")


def run_label(run: Mapping[str, Any]) -> str:
    """A run's row label (``source-only (init)``, ``target-oracle (ORACLE)``, else its id)."""
    return run.get("label") or label(run["method_id"], bool(run.get("oracle")))


def collect_rows(out: str | Path) -> list[dict[str, Any]]:
    """The long per-case table of a benchmark folder (runs that are done, in suite order)."""
    out = Path(out)
    doc = json.loads((out / "benchmark.json").read_text())
    rows: list[dict[str, Any]] = []
    for r in doc["runs"]:
        if r["state"] not in ("ran", "done"):
            continue
        done = json.loads((out / r["folder"] / "bench.json").read_text())
        for test in done["tests"]:
            path = out / r["folder"] / "evaluation" / test / "per_case.csv"
            if not path.is_file():
                raise InputFileError(path, "missing: the run is marked done but has no evaluation")
            for row in csv.DictReader(io.StringIO(path.read_text())):
                rows.append(
                    {
                        "task": r["task"],
                        "test": test,
                        "method_id": r["method_id"],
                        "method": r["method"],
                        "oracle": bool(r["oracle"]),
                        "role": run_role(r),
                        "init": r.get("init") or "",
                        "seed": int(r["seed"]),
                        "case": row["case"],
                        "structure": row["structure"],
                        **{m: _float(row[m]) for m in METRICS},
                        "status": row["status"],
                    }
                )
    return rows


def per_case_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """Text of ``per_case.csv`` (full-precision floats, NaN as ``nan``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PER_CASE_COLUMNS)
    for r in rows:
        w.writerow([csv_value(r.get(c, "")) for c in PER_CASE_COLUMNS])
    return buf.getvalue()


def _case_scores(rows: Sequence[Mapping[str, Any]], structures: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Structure (and MEAN) -> case -> metric -> seed-averaged score."""
    acc: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        for m in METRICS:
            acc.setdefault((r["structure"], r["case"], m), []).append(r[m])
    out: dict[str, dict[str, dict[str, float]]] = {s: {} for s in structures}
    for (s, c, m), vals in acc.items():
        out[s].setdefault(c, {})[m] = mean_of_all(vals)  # undefined in one seed: undefined (never a mean of fewer seeds)
    cases = sorted({c for s in structures for c in out[s]})
    out[MEAN] = {
        c: {m: mean_of_all([out[s][c][m] for s in structures]) if all(c in out[s] for s in structures) else math.nan for m in METRICS}
        for c in cases
    }
    return out


def _run_meta(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, row id) -> role, init, label, steps, selection of its first finished seed, and its init's steps."""
    done = [r for r in runs if r.get("state") in ("ran", "done")]
    steps = {(r["task"], r["method_id"], r["seed"]): r.get("steps") for r in done}
    meta: dict[tuple[str, str], dict[str, Any]] = {}
    for r in done:
        if (r["task"], r["method_id"]) in meta:
            continue
        init = r.get("init")
        meta[r["task"], r["method_id"]] = {
            "role": run_role(r),
            "init": init,
            "label": run_label(r),
            "selection": r.get("selection"),
            "steps": r.get("steps"),
            "init_steps": steps.get((r["task"], init, r["seed"])) if init else None,
        }
    return meta


def steps_text(m: Mapping[str, Any]) -> str:
    """``init + stage`` for a warm-started row (e.g. ``1500 + 300``), else its own steps."""
    own = m.get("steps")
    if own is None:
        return "n/a"
    return f"{m['init_steps']} + {own}" if m.get("init") and m.get("init_steps") is not None else str(own)


def _paired_delta(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]], metric: str) -> float:
    """Mean over common cases (both finite) of ``a - b``."""
    d = [a[c][metric] - b[c][metric] for c in sorted(set(a) & set(b)) if is_defined(a[c][metric]) and is_defined(b[c][metric])]
    return float(np.mean(d)) if d else math.nan


def compute(
    rows: Sequence[Mapping[str, Any]],
    compare: Sequence[Sequence[str]] = (),
    n_boot: int = 10000,
    level: float = 0.95,
    runs: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Tables and tests from the long per-case rows (see the module docstring); the content of ``results.json``.

    Args:
        rows: per-case rows (:func:`collect_rows`).
        compare: extra pairs of row ids to test against each other.
        n_boot, level: the bootstrap interval.
        runs: ``benchmark.json``'s runs (roles, inits, steps, selection); without them every row
            is a method (oracles from the rows' flag) and the reference is ``source-only``.
    """
    meta_runs = _run_meta(runs)
    units: list[tuple[str, str]] = []
    meta: dict[tuple[str, str], dict[str, Any]] = {}
    structures: list[str] = []
    for r in rows:
        if (r["task"], r["test"]) not in units:
            units.append((r["task"], r["test"]))
        key = (r["task"], r["method_id"])
        if key not in meta:
            role = r.get("role") or ("oracle" if r["oracle"] else "method")
            meta[key] = {
                "method": r["method"],
                "oracle": bool(r["oracle"]),
                "role": role,
                "init": r.get("init") or None,
                "label": label(r["method_id"], bool(r["oracle"])) if role != "init" else f"{r['method']} (init)",
                "steps": None,
                "init_steps": None,
                "selection": None,
            }
            meta[key].update({k: v for k, v in meta_runs.get(key, {}).items() if v is not None})
        if r["structure"] not in structures:
            structures.append(r["structure"])
    out_units, tests = [], []
    for task, test in units:
        sel = [r for r in rows if r["task"] == task and r["test"] == test]
        ids = list(dict.fromkeys(r["method_id"] for r in sel))
        m_of = {i: meta[task, i] for i in ids}
        inits = [i for i in ids if m_of[i]["role"] == "init"]
        # stable: suite order within each group; without inits source-only leads
        ids.sort(
            key=lambda i: 0 if m_of[i]["role"] == "init" or (not inits and m_of[i]["method"] == BASELINE) else 2 if m_of[i]["oracle"] else 1
        )
        base = inits[0] if inits else next((i for i in ids if m_of[i]["method"] == BASELINE), None)
        oracle = next((i for i in ids if m_of[i]["oracle"]), None)

        def reference(i: str, base: str | None = base, m_of: dict[str, Any] = m_of, ids: Sequence[str] = ids) -> str | None:
            if i == base or m_of[i]["role"] == "init":
                return None
            own = m_of[i]["init"]
            return own if own in ids else base

        scores = {i: _case_scores([r for r in sel if r["method_id"] == i], structures) for i in ids}
        methods = []
        for i in ids:
            st = {s: {m: describe([v[m] for v in scores[i][s].values()]) for m in METRICS} for s in [*structures, MEAN]}
            ref = reference(i)
            anchor = ref or (i if m_of[i]["role"] == "init" or i == base else None)  # an init's own gap is 0
            gap = {
                m: (
                    gap_recovered(st[MEAN][m]["mean"], methods_mean(scores, anchor, m), methods_mean(scores, oracle, m))
                    if anchor and oracle
                    else math.nan
                )
                for m in ("dice", "jaccard")
            }
            delta = {
                s: {m: (_paired_delta(scores[i][s], scores[ref][s], m) if ref else math.nan) for m in ("dice", "jaccard")}
                for s in [*structures, MEAN]
            }
            seeds = sorted({r["seed"] for r in sel if r["method_id"] == i})
            per_seed = [finite_mean(r["dice"] for r in sel if r["method_id"] == i and r["seed"] == s) for s in seeds]
            m = m_of[i]
            methods.append(
                {
                    "id": i,
                    "method": m["method"],
                    "oracle": m["oracle"],
                    "role": m["role"],
                    "init": m["init"],
                    "label": m["label"],
                    "reference": ref,
                    "seeds": seeds,
                    "n_cases": len(scores[i][MEAN]),
                    "stats": st,
                    "delta": delta,
                    "gap_recovered": gap,
                    "seed_mean_dice": per_seed,
                    "steps": m["steps"],
                    "init_steps": m["init_steps"],
                    "steps_text": steps_text(m),
                    "selection": m["selection"],
                }
            )
        out_units.append(
            {
                "task": task,
                "test": test,
                "baseline": base,
                "inits": inits,
                "oracle": oracle,
                "methods": methods,
                "cases": sorted(scores[ids[0]][MEAN]),
            }
        )
        pairs = [(i, reference(i)) for i in ids if reference(i)]
        pairs += [(a, b) for a, b in compare if a in ids and b in ids and (a, b) not in pairs]
        for a, b in pairs:
            cases = sorted(set(scores[a][MEAN]) & set(scores[b][MEAN]))
            for m in METRICS:
                pc = paired_comparison(
                    [scores[a][MEAN][c][m] for c in cases], [scores[b][MEAN][c][m] for c in cases], n_boot=n_boot, level=level
                )
                tests.append(
                    {
                        "task": task,
                        "test": test,
                        "a": a,
                        "b": b,
                        "a_oracle": m_of[a]["oracle"],
                        "b_oracle": m_of[b]["oracle"],
                        "a_label": m_of[a]["label"],
                        "b_label": m_of[b]["label"],
                        "vs_reference": reference(a) == b,
                        "metric": m,
                        **pc.to_dict(),
                    }
                )
    n_tests = {}
    for m in METRICS:
        fam = [t for t in tests if t["metric"] == m]
        for key in ("wilcoxon_p", "t_p"):
            for t, adj in zip(fam, holm([t[key] for t in fam])):
                t[f"{key}_holm"] = adj
        n_tests[m] = sum(1 for t in fam if is_defined(t["wilcoxon_p"]))
    has_inits = any(u["inits"] for u in out_units)
    return {
        "format": "segshift-benchmark-results",
        "version": 2,
        "structures": structures,
        "metrics": list(METRICS),
        "units": out_units,
        "comparisons": tests,
        "n_comparisons": n_tests,
        "bootstrap": {"n_boot": n_boot, "level": level},
        "reference": "each row's init (rows from scratch and the oracle: the first init)" if has_inits else "source-only",
        "std": "population standard deviation across test cases (ddof=0); seeds averaged per case first",
        "correction": "Holm over all comparisons of one metric (n_comparisons)",
    }


def methods_mean(scores: Mapping[str, Any], mid: str | None, metric: str) -> float:
    """Mean over cases of one method's mean-over-structures score (NaN without the method)."""
    if mid is None:
        return math.nan
    return describe([v[metric] for v in scores[mid][MEAN].values()])["mean"]


def label(method_id: str, oracle: bool) -> str:
    """A row label: oracle rows say so."""
    return f"{method_id} (ORACLE)" if oracle else method_id


def cell(stats: Mapping[str, Any], metric: str) -> str:
    """``mean ± std`` (3 decimals for overlaps, 2 for mm), ``n/a`` without values, ``(k NaN)`` when some were undefined."""
    d = 3 if metric in ("dice", "jaccard") else 2
    if not is_defined(stats["mean"]):
        text = "n/a"
    else:
        text = f"{stats['mean']:.{d}f} ± {stats['std']:.{d}f}"
    return text + (f" ({stats['n_nan']} NaN)" if stats.get("n_nan") else "")


def _num(v: float, fmt: str = ".3f") -> str:
    return "n/a" if not is_defined(v) else format(v, fmt)


def _p(v: float) -> str:
    return "n/a" if not is_defined(v) else (f"{v:.3g}" if v >= 1e-3 else f"{v:.1e}")


def vs_name(unit: Mapping[str, Any]) -> str:
    """What the Δ columns compare against: ``init`` or ``source-only``."""
    return "init" if unit.get("inits") else BASELINE


def table_rows(unit: Mapping[str, Any], structures: Sequence[str], metrics: Sequence[str], gap: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one unit's table for ``metrics`` (per structure, then the mean), like the papers' tables.

    With ``gap`` (the overlap table) the row also has Δ mean Dice against its reference (its
    init), the gap recovered, the steps (``init + stage``) and the model-selection rule.
    """
    head = ["method"] + [f"{HEADERS[m]} {s}" for m in metrics for s in [*structures, MEAN]]
    if gap:
        head += [f"Δ Dice vs {vs_name(unit)}", "gap recovered (Dice)", "steps", "selection"]
    body = []
    for m in unit["methods"]:
        row = [m.get("label") or label(m["id"], m["oracle"])] + [cell(m["stats"][s][k], k) for k in metrics for s in [*structures, MEAN]]
        if gap:
            delta = m.get("delta", {}).get(MEAN, {}).get("dice", math.nan)
            row += [
                "—" if not m.get("reference") else _signed(delta),
                _num(m["gap_recovered"]["dice"], ".2f"),
                m.get("steps_text") or "n/a",
                m.get("selection") or "n/a",
            ]
        body.append(row)
    return head, body


def _signed(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if not is_defined(v) else format(v, "+" + fmt)


def versus_rows(unit: Mapping[str, Any], results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a unit's "against the init" table: Δ Dice per structure and of the mean
    (bootstrap CI), the paired tests on the mean Dice (Holm-adjusted too), and the gap recovered.
    """
    structures = results["structures"]
    head = (
        ["method", "vs"]
        + [f"Δ Dice {s}" for s in structures]
        + ["Δ Dice mean [95% CI]", "Wilcoxon p", "Holm", "t-test p", "Holm", "gap recovered"]
    )
    by_label = {m["id"]: m.get("label") or label(m["id"], m["oracle"]) for m in unit["methods"]}
    tests = {
        (t["a"], t["b"]): t
        for t in results["comparisons"]
        if t["task"] == unit["task"] and t["test"] == unit["test"] and t["metric"] == "dice"
    }
    body = []
    for m in unit["methods"]:
        ref = m.get("reference")
        if not ref:
            continue
        t = tests.get((m["id"], ref))
        ci = f"{_signed(t['mean_diff'])} [{_num(t['ci_low'])}, {_num(t['ci_high'])}]" if t else "n/a"
        body.append(
            [by_label[m["id"]], by_label[ref]]
            + [_signed(m["delta"][s]["dice"]) for s in structures]
            + [ci]
            + ([_p(t["wilcoxon_p"]), _p(t["wilcoxon_p_holm"]), _p(t["t_p"]), _p(t["t_p_holm"])] if t else ["n/a"] * 4)
            + [_num(m["gap_recovered"]["dice"], ".2f")]
        )
    return head, body


def comparison_rows(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paired-tests table."""
    head = ["task", "test", "A vs B", "metric", "n", "mean A", "mean B", "A - B [CI]", "Wilcoxon p", "Holm", "t-test p", "Holm"]
    body = []
    for t in results["comparisons"]:
        d = ".3f" if t["metric"] in ("dice", "jaccard") else ".2f"
        a = t.get("a_label") or label(t["a"], t["a_oracle"])
        b = t.get("b_label") or label(t["b"], t["b_oracle"])
        body.append(
            [
                t["task"],
                t["test"],
                f"{a} vs {b}",
                HEADERS[t["metric"]],
                str(t["n"]),
                _num(t["mean_a"], d),
                _num(t["mean_b"], d),
                f"{_num(t['mean_diff'], d)} [{_num(t['ci_low'], d)}, {_num(t['ci_high'], d)}]",
                _p(t["wilcoxon_p"]),
                _p(t["wilcoxon_p_holm"]),
                _p(t["t_p"]),
                _p(t["t_p_holm"]),
            ]
        )
    return head, body


def runs_rows(runs: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the runs table: init, steps, selection, wall seconds of training (all sessions), prediction, evaluation."""
    head = ["run", "init", "steps", "trained", "selection", "TTA", "train s", "predict s", "evaluate s"]
    fmt = lambda v: "n/a" if v is None else f"{float(v):.1f}"  # noqa: E731
    return head, [
        [
            f"{r['key']}" + (" (ORACLE)" if r["oracle"] else " (INIT)" if run_role(r) == "init" else ""),
            r.get("init") or "",
            str(r.get("steps", "")),
            str(r.get("trained", "")),
            str(r.get("selection") or "n/a"),
            _tta_text(r.get("tta")),
            fmt(r.get("train_s")),
            fmt(r.get("predict_s")),
            fmt(r.get("evaluate_s")),
        ]
        for r in runs
    ]


def _tta_text(tta: Mapping[str, Any] | None) -> str:
    if not tta:
        return ""
    return f"tent {tta['steps']} x lr {tta['lr']:g}, alpha {tta.get('alpha', 1)}" if tta["mode"] == "tent" else str(tta["mode"])


def gap_note(unit: Mapping[str, Any]) -> str:
    """Why a task/test unit has no gap recovered ("" when it has one)."""
    ref = "an init" if unit.get("inits") else "a source-only"
    if unit["oracle"] is None:
        return (
            f"Gap recovered needs {ref} and an oracle row; this test set has no oracle row (an oracle is evaluated on its own domain only)."
        )
    return (
        f"Gap recovered needs {ref} and an oracle row; this test set has no {ref.split(' ', 1)[1]} row." if unit["baseline"] is None else ""
    )


def reference_note(unit: Mapping[str, Any]) -> str:
    """How to read the Δ, the tests and the gap of a unit (one sentence)."""
    if unit.get("inits"):
        return (
            "Δ, paired tests and gap recovered are against each row's init (rows trained from scratch, and the oracle, "
            "against the first init, listed first); gap recovered = (row - init) / (oracle - init). Steps: init + stage."
        )
    return "Δ, paired tests and gap recovered are against source-only; gap recovered = (row - source-only) / (oracle - source-only)."


def _md(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def comparisons_sentence(results: Mapping[str, Any]) -> str:
    """What the tests are and how many were made."""
    n = results["n_comparisons"]
    b = results["bootstrap"]
    ref = "its init (from-scratch rows and the oracle: the first init)" if results.get("reference", BASELINE) != BASELINE else "source-only"
    return (
        f"Paired tests on per-case scores (mean over structures; seeds averaged per case): every row against "
        f"{ref}, and the suite's chosen pairs. {n['dice']} comparisons per metric "
        f"({', '.join(f'{HEADERS[m]} {k}' for m, k in n.items())}); Holm's correction over the comparisons of each metric. "
        f"Wilcoxon signed-rank and paired t-test, two-sided; {int(b['level'] * 100)}% percentile bootstrap interval of the "
        f"mean difference ({b['n_boot']} resamples)."
    )


def markdown(results: Mapping[str, Any], skipped: Sequence[Mapping[str, Any]] = ()) -> str:
    """``results.md``: per task and test set an overlap table, a distance table and the table against the init;
    then every paired test, the QC validation, the runs and what was not run.
    """
    s = results["structures"]
    parts = ["# Benchmark results", ""]
    for u in results["units"]:
        seeds = sorted({x for m in u["methods"] for x in m["seeds"]})
        parts += [f"## Task `{u['task']}`, test set `{u['test']}` ({len(u['cases'])} cases; seeds {', '.join(map(str, seeds))})", ""]
        parts += [_md(*table_rows(u, s, ("dice", "jaccard"), gap=True)), "", _md(*table_rows(u, s, ("assd_mm", "hd95_mm"), gap=False)), ""]
        head, body = versus_rows(u, results)
        if body:
            parts += [f"Against the {vs_name(u)} (mean Dice):", "", _md(head, body), ""]
        parts += [reference_note(u), ""]
        if gap_note(u):
            parts += [gap_note(u), ""]
    parts += ["## Paired tests", "", comparisons_sentence(results), "", _md(*comparison_rows(results)), ""]
    if results.get("qc"):
        from segshift.bench.qc import markdown as qc_markdown

        parts += [qc_markdown(results["qc"]), ""]
    runs = [r for r in results.get("runs", []) if r.get("state") in ("ran", "done")]
    if runs:
        parts += ["## Runs and wall times", "", _md(*runs_rows(runs)), ""]
    if skipped:
        parts += ["## Not run", ""] + [f"- `{r['method_id']}` on `{r['task']}`: {r['skipped']}" for r in skipped] + [""]
    return "\n".join(parts)


SUMMARY_COLUMNS = ("task", "test", "row", "label", "role", "method", "init", "reference", "seeds", "n_cases", "steps", "selection")


def summary_csv(results: Mapping[str, Any]) -> str:
    """Text of ``summary.csv``: one line per task, test set and row; every mean and std, the Δ against the
    reference, the gap recovered, and the paired test of the mean Dice against the reference.
    """
    structures = [*results["structures"], MEAN]
    cols = list(SUMMARY_COLUMNS)
    cols += [f"{m}_{s}_{k}" for m in METRICS for s in structures for k in ("mean", "std")]
    cols += [f"delta_dice_{s}" for s in structures] + ["gap_recovered_dice", "gap_recovered_jaccard"]
    cols += [
        "vs_reference_ci_low",
        "vs_reference_ci_high",
        "vs_reference_wilcoxon_p",
        "vs_reference_wilcoxon_p_holm",
        "vs_reference_t_p",
        "vs_reference_t_p_holm",
    ]
    tests = {(t["task"], t["test"], t["a"], t["b"]): t for t in results["comparisons"] if t["metric"] == "dice"}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for u in results["units"]:
        for m in u["methods"]:
            t = tests.get((u["task"], u["test"], m["id"], m.get("reference")), {})
            vals = [
                u["task"],
                u["test"],
                m["id"],
                m.get("label", m["id"]),
                m.get("role", ""),
                m["method"],
                m.get("init") or "",
                m.get("reference") or "",
                " ".join(map(str, m["seeds"])),
                m["n_cases"],
                m.get("steps_text", ""),
                m.get("selection") or "",
            ]
            vals += [m["stats"][s][k][x] for k in METRICS for s in structures for x in ("mean", "std")]
            vals += [m.get("delta", {}).get(s, {}).get("dice", math.nan) for s in structures]
            vals += [m["gap_recovered"]["dice"], m["gap_recovered"]["jaccard"]]
            vals += [t.get(k, math.nan) for k in ("ci_low", "ci_high", "wilcoxon_p", "wilcoxon_p_holm", "t_p", "t_p_holm")]
            w.writerow([csv_value(v) for v in vals])
    return buf.getvalue()


def write_tables(out: str | Path, n_boot: int = 10000) -> dict[str, Any]:
    """Write ``OUT/results/{per_case.csv,summary.csv,results.json,results.md}`` from a benchmark folder; returns the results."""
    out = Path(out)
    doc = json.loads((out / "benchmark.json").read_text())
    rows = collect_rows(out)
    if not rows:
        raise InputFileError(out, "no finished runs to tabulate")
    results = compute(rows, doc.get("compare") or [], n_boot=n_boot, runs=doc["runs"])
    skipped = [r for r in doc["runs"] if r["state"] == "skipped"]
    # one entry per (task, method) is enough for the list of runs not made
    seen, unique = set(), []
    for r in skipped:
        if (r["task"], r["method_id"]) not in seen:
            seen.add((r["task"], r["method_id"]))
            unique.append(r)
    results["skipped"] = [{k: r[k] for k in ("task", "method_id", "method", "skipped")} for r in unique]
    results["runs"] = doc["runs"]
    from segshift.bench import qc as QC

    results["qc"] = QC.compute_qc(out, rows, doc["runs"], results["structures"], doc.get("qc_threshold", QC.DEFAULT_THRESHOLD))
    csv_text, md_text = per_case_csv(rows), markdown(results, unique)
    write_text(out / "results" / "per_case.csv", csv_text)
    write_text(out / "results" / "summary.csv", summary_csv(results))
    write_text(out / "results" / "qc_cases.csv", QC.cases_csv(results["qc"]))
    write_text(out / "results" / "qc_validation.csv", QC.validation_csv(results["qc"]))
    write_json(out / "results" / "results.json", nan_to_none(results))
    write_text(out / "results" / "results.md", md_text)
    return results
