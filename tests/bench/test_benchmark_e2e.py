"""The CI suite end to end: ``segshift benchmark phantom-tiny`` -> tables -> ``segshift report``.

One module-scoped benchmark (about a minute and a half on 2 CPU cores) serves every test
here. phantom-tiny trains a shared init (source-only, 40 steps), then source-only and adaptseg
warm-started from it (20 steps each), and the oracle from scratch. It is run five times:

1. killed while training the init (after its step-20 checkpoint);
2. continued: the init resumes, source-only trains from it, adaptseg is killed at step 10;
3. continued: adaptseg resumes, the oracle trains;
4. after the oracle's checkpoint and done marker are deleted: only the oracle retrains;
5. nothing left: nothing trains.

Every training goes through a wrapper that counts it and, for non-oracle runs, swaps each
label file of the target domain for garbage while it trains (restored for evaluation), and
an audit hook records every opened label file, so a read of a target label would show.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from segshift.bench import runner
from segshift.bench.suite import builtin_suites
from segshift.cli.main import main

pytestmark = pytest.mark.slow

_OPENED: dict[str, list[str]] | None = None  # label files opened, by phase; None: not watching
_PHASE = ["other"]
_HOOKED = []


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, Path)):
        p = str(args[0])
        if "/labels/" in p and "/phantom/lge/" in p:
            _OPENED.setdefault(_PHASE[0], []).append(p)


def _method_figure(path: Path) -> None:
    """A PNG as a method would leave it under RUN/figures/ (the report shows every one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.imshow(np.random.default_rng(0).random((16, 24)))
    fig.savefig(path)
    plt.close(fig)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    global _OPENED
    out = tmp_path_factory.mktemp("bench") / "tiny"
    calls: list[dict] = []
    real_train = runner.train
    kill: dict[str, int] = {"init": 20}  # row id -> kill after this step

    def guarded_train(cfg, sources, target, run, resume=False, **kw):
        run = Path(run)
        row = run.parent.parent.name  # runs/<task>/<row>/seed<k>/train
        oracle = row == "target-oracle"
        calls.append({"row": row, "resume": resume, "init": (cfg or {}).get("init"), "run": str(run)})
        lge = out / "phantom" / "lge" / "labels"
        saved = {p: p.read_bytes() for p in lge.iterdir()}
        if not oracle:
            for p in saved:
                p.write_bytes(b"not a nifti: a target label was read")  # any read fails loudly
        _PHASE[0] = f"train:{row}"
        try:
            if row in kill:
                real_train(cfg, sources, target, run, resume=resume, stop_after=kill.pop(row), **kw)
                raise Killed(f"benchmark killed while training {row}")
            return real_train(cfg, sources, target, run, resume=resume, **kw)
        finally:
            _PHASE[0] = "other"
            for p, data in saved.items():
                p.write_bytes(data)

    if not _HOOKED:  # audit hooks cannot be removed: install one, active only while _OPENED is a dict
        sys.addaudithook(_audit)
        _HOOKED.append(True)
    mp = pytest.MonkeyPatch()
    mp.setattr(runner, "train", guarded_train)
    _OPENED = {}
    phases = []
    try:
        for i in range(2):  # 1: the init is killed; 2: it resumes, source-only trains from it, adaptseg is killed
            if i == 1:
                kill["adaptseg"] = 10
            calls.clear()
            with pytest.raises(Killed):
                main(["benchmark", "phantom-tiny", "--out", str(out)])
            phases.append(list(calls))
        assert main(["report", str(out)]) == 0  # a stopped benchmark can be reported: its finished runs
        partial = (out / "report.html").read_text()
        calls.clear()
        assert main(["benchmark", "phantom-tiny", "--out", str(out)]) == 0
        phases.append(list(calls))
        results_before = (out / "results" / "results.md").read_text()
        oracle = out / "runs" / "bssfp2lge" / "target-oracle" / "seed0"
        (oracle / "bench.json").unlink()
        (oracle / "train" / "summary.json").unlink()
        shutil.rmtree(oracle / "train" / "checkpoints" / "last")
        for _ in range(2):
            calls.clear()
            assert main(["benchmark", "phantom-tiny", "--out", str(out)]) == 0
            phases.append(list(calls))
        opened = dict(_OPENED)
    finally:
        _OPENED = None
        mp.undo()
    _method_figure(out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "train" / "figures" / "translation_grid.png")
    assert main(["report", str(out)]) == 0
    return {"out": out, "calls": phases, "opened": opened, "results_before": results_before, "partial": partial}


def test_resumption_skips_finished_runs_and_continues_the_killed_ones(bench):
    calls = [[(c["row"], c["resume"]) for c in phase] for phase in bench["calls"]]
    assert calls == [
        [("init", False)],  # killed after step 20
        [("init", True), ("source-only", False), ("adaptseg", False)],  # the init resumes; adaptseg killed after step 10
        [("adaptseg", True), ("target-oracle", False)],
        [("target-oracle", False)],  # no checkpoint: restarted cleanly
        [],  # everything done: nothing trains
    ]
    partial = bench["partial"]
    assert "<td>source-only (init)</td>" in partial and "<td>source-only</td>" in partial and "<td>adaptseg</td>" not in partial
    assert "no oracle row" in partial

    # retraining the oracle from scratch reproduced it exactly (same seed, same machine)
    def scores(md: str) -> str:
        return md.split("## Runs and wall times")[0]

    assert scores((bench["out"] / "results" / "results.md").read_text()) == scores(bench["results_before"])
    out = bench["out"]
    runs = {r["method_id"]: r for r in json.loads((out / "benchmark.json").read_text())["runs"]}
    assert all(r["state"] == "done" for r in runs.values())
    for row, steps in (("init", 40), ("adaptseg", 20)):  # both killed once; the resumed logs continue, no duplicate rows
        run = out / "runs" / "bssfp2lge" / row / "seed0"
        assert json.loads((run / "bench.json").read_text())["timing"]["trained"] == "resumed"
        assert json.loads((run / "train" / "summary.json").read_text())["steps_done"] == steps
        logged = [int(r["step"]) for r in csv.DictReader((run / "train" / "logs" / "train.csv").open())]
        assert logged == sorted(set(logged)) and logged[-1] == steps
    ad = json.loads((out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "bench.json").read_text())
    # wall time counts the killed session too
    assert (
        ad["timing"]["train_s"]
        == json.loads((out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "train_seconds.json").read_text())["seconds"]
    )
    assert "## Runs and wall times" in (out / "results" / "results.md").read_text()


def test_the_init_is_trained_once_and_warm_starts_every_row_but_the_oracle(bench):
    out = bench["out"]
    init_run = (out / "runs" / "bssfp2lge" / "init" / "seed0" / "train").resolve()
    fresh = [c for phase in bench["calls"] for c in phase if not c["resume"]]
    assert [c["row"] for c in fresh].count("init") == 1
    assert {c["row"]: c["init"] for c in fresh if c["row"] != "target-oracle" and c["row"] != "init"} == {
        "source-only": str(init_run),
        "adaptseg": str(init_run),
    }
    for row in ("source-only", "adaptseg"):
        info = json.loads((out / "runs" / "bssfp2lge" / row / "seed0" / "train" / "run.json").read_text())
        assert info["init"]["run"] == str(init_run) and info["init"]["nets"] == ["seg"]
        done = json.loads((out / "runs" / "bssfp2lge" / row / "seed0" / "bench.json").read_text())
        assert done["init"] == "bssfp2lge/init/seed0" and done["role"] == "method"
    assert not json.loads((out / "runs" / "bssfp2lge" / "target-oracle" / "seed0" / "train" / "run.json").read_text()).get("init")
    spec = json.loads((out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "spec.json").read_text())
    init_spec = json.loads((out / "runs" / "bssfp2lge" / "init" / "seed0" / "spec.json").read_text())
    assert spec["init"] == {"key": "bssfp2lge/init/seed0", "fingerprint": init_spec["fingerprint"]}


def test_a_changed_init_is_refused_with_its_folder(bench, tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(builtin_suites()["phantom-tiny"].replace("budget: {steps: 40}}", "budget: {steps: 41}}"))
    assert main(["benchmark", str(suite), "--out", str(bench["out"])]) == 2
    err = capsys.readouterr().err
    assert "runs/bssfp2lge/init/seed0: this run folder was made by a different spec" in err


def test_translation_only_on_the_runs_own_target_domain(bench):
    out = bench["out"]
    for row, flags in (
        ("init", {"lge": False, "t2-unseen": False}),
        ("source-only", {"lge": False, "t2-unseen": False}),
        ("adaptseg", {"lge": True, "t2-unseen": False}),
        ("target-oracle", {"lge": True}),
    ):
        assert json.loads((out / "runs" / "bssfp2lge" / row / "seed0" / "bench.json").read_text())["translate"] == flags, row
    runs = {r["method_id"]: r for r in json.loads((out / "benchmark.json").read_text())["runs"]}
    assert runs["adaptseg"]["translate"] == {"lge": True, "t2-unseen": False}
    pred = out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "predictions"
    unseen = list(csv.DictReader((pred / "t2-unseen" / "qc.csv").open()))
    assert unseen and all(r["translated"] == "False" and r["target_norm"] == "False" for r in unseen)  # source-like


def test_no_target_label_is_read_except_by_evaluation_and_the_oracle(bench):
    opened = bench["opened"]
    assert not any(k in opened for k in ("train:init", "train:source-only", "train:adaptseg"))  # garbage labels never touched
    oracle_reads = {Path(p).name for p in opened.get("train:target-oracle", [])}
    assert oracle_reads == {"case000.nii.gz", "case001.nii.gz", "case002.nii.gz", "case003.nii.gz"}  # its train+val cases only
    eval_reads = {Path(p).name for p in opened.get("other", [])}
    assert {f"case00{i}.nii.gz" for i in range(4, 8)} <= eval_reads  # evaluation read the test labels


def test_tables_agree_with_the_per_case_csv_and_compare_with_the_init(bench):
    out = bench["out"]
    rows = [r for r in csv.DictReader((out / "results" / "per_case.csv").open()) if r["test"] == "lge"]
    assert {r["method_id"] for r in rows} == {"init", "source-only", "adaptseg", "target-oracle"}
    assert {r["case"] for r in rows} == {"case004", "case005", "case006", "case007"}
    assert {r["method_id"]: r["role"] for r in rows} == {
        "init": "init",
        "source-only": "method",
        "adaptseg": "method",
        "target-oracle": "oracle",
    }
    per = {}
    for r in rows:
        per.setdefault(r["method_id"], {}).setdefault(r["case"], []).append(float(r["dice"]))
    means = {m: np.mean([np.mean(v) for v in cases.values()]) for m, cases in per.items()}
    stds = {m: np.std([np.mean(v) for v in cases.values()]) for m, cases in per.items()}
    md = (out / "results" / "results.md").read_text()
    lge = md.split("test set `lge`")[1].split("## ")[0]
    labels = {"init": "source-only (init)", "target-oracle": "target-oracle (ORACLE)"}
    lines = [x for x in lge.splitlines() if x.startswith("| ") and "±" in x][:4]  # the overlap table comes first
    assert [x.split(" | ")[0][2:] for x in lines] == ["source-only (init)", "source-only", "adaptseg", "target-oracle (ORACLE)"]
    for m in means:
        line = next(x for x in lines if x.startswith(f"| {labels.get(m, m)} |"))
        cells = line.split(" | ")
        assert f"{means[m]:.3f} ± {stds[m]:.3f}" == cells[4]  # the Dice mean column
        delta = "—" if m == "init" else f"{means[m] - means['init']:+.3f}"
        assert cells[9] == delta
        assert cells[11] == {"init": "40", "target-oracle": "40"}.get(m, "40 + 20")
    res = json.loads((out / "results" / "results.json").read_text())
    unit = next(u for u in res["units"] if u["test"] == "lge")
    ad = next(m for m in unit["methods"] if m["id"] == "adaptseg")
    assert ad["reference"] == "init" and ad["selection"] == "last step"
    expect = (means["adaptseg"] - means["init"]) / (means["target-oracle"] - means["init"])
    gap = ad["gap_recovered"]["dice"]
    assert (gap is None and means["target-oracle"] <= means["init"]) or gap == pytest.approx(expect)
    dice = [(t["test"], t["a"], t["b"]) for t in res["comparisons"] if t["metric"] == "dice"]
    assert dice == [
        ("lge", "source-only", "init"),
        ("lge", "adaptseg", "init"),
        ("lge", "target-oracle", "init"),
        ("lge", "adaptseg", "target-oracle"),
        ("t2-unseen", "source-only", "init"),
        ("t2-unseen", "adaptseg", "init"),
    ]
    assert res["n_comparisons"]["dice"] == 6
    # the evaluation per run says the same as the merged CSV
    ev = list(csv.DictReader((out / "runs" / "bssfp2lge" / "init" / "seed0" / "evaluation" / "lge" / "per_case.csv").open()))
    assert [float(r["dice"]) for r in ev] == [float(r["dice"]) for r in rows if r["method_id"] == "init"]
    summary = list(csv.DictReader((out / "results" / "summary.csv").open()))
    assert [(r["test"], r["row"]) for r in summary][:4] == [
        ("lge", "init"),
        ("lge", "source-only"),
        ("lge", "adaptseg"),
        ("lge", "target-oracle"),
    ]


def test_report_has_the_training_logs_of_every_stage(bench):
    text = (bench["out"] / "report.html").read_text()
    m = re.search(
        r'<img alt="Training curves, task bssfp2lge: init and adaptation stages \(logs/train.csv\)'
        r'; diagnostics: ([^"]+)" src="data:image/png;base64,([^"]+)"',
        text,
    )
    assert m, "no training-curves figure (with the diagnostics panels of the adaptseg stage)"
    assert "discriminator accuracy" in m.group(1).split(", ")
    import io

    import matplotlib.image as mpimg

    px = mpimg.imread(io.BytesIO(base64.b64decode(m.group(2))), format="png")
    assert px.shape[0] > 400 and px.shape[1] > 700  # 4 rows (init, source-only, adaptseg, oracle) x 4 groups
    assert "Against the init (mean Dice)" in text and "40 + 20" in text and "last step" in text


def test_report_renders_in_headless_chromium(bench, tmp_path):
    """The full report (a resumed benchmark, a method figure) in the browser; tests/report/test_browser.py checks the
    tiny benchmark's report on every CI run."""
    from tests.report.browser import render, require_chromium, screenshot

    report = bench["out"] / "report.html"
    text = report.read_text()
    assert text.count("data:image/png;base64,") >= 6 and 'src="http' not in text  # self-contained
    browser = require_chromium()
    rendered = render(browser, report, tmp_path, probe=True)
    assert rendered.console == [] and rendered.probe["errors"] == [] and rendered.probe["broken"] == 0, rendered
    dom = rendered.dom
    for key in (
        "segshift benchmark: phantom-tiny",
        "source-only (init)",
        "target-oracle (ORACLE)",
        "Dice mean",
        "gap recovered",
        "Against the init",
        "Paired tests",
        "Best, median and worst cases",
        "Training curves",
        "method_name: adaptseg",
        "code revision",
        "bssfp2lge/adaptseg/seed0: translation_grid.png",
        "QC validation",
        "QC scores against Dice",
    ):
        assert key in dom, key
    assert dom.count("<img") == text.count("<img ") >= 9 and dom.count("<table") == text.count("<table>")
    shot = screenshot(browser, report, tmp_path / "shot.png", tmp_path, size=(1400, 2400))
    import matplotlib.image as mpimg

    px = mpimg.imread(str(shot))
    assert px.shape[0] >= 2000 and px.shape[1] >= 1300
    assert float(px[..., :3].std()) > 0.05  # not a blank page
    assert len(np.unique((px[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200  # images, not just text


def test_report_rewrites_tables_older_than_the_benchmark_state(bench, tmp_path):
    import os

    out = tmp_path / "copy"
    shutil.copytree(bench["out"], out)
    for f in (out / "results").iterdir():  # tables written before the last runs finished
        f.write_text(f.read_text().replace("target-oracle", "stale-row"))
        os.utime(f, (1, 1))
    assert main(["report", str(out)]) == 0
    md, html = (out / "results" / "results.md").read_text(), (out / "report.html").read_text()
    assert "stale-row" not in md + html and "target-oracle (ORACLE)" in md
