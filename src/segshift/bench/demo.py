"""The demo: a phantom domain shift, closed step by step as the papers do ("train S, then adapt").

1. Generate phantom domains (bSSFP-like source, LGE-like target, and the other presets for
   the comparison figure, drawn by the caller's ``figure`` function: ``segshift demo`` passes
   :func:`segshift.report.figures.domain_comparison_figure`).
2. Train ``source-only`` on labelled source cases: the **init**.
3. Warm-start an adaptation method (:data:`DEMO_METHOD`) from it and adapt to the
   *unlabelled* target cases for a short stage; and, like for like, continue source-only
   from the init for the same steps without adapting (what the extra steps alone give).
4. Train ``target-oracle`` from scratch on labelled target cases (it uses target labels by
   design, and is labelled so): the upper bound.
5. Predict held-out cases and evaluate (Dice, ASSD and HD95 in mm). The table shows the
   domain gap (source-only on source vs on target), the adaptation gap (oracle vs
   source-only on the target) and how much of it the adaptation stage recovers:
   ``gap recovered = (adapted - source-only) / (oracle - source-only)``, next to the same
   number for the plain continuation.

Held-out test cases are never used for training, adaptation or model selection by any run;
the adaptation stage sees the target's non-test images only, without labels. The method and
its settings were chosen on the phantom (several phantom seeds; see ``docs/benchmark.md``),
never on real data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segshift.bench import recipe
from segshift.utils.atomic import write_json, write_text

if TYPE_CHECKING:
    from segshift.data.domain import Domain

DEMO_PRESETS = ("bssfp", "bssfp_vendorB", "bssfp_vendorC", "lge", "t2")
SOURCE, TARGET = "bssfp", "lge"
DEMO_SETTINGS = [
    "model.name=unet",
    "model.kwargs={features: [16, 32, 64, 128]}",
    "data.preprocess.target_spacing=2.0",
    "data.preprocess.crop_size=[112,112]",
    "train.lr=0.002",
    "train.eval_every=100",
    "train.log_every=50",
]
"""Every run's settings: one backbone and one preprocessing, so the adapted run starts like for like."""
DEMO_METHOD = "adaptseg"
"""The adaptation method of the demo (chosen by measurement on the phantom)."""
DEMO_METHOD_SETTINGS: dict[str, list[str]] = {
    "adaptseg": ["method.d_channels=[16,32,64,64,1]", "method.lambda_adv=0.01"],
    "advent": ["method.d_channels=[16,32,64,64,1]"],
    "adanet": ["method.d_channels=[16,32,64,64,1]", "train.optimizer=adam"],
    "histmatch": [],
}
"""Overrides of the adaptation stage per method (discriminator widths at CPU size)."""


def _split(n_cases: int, n_test: int) -> tuple[list[str], list[str], list[str]]:
    ids = [f"case{i:03d}" for i in range(n_cases)]
    test, rest = ids[-n_test:], ids[:-n_test]
    return rest[2:], rest[:2], test  # train, validation, test


