"""Print one line per evaluation folder under runs/dev/eval (mean Dice per structure, ASSD, HD95)."""

import glob
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "runs/dev/eval"
print("| evaluation | Dice LV | Dice MYO | Dice RV | Dice mean ± sd | Jaccard | ASSD mm | HD95 mm | n |")
print("|---|---|---|---|---|---|---|---|---|")
for d in sorted(glob.glob(os.path.join(root, "*"))):
    s = json.load(open(os.path.join(d, "summary.json")))["summary"]
    st, o = s["structures"], s["overall"]
    print(f"| {os.path.basename(d)} | {st['LV']['dice']['mean']:.3f} | {st['MYO']['dice']['mean']:.3f} | {st['RV']['dice']['mean']:.3f} | "
          f"{o['dice']['mean']:.3f} ± {o['dice']['std']:.3f} | {o['jaccard']['mean']:.3f} | {o['assd_mm']['mean']:.2f} | {o['hd95_mm']['mean']:.2f} | {o['dice']['n']} |")
