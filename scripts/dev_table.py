"""Print one Markdown row per evaluation under EVAL_ROOT (default runs/dev/test): Dice and Jaccard per structure, ASSD, HD95.

An evaluation is EVAL_ROOT/<name>/summary.json (``segshift evaluate --out``) or EVAL_ROOT/<name>/evaluation/summary.json
(``segshift test --out``). Usage: python3 scripts/dev_table.py [EVAL_ROOT] [WALL_TXT]; WALL_TXT (``row train_wall_s N``
lines) adds a wall-time column.
"""

import glob
import json
import os
import sys
from pathlib import Path

root = sys.argv[1] if len(sys.argv) > 1 else "runs/dev/test"
wall: dict[str, int] = {}
if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
    for line in Path(sys.argv[2]).read_text().splitlines():
        name, kind, sec = line.split()
        if kind == "train_wall_s":
            wall[name] = int(sec)
print(
    "| evaluation | Dice LV | Dice MYO | Dice RV | Dice mean ± sd | Jacc LV | Jacc MYO | Jacc RV | Jacc mean | ASSD mm | HD95 mm | n | train wall |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for d in sorted(glob.glob(os.path.join(root, "*"))):
    name = os.path.basename(d)
    path = os.path.join(d, "summary.json")
    if not os.path.exists(path):
        path = os.path.join(d, "evaluation", "summary.json")
    s = json.loads(Path(path).read_text())["summary"]
    st, o = s["structures"], s["overall"]
    w = f"{wall[name] // 60} min {wall[name] % 60:02d} s" if name in wall else "—"
    print(
        f"| {name} | {st['LV']['dice']['mean']:.3f} | {st['MYO']['dice']['mean']:.3f} | {st['RV']['dice']['mean']:.3f} | "
        f"{o['dice']['mean']:.3f} ± {o['dice']['std']:.3f} | {st['LV']['jaccard']['mean']:.3f} | {st['MYO']['jaccard']['mean']:.3f} | "
        f"{st['RV']['jaccard']['mean']:.3f} | {o['jaccard']['mean']:.3f} | {o['assd_mm']['mean']:.2f} | {o['hd95_mm']['mean']:.2f} | "
        f"{o['dice']['n']} | {w} |"
    )
