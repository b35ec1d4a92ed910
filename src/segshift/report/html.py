"""``segshift report``: one self-contained HTML page of a benchmark folder.

The page holds, with every image embedded as a base64 PNG (no other file is needed):

1. the results tables (per task and test set: the init first, Dice and Jaccard per structure
   and their mean, Δ vs the init, gap recovered, steps ``init + stage``, selection rule;
   ASSD and HD95; Δ per structure and the paired tests against the init) and every paired
   test, as in ``results/results.md``;
2. box plots of per-case Dice and HD95 per structure and method;
3. overlays of the best, median and worst test case of every method (first seed);
4. the figures a method made: every PNG under ``RUN/figures/`` (e.g. translation or factor
   grids), titled by file name;
5. per task, small multiples of every run's ``logs/train.csv`` (the init, then each
   adaptation stage): supervised loss, alignment/generator terms, discriminator losses,
   alignment weights ``w_*`` and source validation Dice against the step;
6. the QC validation (:mod:`segshift.bench.qc`, evaluation against the test labels): per
   task and test set, how well each label-free QC score flags the cases below the Dice
   threshold (Spearman's rho and ROC AUC per row and pooled), and a scatter of every main
   score against per-case Dice;
7. the exact configuration of every run (``config.yaml``), versions and code revision
   (``run.json``), timings, and the suite file.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segshift.errors import InputFileError
from segshift.metrics.stats import none_to_nan
from segshift.utils.atomic import check_disjoint, resolved, write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em} h3{margin-top:1.4em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px} th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}
th{background:#eef} td:first-child,th:first-child{text-align:left} tr.oracle td{background:#fff4e0;font-style:italic}
img{max-width:100%;border:1px solid #ddd;margin:4px 0} figure{margin:10px 0} figcaption{font-size:12px;color:#555}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto;max-height:420px} .note{color:#555;font-size:13px}
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _figure(png: bytes, caption: str) -> str:
    return f"<figure>{_img(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _table(head: Sequence[str], body: Sequence[Sequence[str]], oracle_rows: Sequence[bool] = ()) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, row in enumerate(body):
        cls = ' class="oracle"' if i < len(oracle_rows) and oracle_rows[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return "".join(out) + "</tbody></table>"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputFileError(path, "missing: is this a benchmark folder written by `segshift benchmark`?") from exc
    except json.JSONDecodeError as exc:
        raise InputFileError(path, f"is not valid JSON ({exc})") from exc


_FLOAT_KEYS = {
    "mean",
    "std",
    "dice",
    "jaccard",
    "mean_a",
    "mean_b",
    "mean_diff",
    "ci_low",
    "ci_high",
    "t_p",
    "wilcoxon_p",
    "t_p_holm",
    "wilcoxon_p_holm",
    "spearman",
    "auc",
}


def build_report(folder: str | Path) -> str:
    """The HTML text of the report of a benchmark folder (see the module docstring)."""
    from segshift.bench import tables as T
    from segshift.report import bench_figures as F
    from segshift.report.method_figures import undrawn_figures

    folder = Path(folder)
    bench = _read_json(folder / "benchmark.json")
    res = folder / "results" / "results.json"
    if not res.is_file() or res.stat().st_mtime < (folder / "benchmark.json").stat().st_mtime:
        T.write_tables(folder)  # a benchmark stopped before its tables, or runs finished since they were written
    results = none_to_nan(_read_json(folder / "results" / "results.json"), _FLOAT_KEYS)  # results.json stores NaN as null
    structures = results["structures"]
    rows = T.collect_rows(folder)
    runs = [r for r in bench["runs"] if r["state"] in ("ran", "done")]
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>segshift benchmark: {html.escape(bench['suite'])}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>segshift benchmark: {html.escape(bench['suite'])}</h1>",
        f"<p class='note'>{len(runs)} runs; suite file {html.escape(str(bench['suite_file']))}; report written "
        f"{_dt.datetime.now().isoformat(timespec='seconds')}. Rows marked ORACLE trained on target labels (an upper bound).</p>",
    ]

    parts.append("<h2>Results</h2>")
    for u in results["units"]:
        seeds = sorted({s for m in u["methods"] for s in m["seeds"]})
        parts.append(
            f"<h3>Task {html.escape(u['task'])}, test set {html.escape(u['test'])} "
            f"({len(u['cases'])} cases; seeds {', '.join(map(str, seeds))})</h3>"
        )
        oracle = [m["oracle"] for m in u["methods"]]
        parts.append(_table(*T.table_rows(u, structures, ("dice", "jaccard"), gap=True), oracle_rows=oracle))
        parts.append(_table(*T.table_rows(u, structures, ("assd_mm", "hd95_mm"), gap=False), oracle_rows=oracle))
        head, body = T.versus_rows(u, results)
        if body:
            by_label = {m.get("label"): m["oracle"] for m in u["methods"]}
            parts.append(f"<p>Against the {html.escape(T.vs_name(u))} (mean Dice):</p>")
            parts.append(_table(head, body, oracle_rows=[by_label.get(r[0], False) for r in body]))
        parts.append(f"<p class='note'>{html.escape(T.reference_note(u))}</p>")
        if T.gap_note(u):
            parts.append(f"<p class='note'>{html.escape(T.gap_note(u))}</p>")
    parts += ["<h2>Paired tests</h2>", f"<p>{html.escape(T.comparisons_sentence(results))}</p>", _table(*T.comparison_rows(results))]
    if results.get("skipped"):
        parts.append(
            "<h3>Not run</h3><ul>"
            + "".join(
                f"<li>{html.escape(r['method_id'])} on {html.escape(r['task'])}: {html.escape(r['skipped'])}</li>"
                for r in results["skipped"]
            )
            + "</ul>"
        )

    parts += _qc_section(results.get("qc"))

    parts.append("<h2>Per-case scores</h2>")
    for u in results["units"]:
        sel = [r for r in rows if r["task"] == u["task"] and r["test"] == u["test"]]
        for metric, name in (("dice", "Dice"), ("hd95_mm", "HD95 (mm)")):
            data: dict[str, dict[str, list[float]]] = {}
            for m in u["methods"]:
                sc = T._case_scores([r for r in sel if r["method_id"] == m["id"]], structures)
                for s in [*structures, T.MEAN]:
                    data.setdefault(s, {})[m.get("label") or T.label(m["id"], m["oracle"])] = [v[metric] for v in sc[s].values()]
            parts.append(
                _figure(
                    F.box_plots(data, name, f"{u['task']} / {u['test']}: {name} per case"),
                    f"Box plots of per-case {name}, task {u['task']}, test set {u['test']} (seeds averaged per case)",
                )
            )

    parts.append("<h2>Best, median and worst cases</h2>")
    parts += _overlays(folder, results, rows, runs)

    parts.append("<h2>Method figures</h2>")
    n_fig = 0
    for r in runs:
        if r.get("shares_training"):
            continue  # its figures are those of the run it shares training with
        fig_dir = _train(folder, r) / "figures"
        figs = {str(f.relative_to(fig_dir)): f.read_bytes() for f in fig_dir.rglob("*.png")} if fig_dir.is_dir() else {}
        figs.update(undrawn_figures(_train(folder, r)))  # kept as data only: drawn here, in memory
        for name in sorted(figs):
            parts.append(_figure(figs[name], f"{r['key']}: {name}"))
            n_fig += 1
    if not n_fig:
        parts.append("<p class='note'>No method wrote figures (RUN/figures/*.png) in these runs.</p>")

    parts.append("<h2>Training curves</h2>")
    parts.append(
        "<p class='note'>Per task, one row per table row (the init first, then every adaptation stage, the oracle last), "
        "one column per kind of term logged in logs/train.csv; a warm-started run's steps count from the start of "
        "its own stage. Later seeds dashed. Alignment and translation runs add their diagnostics on the logged steps: "
        "the discriminators' accuracy (d_acc_*, chance 0.5 dotted), the norm of the alignment gradient reaching the "
        "segmenter over the supervised one (grad_ratio_*), the segmenter's Dice on translated labelled source images "
        "(trans_dice, untranslated: trans_dice_raw) and the intensity distance of translated from real images "
        '(trans_stat_dist*, before translation: trans_stat_dist_raw); docs/training.md, "Diagnostics", says how to '
        "read them.</p>"
    )
    for task in dict.fromkeys(r["task"] for r in runs):
        order = {"init": 0, "method": 1, "oracle": 2}
        task_runs = sorted((r for r in runs if r["task"] == task), key=lambda r: order.get(T.run_role(r), 1))  # stable: suite order
        rows: dict[str, list[tuple[str, dict[str, list[float]]]]] = {}
        for r in task_runs:
            csv_path = _train(folder, r) / "logs" / "train.csv"
            if r.get("shares_training"):
                continue
            if csv_path.is_file():
                name = T.run_label(r) + (f"\nfrom {r['init']}" if r.get("init") else "")
                rows.setdefault(name, []).append((f"seed {r['seed']}", F.read_curve(csv_path)))
        if rows:
            diagnostics = [g for g in F.stage_groups(list(rows.items())) if g in F.DIAGNOSTIC_GROUPS]
            parts.append(
                _figure(
                    F.stage_curves(list(rows.items()), f"task {task}: training logs of every stage"),
                    f"Training curves, task {task}: init and adaptation stages (logs/train.csv)"
                    + (f"; diagnostics: {', '.join(diagnostics)}" if diagnostics else ""),
                )
            )

    parts.append("<h2>Runs: configuration, versions, code revision</h2>")
    parts.append(_table(*T.runs_rows(runs)))
    for r in runs:
        run = _train(folder, r)
        info = _read_json(run / "run.json")
        versions = ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items())
        cfg = (run / "config.yaml").read_text(encoding="utf-8")
        what = " (INIT)" if T.run_role(r) == "init" else " (ORACLE)" if r["oracle"] else f" (init: {r['init']})" if r.get("init") else ""
        parts.append(
            f"<details><summary>{html.escape(r['key'] + what)}: code revision "
            f"{html.escape(str(info.get('git_revision')))}; {html.escape(versions)}</summary>"
            f"<p>sources: {html.escape(', '.join(info['sources']))}; target: {html.escape(str(info['target']))}</p>"
            f"<pre>{html.escape(cfg)}</pre></details>"
        )
    suite_text = (folder / "suite.yaml").read_text(encoding="utf-8") if (folder / "suite.yaml").is_file() else ""
    parts.append(f"<h3>Suite</h3><pre>{html.escape(suite_text)}</pre></body></html>")
    return "\n".join(parts)


def _qc_section(qc: Mapping[str, Any] | None) -> list[str]:
    """The QC validation: per task and test set its table and a scatter of every main score against Dice."""
    from segshift.bench import qc as QC
    from segshift.report import bench_figures as F

    out = ["<h2>QC validation (evaluation against test labels)</h2>"]
    if not qc or not qc.get("validation"):
        return [*out, "<p class='note'>No QC rows (qc.csv) in these runs.</p>"]
    out.append(f"<p>{html.escape(QC.sentence(qc))}</p>")
    for task, test in QC.units(qc):
        out.append(f"<h3>QC, {html.escape(QC.unit_title(task, test))}</h3>")
        head, body = QC.table_rows(qc, task, test)
        out.append(_table(head, body, oracle_rows=["(ORACLE)" in r[0] for r in body]))
        cases = QC.unit_cases(qc["cases"], task, test)
        pooled = {v["score"]: v for v in qc["validation"] if v["task"] == task and v["test"] == test and v["method_id"] == QC.POOLED}
        stats = {
            s: f"pooled rho {_num(pooled[s]['spearman'], '+.2f')}, AUC {_num(pooled[s]['auc'], '.2f')} (n {pooled[s]['n']})"
            for s in qc["main_scores"]
            if s in pooled
        }
        caption = f"QC scores against Dice, {QC.unit_title(task, test)} (one point per run and case)"
        title = f"{task} / {'all test sets' if test == QC.ALL_TESTS else test}: QC score vs Dice"
        out.append(_figure(F.qc_scatter(cases, qc["main_scores"], qc["threshold"], title, stats), caption))
    return out


def _num(v: Any, fmt: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return format(f, fmt) if np.isfinite(f) else "n/a"


def _train(folder: Path, run: Mapping[str, Any]) -> Path:
    """The engine's run folder of a benchmark run (a TTA row predicts with another row's)."""
    return folder / (run.get("train_folder") or f"{run['folder']}/train")


def _overlays(folder: Path, results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]]) -> list[str]:
    from segshift.bench import tables as T
    from segshift.data.domain import Domain
    from segshift.data.volume import read_volume
    from segshift.report import bench_figures as F

    out = []
    for u in results["units"]:
        for m in u["methods"]:
            run = next((r for r in runs if r["task"] == u["task"] and r["method_id"] == m["id"] and r["seed"] == m["seeds"][0]), None)
            if run is None:
                continue
            sel = [
                r
                for r in rows
                if r["task"] == u["task"] and r["test"] == u["test"] and r["method_id"] == m["id"] and r["seed"] == run["seed"]
            ]
            per_case = {c: float(np.mean([r["dice"] for r in sel if r["case"] == c])) for c in dict.fromkeys(r["case"] for r in sel)}
            order = sorted(per_case, key=lambda c: (per_case[c], c))
            picks = [("best", order[-1]), ("median", order[len(order) // 2]), ("worst", order[0])]
            spec = _read_json(folder / run["folder"] / "spec.json")
            domain = Domain(next(t["domain"] for t in spec["tests"] if t["name"] == u["test"]))
            labels = _read_json(_train(folder, run) / "run.json")["labels"]
            imgs, refs, preds, titles = [], [], [], []
            for what, case in picks:
                img, ref = domain.load(case)
                pred = read_volume(folder / run["folder"] / "predictions" / u["test"] / f"{case}.nii.gz")
                imgs.append(img.array)
                refs.append(ref.array)
                preds.append(pred.array.astype(np.int64))
                titles.append(f"{what}: {case} (Dice {per_case[case]:.3f})")
            title = f"{u['task']} / {u['test']}: {m.get('label') or T.label(m['id'], m['oracle'])}, seed {run['seed']}"
            out.append(_figure(F.overlay_panels(imgs, refs, preds, titles, labels, title), f"Overlays, {title}"))
    return out


def write_report(folder: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the report of a benchmark folder (default ``FOLDER/report.html``, atomically); returns its path.

    ``FOLDER/report.html`` is the report's own file and is rewritten. Any other ``out`` may not
    lie in the benchmark's inputs (the benchmark folder, its suite file, the domains of its runs)
    nor replace an existing file unless ``overwrite``; both are refused before the report is built.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(folder, "is not a folder (expected a benchmark folder written by `segshift benchmark`)")
    own = folder / "report.html"
    path = Path(out) if out is not None else own
    if resolved(path) != resolved(own):
        check_disjoint(path, _inputs(folder), "report file")
        if path.is_dir():
            raise InputFileError(path, "is a folder; give the report's file name (e.g. report.html)")
        if (path.exists() or path.is_symlink()) and not overwrite:
            raise InputFileError(path, "exists (use --overwrite to replace it, or give another file name)")
    write_text(path, build_report(folder))
    return path


def _inputs(folder: Path) -> list[str | Path]:
    """What a benchmark's report reads: the benchmark folder, its suite file and the domains of its runs."""
    bench = _read_json(folder / "benchmark.json")
    inputs: list[str | Path] = [folder, bench["suite_file"]]
    for run in bench["runs"]:
        spec = folder / run["folder"] / "spec.json" if run.get("folder") else None
        if spec is not None and spec.is_file():
            s = _read_json(spec)
            inputs += [*s["sources"], s["target"], *(t["domain"] for t in s["tests"])]
    return list(dict.fromkeys(i for i in inputs if i))
