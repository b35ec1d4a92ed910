"""The CI suite end to end: ``segshift benchmark phantom-tiny`` -> tables -> ``segshift report``.

One module-scoped benchmark (about a minute and a half on 2 CPU cores) serves every test
here. It is run three times:

1. killed during its second run (adaptseg, after its step-20 checkpoint);
2. continued: source-only is skipped, adaptseg resumes, the oracle trains;
3. after the oracle's checkpoint and done marker are deleted: only the oracle retrains.

Every training goes through a wrapper that counts it and, for non-oracle methods, swaps each
label file of the target domain for garbage while it trains (restored for evaluation), and
an audit hook records every opened label file, so a read of a target label would show.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segshift.bench import runner
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
    kill = {"on": True}

    def guarded_train(cfg, sources, target, run, resume=False, **kw):
        run = Path(run)
        method = json.loads((run / "run.json").read_text())["method"] if resume else cfg["method_name"]
        oracle = method == "target-oracle"
        calls.append({"method": method, "resume": resume, "run": str(run)})
        lge = out / "phantom" / "lge" / "labels"
        saved = {p: p.read_bytes() for p in lge.iterdir()}
        if not oracle:
            for p in saved:
                p.write_bytes(b"not a nifti: a target label was read")  # any read fails loudly
        _PHASE[0] = f"train:{method}"
        try:
            if kill["on"] and method == "adaptseg":
                real_train(cfg, sources, target, run, resume=resume, stop_after=20, **kw)
                raise Killed("benchmark killed mid-run")
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
    try:
        with pytest.raises(Killed):
            main(["benchmark", "phantom-tiny", "--out", str(out)])
        first = list(calls)
        assert main(["report", str(out)]) == 0  # a stopped benchmark can be reported: its finished runs
        partial = (out / "report.html").read_text()
        kill["on"] = False
        calls.clear()
        assert main(["benchmark", "phantom-tiny", "--out", str(out)]) == 0
        second = list(calls)
        results_before = (out / "results" / "results.md").read_text()
        oracle = out / "runs" / "bssfp2lge" / "target-oracle" / "seed0"
        (oracle / "bench.json").unlink()
        (oracle / "train" / "summary.json").unlink()
        shutil.rmtree(oracle / "train" / "checkpoints" / "last")
        calls.clear()
        assert main(["benchmark", "phantom-tiny", "--out", str(out)]) == 0
        third = list(calls)
        calls.clear()
        assert main(["benchmark", "phantom-tiny", "--out", str(out)]) == 0
        fourth = list(calls)
        opened = dict(_OPENED)
    finally:
        _OPENED = None
        mp.undo()
    _method_figure(out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "train" / "figures" / "translation_grid.png")
    assert main(["report", str(out)]) == 0
    return {"out": out, "calls": [first, second, third, fourth], "opened": opened, "results_before": results_before, "partial": partial}


def test_resumption_skips_finished_runs_and_continues_the_killed_one(bench):
    first, second, third, fourth = bench["calls"]
    assert [(c["method"], c["resume"]) for c in first] == [("source-only", False), ("adaptseg", False)]
    assert [(c["method"], c["resume"]) for c in second] == [("adaptseg", True), ("target-oracle", False)]
    assert [(c["method"], c["resume"]) for c in third] == [("target-oracle", False)]  # no checkpoint: restarted cleanly
    assert fourth == []  # everything done: nothing trains
    partial = bench["partial"]
    assert "<td>source-only</td>" in partial and "<td>adaptseg</td>" not in partial and "no oracle row" in partial
    # retraining the oracle from scratch reproduced it exactly (same seed, same machine)
    def scores(md: str) -> str:
        return md.split("## Runs and wall times")[0]

    assert scores((bench["out"] / "results" / "results.md").read_text()) == scores(bench["results_before"])
    out = bench["out"]
    runs = {r["method_id"]: r for r in json.loads((out / "benchmark.json").read_text())["runs"]}
    assert all(r["state"] == "done" for r in runs.values())
    ad = json.loads((out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "bench.json").read_text())
    assert ad["timing"]["trained"] == "resumed"
    # wall time counts the killed session too
    assert ad["timing"]["train_s"] == json.loads((out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "train_seconds.json").read_text())["seconds"]
    assert "## Runs and wall times" in (out / "results" / "results.md").read_text()
    summary = json.loads((out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "train" / "summary.json").read_text())
    assert summary["finished"] and summary["steps_done"] == 40
    steps = [int(r["step"]) for r in csv.DictReader((out / "runs" / "bssfp2lge" / "adaptseg" / "seed0" / "train" / "logs" / "train.csv").open())]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # the resumed log continues, no duplicate rows


def test_no_target_label_is_read_except_by_evaluation_and_the_oracle(bench):
    opened = bench["opened"]
    assert not any(k in opened for k in ("train:source-only", "train:adaptseg"))  # garbage labels were never touched
    oracle_reads = {Path(p).name for p in opened.get("train:target-oracle", [])}
    assert oracle_reads == {"case000.nii.gz", "case001.nii.gz", "case002.nii.gz", "case003.nii.gz"}  # its train+val cases only
    eval_reads = {Path(p).name for p in opened.get("other", [])}
    assert {f"case00{i}.nii.gz" for i in range(4, 8)} <= eval_reads  # evaluation read the test labels


def test_tables_agree_with_the_per_case_csv(bench):
    out = bench["out"]
    rows = list(csv.DictReader((out / "results" / "per_case.csv").open()))
    assert {r["method_id"] for r in rows} == {"source-only", "adaptseg", "target-oracle"}
    assert {r["case"] for r in rows} == {"case004", "case005", "case006", "case007"}
    per = {}
    for r in rows:
        per.setdefault(r["method_id"], {}).setdefault(r["case"], []).append(float(r["dice"]))
    means = {m: np.mean([np.mean(v) for v in cases.values()]) for m, cases in per.items()}
    stds = {m: np.std([np.mean(v) for v in cases.values()]) for m, cases in per.items()}
    md = (out / "results" / "results.md").read_text()
    for m in means:
        name = m + (" (ORACLE)" if m == "target-oracle" else "")
        line = next(x for x in md.splitlines() if x.startswith(f"| {name} |") and "±" in x)
        assert f"{means[m]:.3f} ± {stds[m]:.3f}" == line.split(" | ")[4]  # the Dice mean column
    res = json.loads((out / "results" / "results.json").read_text())
    gap = next(m for m in res["units"][0]["methods"] if m["id"] == "adaptseg")["gap_recovered"]["dice"]
    expect = (means["adaptseg"] - means["source-only"]) / (means["target-oracle"] - means["source-only"])
    assert (gap is None and means["target-oracle"] <= means["source-only"]) or gap == pytest.approx(expect)
    assert res["n_comparisons"]["dice"] == 3  # adaptseg and oracle vs source-only, adaptseg vs oracle
    # the evaluation per run says the same as the merged CSV
    ev = list(csv.DictReader((out / "runs" / "bssfp2lge" / "source-only" / "seed0" / "evaluation" / "lge" / "per_case.csv").open()))
    assert [float(r["dice"]) for r in ev] == [float(r["dice"]) for r in rows if r["method_id"] == "source-only"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(bench, tmp_path):
    report = bench["out"] / "report.html"
    text = report.read_text()
    assert text.count("data:image/png;base64,") >= 6 and "src=\"http" not in text  # self-contained
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium); the HTML checks above still ran")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,2400"]
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", report.as_uri()], check=True, capture_output=True, timeout=120)
    dom = subprocess.run([browser, *flags, "--dump-dom", report.as_uri()], check=True, capture_output=True, timeout=120, text=True).stdout
    for key in ("segshift benchmark: phantom-tiny", "target-oracle (ORACLE)", "Dice mean", "gap recovered", "Paired tests",
                "Best, median and worst cases", "Training curves", "method_name: adaptseg", "code revision",
                "bssfp2lge/adaptseg/seed0: translation_grid.png"):
        assert key in dom, key
    assert dom.count("<img") >= 7 and dom.count("<tr") >= 8
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
