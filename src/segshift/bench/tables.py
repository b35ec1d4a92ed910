"""Benchmark tables and statistics from the runs' per-case evaluations.

Everything is computed from one long per-case table (one row per task, test set, method,
seed, case and structure: ``results/per_case.csv``):

* per structure and for the mean over structures: Dice, Jaccard, ASSD and HD95, mean ± std
  across test cases (population std, as ``segshift evaluate``). With several seeds a case's
  score is first averaged over seeds (so cases stay the unit of the std and of the tests);
  a case's mean over structures is NaN when one of its structures is NaN;
* gap recovered = (method - source-only) / (oracle - source-only) on the mean Dice and the
  mean Jaccard, per task and test set (:func:`segshift.metrics.stats.gap_recovered`);
* paired tests on per-case mean-over-structure scores, every method against source-only
  and the suite's ``compare`` pairs: Wilcoxon signed-rank and paired t-test p-values,
  percentile bootstrap CI of the mean difference, and Holm's correction over all tests of
  one metric (their number is stated). Oracle rows are labelled ``ORACLE`` everywhere.

Outputs (``OUT/results/``): ``per_case.csv``, ``results.json`` and ``results.md``.
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
from segshift.metrics.stats import gap_recovered, holm, paired_comparison
from segshift.utils.atomic import write_json, write_text

METRICS = ("dice", "jaccard", "assd_mm", "hd95_mm")
HEADERS = {"dice": "Dice", "jaccard": "Jaccard", "assd_mm": "ASSD mm", "hd95_mm": "HD95 mm"}
PER_CASE_COLUMNS = ("task", "test", "method_id", "method", "oracle", "seed", "case", "structure", *METRICS, "status")
MEAN = "mean"
"""The pseudo-structure holding each case's mean over structures."""
BASELINE = "source-only"


def _float(v: Any) -> float:
    return math.nan if v in (None, "", "nan") else float(v)


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
                rows.append({"task": r["task"], "test": test, "method_id": r["method_id"], "method": r["method"],
                             "oracle": bool(r["oracle"]), "seed": int(r["seed"]), "case": row["case"],
                             "structure": row["structure"], **{m: _float(row[m]) for m in METRICS}, "status": row["status"]})
    return rows


