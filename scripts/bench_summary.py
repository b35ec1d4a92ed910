"""Compact Markdown summary of a benchmark folder (for docs and closing notes).

One table per task and test set: mean +- std Dice per structure and their mean, mean ASSD
and HD95 (mm), gap recovered, the steps trained and the training wall time of each run;
read from ``DIR/results/results.json`` (written by ``segshift benchmark``/``segshift report``).
Usage::

    python3 scripts/bench_summary.py runs/cardiac-dev [--task acdc2bssfp] [--methods source-only,sdnet,...]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _cell(s: dict, digits: int = 3) -> str:
    if s["n"] == 0 or s["mean"] is None or (isinstance(s["mean"], float) and math.isnan(s["mean"])):
        return "n/a"
    nan = f" ({s['n_nan']} NaN)" if s.get("n_nan") else ""
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}{nan}"


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--task", default=None, help="only this task")
    ap.add_argument("--methods", default=None, help="only these method ids (comma-separated, in this order)")
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
        print(f"\n**{u['task']} / {u['test']}** ({len(u['cases'])} cases)\n")
        print("| method | Dice LV | MYO | RV | mean | ASSD mm | HD95 mm | gap recovered | steps | train s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for m in methods:
            st, r = m["stats"], runs.get((u["task"], m["id"]), {})
            gap = m["gap_recovered"]["dice"]
            name = f"{m['id']} (ORACLE)" if m["oracle"] else m["id"]
            secs = "" if r.get("train_s") is None else f"{r['train_s']:.0f}"
            print(f"| {name} | " + " | ".join(_cell(st[k]["dice"]) for k in ("LV", "MYO", "RV", "mean"))
                  + f" | {_cell(st['mean']['assd_mm'], 1)} | {_cell(st['mean']['hd95_mm'], 1)} | "
                  + ("n/a" if gap is None or math.isnan(gap) else f"{gap:.2f}")
                  + f" | {r.get('steps', '')} | {secs} |")


if __name__ == "__main__":
    main(sys.argv[1:])
