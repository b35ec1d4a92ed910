"""Compact Markdown summary of a benchmark folder (for docs and closing notes).

One table per task and test set, in the tables' order (the inits first, the oracle last):
mean +- std Dice per structure and their mean, the difference of the mean Dice to the row's
init (its reference; source-only in suites without inits) with the Wilcoxon p-value of that
paired test (Holm-adjusted), mean ASSD and HD95 (mm), gap recovered, the steps trained
(``init + stage`` for a warm-started row), the model-selection rule and the training wall
time of each run; read from ``DIR/results/results.json`` (written by ``segshift benchmark``/
``segshift report``). Usage::

    python3 scripts/bench_summary.py runs/cardiac-dev [--task acdc2bssfp] [--methods init,source-only,adanet,...]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _cell(s: dict, digits: int = 3) -> str:
    if s["n"] == 0 or not _finite(s["mean"]):
        return "n/a"
    nan = f" ({s['n_nan']} NaN)" if s.get("n_nan") else ""
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}{nan}"


def _p(v) -> str:
    return "n/a" if not _finite(v) else (f"{v:.3g}" if v >= 1e-3 else f"{v:.1e}")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--task", default=None, help="only this task")
    ap.add_argument("--methods", default=None, help="only these row ids (comma-separated, in this order)")
    a = ap.parse_args(argv)
    res = json.loads((a.dir / "results" / "results.json").read_text())
    runs = {(r["task"], r["method_id"]): r for r in res["runs"]}
    only = a.methods.split(",") if a.methods else None
    for u in res["units"]:
        if a.task and u["task"] != a.task:
            continue
        methods = [m for m in u["methods"] if only is None or m["id"] in only]
        if only:
            methods.sort(key=lambda m: only.index(m["id"]))
        vs = "init" if u.get("inits") else "source-only"
        tests = {
            (t["a"], t["b"]): t for t in res["comparisons"] if t["task"] == u["task"] and t["test"] == u["test"] and t["metric"] == "dice"
        }
        structures = list(res["structures"])
        print(f"\n**{u['task']} / {u['test']}** ({len(u['cases'])} cases)\n")
        print(
            "| method | " + " | ".join(f"Dice {s}" for s in structures) + f" | mean | Δ vs {vs} | p (Holm) | ASSD mm | HD95 mm"
            " | gap recovered | steps | selection | train s |"
        )
        print("|---|" + "---|" * (len(structures) + 9))
        for m in methods:
            st, r = m["stats"], runs.get((u["task"], m["id"]), {})
            gap = m["gap_recovered"]["dice"]
            name = m.get("label") or (f"{m['id']} (ORACLE)" if m["oracle"] else m["id"])
            delta = (m.get("delta") or {}).get("mean", {}).get("dice")
            t = tests.get((m["id"], m.get("reference")))
            p = f"{_p(t['wilcoxon_p'])} ({_p(t['wilcoxon_p_holm'])})" if t else ""
            secs = "" if r.get("train_s") is None else f"{r['train_s']:.0f}"
            print(
                f"| {name} | "
                + " | ".join(_cell(st[k]["dice"]) for k in [*structures, "mean"])
                + f" | {'' if not _finite(delta) else f'{delta:+.3f}'} | {p}"
                + f" | {_cell(st['mean']['assd_mm'], 1)} | {_cell(st['mean']['hd95_mm'], 1)} | "
                + ("n/a" if not _finite(gap) else f"{gap:.2f}")
                + f" | {m.get('steps_text') or r.get('steps', '')} | {m.get('selection') or ''} | {secs} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
