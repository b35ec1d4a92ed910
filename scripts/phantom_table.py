"""Phantom tables of docs/translation.md (issue 5) and docs/training.md (issue 6): target Dice / ASSD per structure, wall time.

bSSFP-like source -> LGE-like target phantom (the fixture of the tests: 10 cases each, seed
3), FAST settings (2.5 mm, 80 px, narrow networks). Target labels are used for evaluation
only (every LGE case, predicted and evaluated by segshift.bench.pipeline into OUT/ROW_test/). Usage::

    python3 scripts/phantom_table.py OUT --table translation [--steps 200] [--seed 2] [--rows source-only,unetgan,...]
    python3 scripts/phantom_table.py OUT --table sdnet [--steps 300] [--seed 0] [--set train.batch_size=4]

Translation rows: source-only (UNet), source-only-resunet (the LV-Unet backbone of unetgan),
cyclegan, unetgan, and the AttENT ablation rows attent:CycleGAN, attent:Pixel, attent:Entropy,
attent. SDNet rows (liu2020 Table 1): unet+ra, fs-sdnet, fs-sdnet+ra, ss-sdnet+ra, ss-sdnet+ra+fa
(sdnet-fa: 2/3 of the steps pretraining, 1/3 on FA batches). ``--set`` applies to every row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from segshift.bench.pipeline import RunTester, TestSet
from segshift.data.domain import Domain
from segshift.data.phantom import FAST_SETTINGS, generate_phantom
from segshift.engine.config import resolve
from segshift.engine.trainer import train
from segshift.methods.attent import ABLATIONS

RESUNET = ["model.name=resunet", "model.kwargs={features: [8,16,32,64], encoder_blocks: [1,2,3,3]}"]
NARROW_SDNET = [
    "method.anatomy_features=[8,16,32,64,128]",
    "method.segmentor_width=16",
    "method.decoder_width=16",
    "method.modality_channels=[8,16]",
]
RA_FAST = ["augment.resolution=[1.59,4.49]"]  # liu2020's 0.954-2.692 mm, relative to 1.5 mm, at FAST's 2.5 mm pixels


def sdnet_rows(steps: int) -> dict[str, tuple[str, list[str]]]:
    pre = max(1, 2 * steps // 3)
    return {
        "unet+ra": ("source-only", RA_FAST),
        "fs-sdnet": ("sdnet", NARROW_SDNET),
        "fs-sdnet+ra": ("sdnet", NARROW_SDNET + RA_FAST),
        "ss-sdnet+ra": ("sdnet-ss", NARROW_SDNET + RA_FAST),
        "ss-sdnet+ra+fa": ("sdnet-fa", NARROW_SDNET + RA_FAST + [f"method.pretrain_steps={pre}", f"train.steps={steps - pre}"]),
    }


def rows(steps: int) -> dict[str, tuple[str, list[str]]]:
    half = max(1, steps // 2)
    return {
        "source-only": ("source-only", []),
        "source-only-resunet": ("source-only", RESUNET),
        "cyclegan": ("cyclegan", []),
        "unetgan": ("unetgan", RESUNET + [f"method.seg_steps={steps}", f"method.gan_steps={half}"]),
        "attent:CycleGAN": ("attent", ABLATIONS["CycleGAN"]),
        "attent:Pixel": ("attent", ABLATIONS["Pixel space alignment"]),
        "attent:Entropy": ("attent", ABLATIONS["Entropy space alignment"]),
        "attent": ("attent", ABLATIONS["AttENT"]),
    }


def evaluate(run: Path, domain: Path) -> dict[str, float]:
    """Every case of ``domain`` predicted and scored by the benchmark's pipeline (RUN_test/: masks, evaluation)."""
    out = run.parent / f"{run.name}_test"
    res = RunTester(run, device="cpu").run(
        TestSet(domain.name, domain, Domain(domain).labelled_cases), out / "predictions", out / "evaluation"
    )
    st = res.summary["structures"]
    scores = {f"{k}_{name}": float(st[name][m]["mean"]) for name in st for k, m in (("dice", "dice"), ("assd", "assd_mm"))}
    scores["dice_mean"] = float(np.mean([scores[f"dice_{n}"] for n in st]))
    scores["assd_mean"] = float(np.mean([scores[f"assd_{n}"] for n in st]))
    return scores


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--table", choices=["translation", "sdnet"], default="translation")
    ap.add_argument("--rows", default=None, help="comma-separated rows (default: the whole table)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override for every row (repeatable)")
    a = ap.parse_args(argv)
    ph = a.out / "phantom"
    doms = {p.name: p for p in ph.iterdir()} if ph.is_dir() else generate_phantom(ph, presets=["bssfp", "lge"], n_cases=10, seed=3)
    table = rows(a.steps) if a.table == "translation" else sdnet_rows(a.steps)
    results = {}
    for row in a.rows.split(",") if a.rows else table:
        method, sets = table[row]
        cfg = resolve(
            method,
            sets=[
                *FAST_SETTINGS,
                f"train.steps={a.steps}",
                f"train.eval_every={a.steps}",
                f"train.checkpoint_every={10 * a.steps}",
                f"seed={a.seed}",
                *sets,
                *a.sets,
            ],
        )
        run = a.out / row.replace(":", "_").replace("+", "_")
        t0 = time.time()
        summary = train(cfg, [doms["bssfp"]], doms["lge"], run, overwrite=True, progress=False)
        wall = time.time() - t0
        res = {"train_s": round(wall, 1), "source_val_dice": summary["best_val_mean_dice"], **evaluate(run, doms["lge"])}
        results[row] = res
        print(json.dumps({row: res}), flush=True)
    print("| row | Dice LV | MYO | RV | mean | ASSD mm | source val Dice | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for row, r in results.items():
        print(
            f"| {row} | {r['dice_LV']:.3f} | {r['dice_MYO']:.3f} | {r['dice_RV']:.3f} | {r['dice_mean']:.3f} | {r['assd_mean']:.2f} | "
            f"{r['source_val_dice']:.3f} | {r['train_s']:.0f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