def run_demo(
    out: str | Path,
    cases: int = 16,
    test_cases: int = 6,
    steps: int = 400,
    adapt_steps: int = 200,
    method: str = DEMO_METHOD,
    seed: int = 0,
    echo: Callable[[str], None] = print,
    figure: Callable[[Sequence[Domain], Path], Path] | None = None,
) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns the table's rows, the gaps and the gap recovered.

    Args:
        out: output folder (overwritten).
        cases: cases per phantom domain.
        test_cases: held-out test cases per domain (the last ones).
        steps: training steps of the init (source-only) and of the oracle.
        adapt_steps: steps of the adaptation stage, warm-started from the init.
        method: the adaptation method (any registered method that adapts to unlabelled target images).
        seed: phantom and training seed.
        echo: where progress lines and the table go.
        figure: draws the opened phantom domains into ``out/phantom_domains.png`` and returns the path
            (no figure when ``None``).
    """
    from segshift.bench.pipeline import RunTester, TestSet
    from segshift.data.domain import Domain
    from segshift.data.phantom import generate_phantom
    from segshift.engine.config import resolve
    from segshift.engine.trainer import train
    from segshift.methods import get_method
    from segshift.metrics.stats import gap_recovered, nan_to_none

    out = Path(out)
    if cases < test_cases + 4:
        raise ValueError(f"the demo needs at least {test_cases + 4} cases per domain")
    cls = get_method(method)
    if cls.uses_target_labels:
        raise ValueError(f"{method} trains on target labels; the demo's adaptation stage may not")
    echo(f"[1/6] phantom: {', '.join(DEMO_PRESETS)} ({cases} cases each)")
    paths = generate_phantom(out / "phantom", presets=list(DEMO_PRESETS), n_cases=cases, seed=seed, overwrite=True)
    fig = figure([Domain(p) for p in paths.values()], out / "phantom_domains.png") if figure is not None else None
    train_ids, val_ids, test_ids = _split(cases, test_cases)
    common = DEMO_SETTINGS + [f"seed={seed}", f"data.train_cases={train_ids}", f"data.val_cases={val_ids}"]
    runs = {
        "source-only": out / "runs" / "source-only",
        "continued": out / "runs" / "source-only-continued",
        method: out / "runs" / method,
        "target-oracle": out / "runs" / "target-oracle",
    }

    echo(f"[2/6] train source-only on labelled {SOURCE} ({steps} steps): the init")
    train(
        resolve("source-only", sets=common + [f"train.steps={steps}"]),
        [paths[SOURCE]],
        None,
        runs["source-only"],
        overwrite=True,
        progress=False,
    )
    stage = [f"train.steps={adapt_steps}", f"init={json.dumps(str(runs['source-only'].resolve()))}"]
    echo(
        f"[3/6] adapt: {method}, warm-started from it, on unlabelled {TARGET} images ({adapt_steps} steps); "
        f"and source-only continued from it for as many steps, without adapting"
    )
    adapt = common + DEMO_METHOD_SETTINGS.get(method, []) + stage + [f"data.target_cases={train_ids + val_ids}"]  # non-test, unlabelled
    train(
        resolve(method, sets=adapt),
        [paths[SOURCE]],
        paths[TARGET] if cls.uses_target else None,
        runs[method],
        overwrite=True,
        progress=False,
    )
    train(resolve("source-only", sets=common + stage), [paths[SOURCE]], None, runs["continued"], overwrite=True, progress=False)
    echo(
        f"[4/6] segshift adapt -s {SOURCE} -t {TARGET}: the recommended recipe ("
        + ", then ".join(f"{s.method}, {s.steps} steps" for s in recipe.plan(True, steps, adapt_steps))
        + f"; the unlabelled {TARGET} images predicted and reported on)"
    )
    pool = [f"data.target_cases={train_ids + val_ids}"]
    rec = recipe.run_recipe(
        [paths[SOURCE]], paths[TARGET], out / "adapt", steps, adapt_steps, sets=common + pool, overwrite=True, progress=False, echo=echo
    )
    runs["recipe"] = out / "adapt" / rec["model"]
    echo(f"[5/6] train target-oracle ({steps} steps) - ORACLE: trained on {TARGET} labels")
    train(
        resolve("target-oracle", sets=common + [f"train.steps={steps}"]),
        [paths[SOURCE]],
        paths[TARGET],
        runs["target-oracle"],
        overwrite=True,
        progress=False,
    )

    echo("[6/6] predict held-out cases and evaluate (mm)")
    plan = [
        ("source-only", SOURCE, "source-only (init)"),
        ("source-only", TARGET, "source-only (init)"),
        ("continued", TARGET, "source-only, continued (from the init)"),
        (method, TARGET, f"{method} (from the init)"),
        ("recipe", TARGET, "segshift adapt (recipe)"),
        ("target-oracle", TARGET, "target-oracle (ORACLE)"),
    ]
    rows = []
    for run_name, dom, name in plan:
        # translation and target statistics apply to the run's own target domain only (RunTester decides)
        res = RunTester(runs[run_name]).run(
            TestSet(dom, paths[dom], test_ids), out / "predictions" / run_name / dom, out / "evaluation" / f"{run_name}_{dom}"
        )
        s = res.summary
        rows.append(
            {
                "method": name,
                "tested_on": f"{dom} ({'source' if dom == SOURCE else 'target'})",
                "steps": (
                    " + ".join(str(s["steps"]) for s in rec["stages"])
                    if run_name == "recipe"
                    else f"{steps} + {adapt_steps}"
                    if run_name in (method, "continued")
                    else str(steps)
                ),
                **{f"dice_{k}": s["structures"][k]["dice"]["mean"] for k in s["structures"]},
                "dice_mean": s["overall"]["dice"]["mean"],
                "assd_mm": s["overall"]["assd_mm"]["mean"],
                "hd95_mm": s["overall"]["hd95_mm"]["mean"],
            }
        )
    so_src, so_tgt, continued, adapted, recipe_dice, oracle = (r["dice_mean"] for r in rows)
    result = {
        "rows": rows,
        "method": method,
        "test_cases": test_ids,
        "steps": steps,
        "adapt_steps": adapt_steps,
        "seed": seed,
        "figure": str(fig) if fig is not None else None,
        "domain_gap": so_src - so_tgt,  # what the shift costs source-only
        "gap": oracle - so_tgt,  # what target labels would give
        "gain": adapted - so_tgt,
        "gap_recovered": gap_recovered(adapted, so_tgt, oracle),
        "gap_recovered_continued": gap_recovered(continued, so_tgt, oracle),  # the extra steps alone
        "gap_recovered_recipe": gap_recovered(recipe_dice, so_tgt, oracle),
    }
    table = _markdown(rows)
    write_text(out / "results.md", table + "\n\n" + _summary(result) + "\n")
    write_json(out / "results.json", nan_to_none(result))
    echo(table)
    echo(_summary(result))
    echo(f"figure: {fig}; tables: {out / 'results.md'}" if fig is not None else f"tables: {out / 'results.md'}")
    return result


def _summary(r: dict[str, Any]) -> str:
    def text(v: float) -> str:
        return "n/a (the oracle is not better than source-only)" if not math.isfinite(v) else f"{v:.2f}"

    return (
        f"domain gap (source-only, mean Dice on source minus on target): {r['domain_gap']:.3f}\n"
        f"gap (oracle minus source-only on the target): {r['gap']:.3f}; {r['method']} gains {r['gain']:+.3f} "
        f"in {r['adapt_steps']} steps from the init: gap recovered {text(r['gap_recovered'])} "
        f"(source-only continued for as many steps: {text(r['gap_recovered_continued'])}); "
        f"segshift adapt's recipe (from scratch, no init): gap recovered {text(r['gap_recovered_recipe'])}"
    )


def _markdown(rows: list[dict[str, Any]]) -> str:
    head = "| method | tested on | steps | Dice LV | Dice MYO | Dice RV | Dice mean | ASSD mm | HD95 mm |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['tested_on']} | {r['steps']} | {r.get('dice_LV', float('nan')):.3f} | "
            f"{r.get('dice_MYO', float('nan')):.3f} | {r.get('dice_RV', float('nan')):.3f} | {r['dice_mean']:.3f} | "
            f"{r['assd_mm']:.2f} | {r['hd95_mm']:.2f} |"
        )
    return "\n".join(lines)