def per_case_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """Text of ``per_case.csv`` (full-precision floats, NaN as ``nan``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PER_CASE_COLUMNS)
    for r in rows:
        w.writerow(["nan" if isinstance(r[c], float) and math.isnan(r[c]) else r[c] for c in PER_CASE_COLUMNS])
    return buf.getvalue()


def _stats(values: Sequence[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=float)
    ok = a[np.isfinite(a)]
    return {"mean": float(ok.mean()) if ok.size else math.nan, "std": float(ok.std()) if ok.size else math.nan,
            "n": int(ok.size), "n_nan": int(a.size - ok.size)}


def _case_scores(rows: Sequence[Mapping[str, Any]], structures: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """structure (and MEAN) -> case -> metric -> seed-averaged score."""
    acc: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        for m in METRICS:
            acc.setdefault((r["structure"], r["case"], m), []).append(r[m])
    out: dict[str, dict[str, dict[str, float]]] = {s: {} for s in structures}
    for (s, c, m), vals in acc.items():
        out[s].setdefault(c, {})[m] = float(np.mean(vals))
    cases = sorted({c for s in structures for c in out[s]})
    out[MEAN] = {c: {m: float(np.mean([out[s][c][m] for s in structures])) if all(c in out[s] for s in structures) else math.nan
                     for m in METRICS} for c in cases}
    return out


def compute(rows: Sequence[Mapping[str, Any]], compare: Sequence[Sequence[str]] = (), n_boot: int = 10000,
            level: float = 0.95) -> dict[str, Any]:
    """Tables and tests from the long per-case rows (see the module docstring); the content of ``results.json``."""
    units: list[tuple[str, str]] = []
    meta: dict[str, dict[str, Any]] = {}
    structures: list[str] = []
    for r in rows:
        if (r["task"], r["test"]) not in units:
            units.append((r["task"], r["test"]))
        meta.setdefault(r["method_id"], {"method": r["method"], "oracle": bool(r["oracle"])})
        if r["structure"] not in structures:
            structures.append(r["structure"])
    out_units, tests = [], []
    for task, test in units:
        sel = [r for r in rows if r["task"] == task and r["test"] == test]
        ids = list(dict.fromkeys(r["method_id"] for r in sel))
        ids.sort(key=lambda i: 0 if meta[i]["method"] == BASELINE else 2 if meta[i]["oracle"] else 1)  # stable: suite order within
        scores = {i: _case_scores([r for r in sel if r["method_id"] == i], structures) for i in ids}
        base = next((i for i in ids if meta[i]["method"] == BASELINE), None)
        oracle = next((i for i in ids if meta[i]["oracle"]), None)
        methods = []
        for i in ids:
            st = {s: {m: _stats([v[m] for v in scores[i][s].values()]) for m in METRICS} for s in [*structures, MEAN]}
            gap = {m: (gap_recovered(st[MEAN][m]["mean"], methods_mean(scores, base, m), methods_mean(scores, oracle, m))
                       if base and oracle else math.nan) for m in ("dice", "jaccard")}
            seeds = sorted({r["seed"] for r in sel if r["method_id"] == i})
            per_seed = [float(np.nanmean([r["dice"] for r in sel if r["method_id"] == i and r["seed"] == s])) for s in seeds]
            methods.append({"id": i, **meta[i], "seeds": seeds, "n_cases": len(scores[i][MEAN]), "stats": st, "gap_recovered": gap,
                            "seed_mean_dice": per_seed})
        out_units.append({"task": task, "test": test, "baseline": base, "oracle": oracle, "methods": methods,
                          "cases": sorted(scores[ids[0]][MEAN])})
        pairs = [(i, base) for i in ids if base and i != base] + [(a, b) for a, b in compare if a in ids and b in ids]
        for a, b in pairs:
            cases = sorted(set(scores[a][MEAN]) & set(scores[b][MEAN]))
            for m in METRICS:
                pc = paired_comparison([scores[a][MEAN][c][m] for c in cases], [scores[b][MEAN][c][m] for c in cases],
                                       n_boot=n_boot, level=level)
                tests.append({"task": task, "test": test, "a": a, "b": b, "a_oracle": meta[a]["oracle"],
                              "b_oracle": meta[b]["oracle"], "metric": m, **pc.to_dict()})
    n_tests = {}
    for m in METRICS:
        fam = [t for t in tests if t["metric"] == m]
        for key in ("wilcoxon_p", "t_p"):
            for t, adj in zip(fam, holm([t[key] for t in fam])):
                t[f"{key}_holm"] = adj
        n_tests[m] = sum(1 for t in fam if math.isfinite(t["wilcoxon_p"]))
    return {"format": "segshift-benchmark-results", "version": 1, "structures": structures, "metrics": list(METRICS),
            "units": out_units, "comparisons": tests, "n_comparisons": n_tests, "bootstrap": {"n_boot": n_boot, "level": level},
            "std": "population standard deviation across test cases (ddof=0); seeds averaged per case first",
            "correction": "Holm over all comparisons of one metric (n_comparisons)"}


def methods_mean(scores: Mapping[str, Any], mid: str | None, metric: str) -> float:
    """Mean over cases of one method's mean-over-structures score (NaN without the method)."""
    if mid is None:
        return math.nan
    return _stats([v[metric] for v in scores[mid][MEAN].values()])["mean"]


def label(method_id: str, oracle: bool) -> str:
    """A row label: oracle rows say so."""
    return f"{method_id} (ORACLE)" if oracle else method_id


def cell(stats: Mapping[str, Any], metric: str) -> str:
    """``mean ± std`` (3 decimals for overlaps, 2 for mm), ``n/a`` without values, ``(k NaN)`` when some were undefined."""
    d = 3 if metric in ("dice", "jaccard") else 2
    if not math.isfinite(stats["mean"]):
        text = "n/a"
    else:
        text = f"{stats['mean']:.{d}f} ± {stats['std']:.{d}f}"
    return text + (f" ({stats['n_nan']} NaN)" if stats.get("n_nan") else "")


