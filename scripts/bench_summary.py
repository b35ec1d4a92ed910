"""Compact Markdown summary of a benchmark folder (for docs and closing notes).

One table per task and test set: mean +- std Dice per structure and their mean, mean ASSD
and HD95 (mm), gap recovered, the steps trained and the training wall time of each run;
read from ``DIR/results/results.json`` (written by ``segshift benchmark``/``segshift report``).
Usage::

    python3 scripts/bench_summary.py runs/cardiac-dev
"""

from __future__ import annotations

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
    root = Path(argv[0])
    res = json.loads((root / "results" / "results.json").read_text())
    runs = {(r["task"], r["method_id"]): r for r in res["runs"]}
    for u in res["units"]:
        print(f"\n**{u['task']} / {u['test']}** ({len(u['cases'])} cases)\n")
        print("| method | Dice LV | MYO | RV | mean | ASSD mm | HD95 mm | gap recovered | steps | train s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for m in u["methods"]:
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
