"""The Markdown table of `scripts/profile_all.sh`'s profiles (docs/training.md, "Where a step's time goes").

usage: python scripts/profile_table.py OUTDIR [--before OLDDIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SEG = ("seg", "sdnet")


def _groups(parts: dict[str, float]) -> dict[str, float]:
    g = {"data + augment": 0.0, "segmenter fwd+bwd": 0.0, "other networks fwd+bwd": 0.0, "optimisers": 0.0, "rest": 0.0}
    for key, v in parts.items():
        kind, _, net = key.partition(" ")
        if key in ("data", "augment"):
            g["data + augment"] += v
        elif kind in ("forward", "backward") and net in SEG:
            g["segmenter fwd+bwd"] += v
        elif kind in ("forward", "backward") and not net.startswith("("):
            g["other networks fwd+bwd"] += v
        elif kind == "optimizer":
            g["optimisers"] += v
        else:
            g["rest"] += v
    return g


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--before", type=Path)
    a = ap.parse_args()
    profs = {p.stem: json.loads(p.read_text()) for p in sorted(a.folder.glob("*.json"))}
    before = {p.stem: json.loads(p.read_text()) for p in sorted(a.before.glob("*.json"))} if a.before else {}
    base = profs["source-only"]["step_seconds"]
    first = next(iter(profs.values()))
    print(f"CPU: {first['cpu']}, native bf16 {first['native_bf16']}, {first['threads']} threads\n")
    head = (
        "| run | batch | precision | s/step | x source-only |"
        + (" before (s/step) |" if before else "")
        + " data+aug | segmenter | other nets | optim | rest | largest part |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for tag, p in sorted(profs.items(), key=lambda kv: kv[1]["step_seconds"]):
        s = p["step_seconds"]
        g = {k: 100 * v / s for k, v in _groups(p["parts"]).items()}
        top, v = max(p["parts"].items(), key=lambda kv: kv[1])
        old = f" {before[tag]['step_seconds']:.3f} |" if tag in before else (" - |" if before else "")
        print(
            f"| {tag} | {p['batch_size']} | {p['precision']} | {s:.3f} | {s / base:.2f} |{old} {g['data + augment']:.0f}% | "
            f"{g['segmenter fwd+bwd']:.0f}% | {g['other networks fwd+bwd']:.0f}% | {g['optimisers']:.0f}% | {g['rest']:.0f}% | "
            f"{top} {100 * v / s:.0f}% |"
        )


if __name__ == "__main__":
    main()