def _num(v: float, fmt: str = ".3f") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def _p(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else (f"{v:.3g}" if v >= 1e-3 else f"{v:.1e}")


def table_rows(unit: Mapping[str, Any], structures: Sequence[str], metrics: Sequence[str], gap: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one unit's table for ``metrics`` (per structure, then the mean), like the papers' tables."""
    head = ["method"] + [f"{HEADERS[m]} {s}" for m in metrics for s in [*structures, MEAN]]
    if gap:
        head.append("gap recovered (Dice)")
    body = []
    for m in unit["methods"]:
        row = [label(m["id"], m["oracle"])] + [cell(m["stats"][s][k], k) for k in metrics for s in [*structures, MEAN]]
        if gap:
            row.append(_num(m["gap_recovered"]["dice"], ".2f"))
        body.append(row)
    return head, body


def comparison_rows(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paired-tests table."""
    head = ["task", "test", "A vs B", "metric", "n", "mean A", "mean B", "A - B [CI]", "Wilcoxon p", "Holm", "t-test p", "Holm"]
    body = []
    for t in results["comparisons"]:
        d = ".3f" if t["metric"] in ("dice", "jaccard") else ".2f"
        body.append([t["task"], t["test"], f"{label(t['a'], t['a_oracle'])} vs {label(t['b'], t['b_oracle'])}", HEADERS[t["metric"]],
                     str(t["n"]), _num(t["mean_a"], d), _num(t["mean_b"], d),
                     f"{_num(t['mean_diff'], d)} [{_num(t['ci_low'], d)}, {_num(t['ci_high'], d)}]",
                     _p(t["wilcoxon_p"]), _p(t["wilcoxon_p_holm"]), _p(t["t_p"]), _p(t["t_p_holm"])])
    return head, body


def runs_rows(runs: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the runs table: steps and wall seconds of training (all sessions), prediction, evaluation."""
    head = ["run", "steps", "trained", "train s", "predict s", "evaluate s"]
    fmt = lambda v: "n/a" if v is None else f"{float(v):.1f}"  # noqa: E731
    return head, [[label(r["key"], r["oracle"]), str(r.get("steps", "")), str(r.get("trained", "")), fmt(r.get("train_s")),
                   fmt(r.get("predict_s")), fmt(r.get("evaluate_s"))] for r in runs]


def gap_note(unit: Mapping[str, Any]) -> str:
    """Why a task/test unit has no gap recovered ("" when it has one)."""
    if unit["oracle"] is None:
        return ("Gap recovered needs a source-only and an oracle row; this test set has no oracle row "
                "(an oracle is evaluated on its own domain only).")
    return "Gap recovered needs a source-only and an oracle row; this test set has no source-only row." if unit["baseline"] is None else ""


def _md(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def comparisons_sentence(results: Mapping[str, Any]) -> str:
    """What the tests are and how many were made."""
    n = results["n_comparisons"]
    b = results["bootstrap"]
    return (f"Paired tests on per-case scores (mean over structures; seeds averaged per case): every method against "
            f"source-only and the suite's chosen pairs. {n['dice']} comparisons per metric "
            f"({', '.join(f'{HEADERS[m]} {k}' for m, k in n.items())}); Holm's correction over the comparisons of each metric. "
            f"Wilcoxon signed-rank and paired t-test, two-sided; {int(b['level'] * 100)}% percentile bootstrap interval of the "
            f"mean difference ({b['n_boot']} resamples).")


def markdown(results: Mapping[str, Any], skipped: Sequence[Mapping[str, Any]] = ()) -> str:
    """``results.md``: per task and test set an overlap table and a distance table, then the paired tests."""
    s = results["structures"]
    parts = ["# Benchmark results", ""]
    for u in results["units"]:
        seeds = sorted({x for m in u["methods"] for x in m["seeds"]})
        parts += [f"## Task `{u['task']}`, test set `{u['test']}` ({len(u['cases'])} cases; seeds {', '.join(map(str, seeds))})", ""]
        parts += [_md(*table_rows(u, s, ("dice", "jaccard"), gap=True)), "", _md(*table_rows(u, s, ("assd_mm", "hd95_mm"), gap=False)), ""]
        if gap_note(u):
            parts += [gap_note(u), ""]
    parts += ["## Paired tests", "", comparisons_sentence(results), "", _md(*comparison_rows(results)), ""]
    runs = [r for r in results.get("runs", []) if r.get("state") in ("ran", "done")]
    if runs:
        parts += ["## Runs and wall times", "", _md(*runs_rows(runs)), ""]
    if skipped:
        parts += ["## Not run", ""] + [f"- `{r['method_id']}` on `{r['task']}`: {r['skipped']}" for r in skipped] + [""]
    return "\n".join(parts)


def write_tables(out: str | Path, n_boot: int = 10000) -> dict[str, Any]:
    """Write ``OUT/results/{per_case.csv,results.json,results.md}`` from a benchmark folder; returns the results."""
    out = Path(out)
    doc = json.loads((out / "benchmark.json").read_text())
    rows = collect_rows(out)
    if not rows:
        raise InputFileError(out, "no finished runs to tabulate")
    results = compute(rows, doc.get("compare") or [], n_boot=n_boot)
    skipped = [r for r in doc["runs"] if r["state"] == "skipped"]
    # one entry per (task, method) is enough for the list of runs not made
    seen, unique = set(), []
    for r in skipped:
        if (r["task"], r["method_id"]) not in seen:
            seen.add((r["task"], r["method_id"]))
            unique.append(r)
    results["skipped"] = [{k: r[k] for k in ("task", "method_id", "method", "skipped")} for r in unique]
    results["runs"] = doc["runs"]
    csv_text, md_text = per_case_csv(rows), markdown(results, unique)
    write_text(out / "results" / "per_case.csv", csv_text)
    write_json(out / "results" / "results.json", _nan_none(results))
    write_text(out / "results" / "results.md", md_text)
    return results


def _nan_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _nan_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_none(v) for v in obj]
    return obj
