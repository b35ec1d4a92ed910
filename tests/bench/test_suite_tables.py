"""Benchmark suites (parsing, checks) and tables (statistics against hand-computed values); nothing trains here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from segshift.bench.runner import Benchmark
from segshift.bench.suite import builtin_suites, load_suite, parse_suite
from segshift.bench.tables import compute, markdown, table_rows
from segshift.cli.main import main
from segshift.errors import InputFileError, SegshiftError
from segshift.methods import available_methods
from segshift.methods.base import REGISTRY
from segshift.methods.source_only import SourceOnly

MINIMAL = """
name: t
seeds: [0]
budget: {{steps: 5}}
methods: [source-only, target-oracle]
tasks:
  - name: a
    sources: [{{domain: {src}}}]
    target: {{domain: {tgt}, cases: [case000, case001]}}
    test: [{{name: lge, domain: {tgt}, cases: {test}}}]
    oracle: {{domain: {tgt}, train_cases: {otrain}, val_cases: [case003]}}
"""


def _suite(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    return p


def _write(tmp_path, phantom, test="[case008, case009]", otrain="[case004, case005]") -> Path:
    return _suite(tmp_path, MINIMAL.format(src=phantom["bssfp"], tgt=phantom["lge"], test=test, otrain=otrain))


def test_builtin_suites_parse_and_all_means_every_registered_method():
    assert {"phantom-tiny", "phantom", "cardiac-dev", "cardiac-quick"} <= set(builtin_suites())
    tiny = load_suite("phantom-tiny")
    assert [m.id for m in tiny.methods] == ["source-only", "adaptseg", "target-oracle"] and tiny.budget == {"steps": 20}
    assert [(i.id, i.method, dict(i.budget)) for i in tiny.inits] == [("init", "source-only", {"steps": 40})]
    assert [m.init for m in tiny.methods] == ["init", "init", None]  # the oracle trains from scratch
    dev = load_suite("cardiac-dev", root="/nowhere")
    reg = available_methods()
    every = [m.name for m in dev.methods if m.id == m.name]  # the `all` item; liu2020's RA variants follow it
    assert sorted(every) == sorted(reg) and every[0] == "source-only"
    assert [n for n in every if reg[n].uses_target_labels] == every[-1:]  # oracle row last
    extras = {m.id: m for m in dev.methods if m.id != m.name}
    assert {k: v.tasks for k, v in extras.items()} == {
        "unet-ra": ("acdc2bssfp",),
        "sdnet-ra": ("acdc2bssfp",),
        "adanet-s2t": ("bssfp2lge",),
        "adanet-hm": ("bssfp2lge",),
        "adanet-mda": ("bssfp2lge",),
        "adanet-fda": ("bssfp2lge",),
        "unetgan-600": ("bssfp2lge",),
        "gin-ipa-scratch": None,
        "bigaug-scratch": None,
        "source-only+tent": None,
        "source-only+flip": None,
        "gin-ipa-scratch+tent": None,
    }
    assert extras["source-only+tent"].tta == {"mode": "tent", "steps": 10, "lr": 0.001, "alpha": 0.5}
    assert extras["gin-ipa-scratch"].init is None and extras["source-only+flip"].init == "init"
    assert extras["unetgan-600"].budget == {"steps": 600} and dev.budget == {"steps": 150}
    assert ("adanet", "adabn") in dev.compare and ("advent", "adabn") in dev.compare
    assert [t.name for t in dev.tasks] == ["acdc2bssfp", "bssfp2lge"]
    assert [t.name for t in dev.tasks[0].tests] == ["bssfp", "lge-unseen"] and dev.tasks[0].oracle is not None
    assert dev.domain_path("data/acdc", Path("x")) == Path("/nowhere/data/acdc")


def test_all_inside_a_list_and_rows_restricted_to_tasks(phantom, tmp_path):
    text = MINIMAL.format(src=phantom["bssfp"], tgt=phantom["lge"], test="[case008, case009]", otrain="[case004]")
    text = text.replace(
        "methods: [source-only, target-oracle]", "methods: [all, {name: source-only, id: so-b, set: [train.lr=0.002], tasks: [b]}]"
    )
    text += "  - name: b\n    sources: [{domain: %s}]\n    test: [{name: lge, domain: %s, cases: [case009]}]\n" % (
        phantom["bssfp"],
        phantom["lge"],
    )
    suite = parse_suite(text, tmp_path / "s.yaml")
    assert [m.id for m in suite.methods][-1] == "so-b" and len(suite.methods) == len(available_methods()) + 1
    plans = Benchmark(suite, tmp_path / "out").plan()
    a = {p.method_id for p in plans if p.task == "a"}
    b = {p.method_id: p for p in plans if p.task == "b"}
    assert "so-b" not in a and "so-b" in b and "train.lr=0.002" in b["so-b"].sets and not b["so-b"].skipped
    with pytest.raises(InputFileError, match=r"unknown task\(s\) nope"):
        parse_suite(text.replace("tasks: [b]", "tasks: [nope]"), tmp_path / "s.yaml")


def test_an_oracle_is_evaluated_on_test_sets_of_its_own_domain_only(phantom, tmp_path):
    text = MINIMAL.format(src=phantom["bssfp"], tgt=phantom["lge"], test="[case008, case009]", otrain="[case004]")
    text = text.replace("test: [{name: lge,", "test: [{name: other, domain: %s, cases: [case009]}, {name: lge," % phantom["bssfp"])
    text = text.replace(
        "sources: [{domain: %s}]" % phantom["bssfp"],
        "sources: [{domain: %s, train_cases: [case000, case001], val_cases: [case002]}]" % phantom["bssfp"],
    )
    plans = {p.method_id: p for p in Benchmark(parse_suite(text, tmp_path / "s.yaml"), tmp_path / "out").plan()}
    assert [t.name for t in plans["source-only"].tests] == ["other", "lge"]
    assert [t.name for t in plans["target-oracle"].tests] == ["lge"]


def test_a_new_method_joins_with_no_harness_change(monkeypatch, phantom, tmp_path):
    class Newcomer(SourceOnly):
        name = "newcomer"
        uses_target = True

    monkeypatch.setitem(REGISTRY, "newcomer", Newcomer)
    text = MINIMAL.format(src=phantom["bssfp"], tgt=phantom["lge"], test="[case008, case009]", otrain="[case004]")
    suite = parse_suite(text.replace("methods: [source-only, target-oracle]", "methods: all"), tmp_path / "s.yaml")
    plans = Benchmark(suite, tmp_path / "out").plan()
    by_id = {p.method_id: p for p in plans}
    assert set(by_id) == set(available_methods()) and "newcomer" in by_id
    new = by_id["newcomer"]
    assert new.target == phantom["lge"].resolve() and 'data.target_cases=["case000", "case001"]' in new.sets
    assert by_id["target-oracle"].oracle and not new.oracle
    assert not (tmp_path / "out").exists()  # planning writes nothing


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace("methods: [source-only, target-oracle]", "methods: [source-only, no-such-method]"),
            "unknown method 'no-such-method'",
        ),
        (lambda t: t.replace("tasks:", "tasks: [oops"), "is not valid YAML"),
        (lambda t: t.replace("budget: {steps: 5}", "budget: {minutes: 5}"), "unknown key(s) minutes"),
        (lambda t: t.replace("seeds: [0]", "seeds: [0]\nsedes: [1]"), "unknown key(s) sedes"),
        (lambda t: t.replace("budget: {steps: 5}", "budget: {steps: 0}"), "steps must be a positive integer"),
    ],
)
def test_malformed_suites_are_refused_naming_the_file(tmp_path, phantom, edit, message):
    path = _suite(tmp_path, edit(MINIMAL.format(src=phantom["bssfp"], tgt=phantom["lge"], test="[case008]", otrain="[case004]")))
    with pytest.raises(InputFileError) as err:
        load_suite(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_test_cases_overlapping_oracle_training_are_refused(tmp_path, phantom, capsys):
    path = _write(tmp_path, phantom, test="[case004, case009]", otrain="[case004, case005]")
    out = tmp_path / "out"
    assert main(["benchmark", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "case004" in err and "oracle training/validation" in err
    assert not out.exists()  # nothing half-written
    # the oracle's validation case counts too
    with pytest.raises(SegshiftError, match="case003"):
        Benchmark(load_suite(_write(tmp_path, phantom, test="[case003]")), out).plan()


def test_missing_domain_unlabelled_test_case_and_pool_overlap(tmp_path, phantom):
    text = MINIMAL.format(src=tmp_path / "missing", tgt=phantom["lge"], test="[case008]", otrain="[case004]")
    with pytest.raises(SegshiftError, match=r"task a: source domain .*missing.*is not a folder"):
        Benchmark(load_suite(_suite(tmp_path, text)), tmp_path / "out").plan()
    with pytest.raises(SegshiftError, match="target pool holds test cases case001"):
        Benchmark(load_suite(_write(tmp_path, phantom, test="[case001, case008]")), tmp_path / "out").plan()


def test_epoch_budget_counts_training_slices(tmp_path, phantom):
    text = MINIMAL.format(src=phantom["bssfp"], tgt=phantom["lge"], test="[case008]", otrain="[case004, case005]")
    suite = load_suite(_suite(tmp_path, text.replace("budget: {steps: 5}", "budget: {epochs: 2}\nset: [train.batch_size=4]")))
    plans = {p.method_id: p for p in Benchmark(suite, tmp_path / "out").plan()}
    import nibabel as nib

    from segshift.data.domain import Domain

    lge = Domain(phantom["lge"])
    n = sum(nib.load(str(lge.image_path(c))).shape[2] for c in ("case004", "case005"))
    assert plans["target-oracle"].steps == math.ceil(2 * n / 4)


# -- tables --------------------------------------------------------------------------------


def _rows():
    """Per-case rows of a hand-made benchmark: 3 methods, 4 cases, 2 structures, oracle with 2 seeds."""
    dice = {  # method -> structure -> per-case Dice
        "source-only": {"LV": [0.6, 0.7, 0.8, 0.5], "RV": [0.4, 0.5, 0.6, 0.3]},
        "adaptseg": {"LV": [0.7, 0.8, 0.8, 0.7], "RV": [0.5, 0.6, 0.6, 0.5]},
        "target-oracle": {"LV": [0.9, 0.9, 0.9, 0.9], "RV": [0.7, 0.8, 0.7, 0.8]},
    }
    rows = []
    for mid, per in dice.items():
        seeds = [0, 1] if mid == "target-oracle" else [0]
        for seed in seeds:
            for s, vals in per.items():
                for i, v in enumerate(vals):
                    v2 = v + (0.02 if seed == 1 else 0.0) - (0.01 if mid == "target-oracle" else 0.0)
                    rows.append(
                        {
                            "task": "t",
                            "test": "x",
                            "method_id": mid,
                            "method": mid,
                            "oracle": mid == "target-oracle",
                            "seed": seed,
                            "case": f"c{i}",
                            "structure": s,
                            "dice": v2,
                            "jaccard": v2 / (2 - v2),
                            "assd_mm": 1.0 + i,
                            "hd95_mm": 3.0 + i if s == "LV" or i else float("nan"),
                            "status": "ok",
                        }
                    )
    return rows


def test_tables_match_hand_computed_values():
    res = compute(_rows(), compare=[["adaptseg", "target-oracle"]], n_boot=2000)
    u = res["units"][0]
    m = {x["id"]: x for x in u["methods"]}
    # source-only LV: mean 0.65, population std sqrt(0.0125)
    assert m["source-only"]["stats"]["LV"]["dice"]["mean"] == pytest.approx(0.65)
    assert m["source-only"]["stats"]["LV"]["dice"]["std"] == pytest.approx(math.sqrt(0.0125))
    # mean over structures per case: so (0.5,0.6,0.7,0.4) -> 0.55; adaptseg (0.6,0.7,0.7,0.6) -> 0.65;
    # oracle seeds averaged: +0.01 -0.01 -> (0.8,0.85,0.8,0.85) -> 0.825
    assert m["source-only"]["stats"]["mean"]["dice"]["mean"] == pytest.approx(0.55)
    assert m["target-oracle"]["stats"]["mean"]["dice"]["mean"] == pytest.approx(0.825)
    assert m["adaptseg"]["gap_recovered"]["dice"] == pytest.approx((0.65 - 0.55) / (0.825 - 0.55))
    assert m["source-only"]["gap_recovered"]["dice"] == 0 and m["target-oracle"]["gap_recovered"]["dice"] == pytest.approx(1)
    # a case with a NaN structure has a NaN mean over structures, counted, not dropped silently
    assert m["source-only"]["stats"]["mean"]["hd95_mm"]["n_nan"] == 1 and m["source-only"]["stats"]["RV"]["hd95_mm"]["n"] == 3
    # paired tests: 2 vs source-only + 1 chosen pair per metric, Holm over 3
    dice_tests = [t for t in res["comparisons"] if t["metric"] == "dice"]
    assert [(t["a"], t["b"]) for t in dice_tests] == [
        ("adaptseg", "source-only"),
        ("target-oracle", "source-only"),
        ("adaptseg", "target-oracle"),
    ]
    assert res["n_comparisons"]["dice"] == 3
    so = np.mean([[0.6, 0.7, 0.8, 0.5], [0.4, 0.5, 0.6, 0.3]], axis=0)
    ad = np.mean([[0.7, 0.8, 0.8, 0.7], [0.5, 0.6, 0.6, 0.5]], axis=0)
    t0 = dice_tests[0]
    assert t0["t_p"] == pytest.approx(st.ttest_rel(ad, so).pvalue)
    assert t0["wilcoxon_p"] == pytest.approx(st.wilcoxon(ad - so).pvalue)
    ps = sorted(t["wilcoxon_p"] for t in dice_tests)
    assert min(t["wilcoxon_p_holm"] for t in dice_tests) == pytest.approx(min(1.0, 3 * ps[0]))
    # the Markdown cells are the stats, the oracle row says ORACLE
    head, body = table_rows(u, res["structures"], ("dice", "jaccard"), gap=True)
    assert head[:4] == ["method", "Dice LV", "Dice RV", "Dice mean"]
    assert head[-4:] == ["Δ Dice vs source-only", "gap recovered (Dice)", "steps", "selection"]  # no inits: source-only is the reference
    assert body[0][1] == f"0.650 ± {math.sqrt(0.0125):.3f}" and body[0][3] == "0.550 ± 0.112"
    assert body[2][0] == "target-oracle (ORACLE)" and body[1][-3] == f"{0.1 / 0.275:.2f}" and body[1][-4] == "+0.100"
    md = markdown(res)
    assert "| source-only | 0.650 ± 0.112 |" in md and "3 comparisons per metric" in md


def test_cli_lists_the_commands_and_report_refuses_a_non_benchmark_folder(tmp_path, capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "benchmark" in out and "report" in out
    (tmp_path / "x").mkdir()
    assert main(["report", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "benchmark.json: missing" in err and not (tmp_path / "x" / "report.html").exists()
    assert main(["benchmark", "no-such-suite", "--out", str(tmp_path / "o")]) == 2
    assert "not a built-in suite (" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_plan_lists_runs_and_writes_nothing(tmp_path, phantom, capsys):
    path = _write(tmp_path, phantom)
    out = tmp_path / "out"
    assert main(["benchmark", str(path), "--out", str(out), "--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "a/source-only/seed0  runs/a/source-only/seed0  (5 steps)" in lines
    assert "a/target-oracle/seed0 [ORACLE]  runs/a/target-oracle/seed0  (5 steps)" in lines
    assert not out.exists()


def test_steps_column_counts_every_stage_of_a_finished_run(tmp_path):
    from segshift.bench.runner import _steps_trained

    run = tmp_path / "train"
    (run / "checkpoints" / "best").mkdir(parents=True)
    assert _steps_trained(run, 200) == 200  # no summary yet: the budget
    (run / "summary.json").write_text('{"finished": true, "steps_done": 350, "steps_total": 350}')
    assert _steps_trained(run, 200) == 350  # e.g. unetgan: 200 U-Net + 150 translation steps
    (run / "summary.json").write_text('{"finished": false, "steps_done": 100, "steps_total": 350}')
    assert _steps_trained(run, 200) == 200


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("real-adanet-table1", ["S2T", "S2T+HM", "S2T+HM+MDA", "S2T+HM+MDA+FDA", "S2T+HM+MDA+FDA+GFRM", "adaptseg", "advent"]),
        ("real-translation", ["source-only", "attent", "source-only-resunet", "unetgan", "cyclegan"]),
        ("diag28", ["adabn", "adaptseg", "adaptseg-l0.01", "adaptseg-l0.1", "advent", "attent"]),
        ("sdnet-bn", ["sdnet-ss", "sdnet-fa"]),
    ],
)
def test_the_reproduction_suites_of_scripts_parse_and_every_row_resolves(name, rows):
    """scripts/suites/*.yaml: the reproduction suites (train, predict and evaluate per row) parse and resolve."""
    from segshift.engine.config import resolve
    from tests.conftest import REPO

    suite = load_suite(REPO / "scripts" / "suites" / f"{name}.yaml")
    assert (
        suite.name == name and [m.id for m in suite.methods] == rows and (not suite.inits) == (name.startswith("real-"))
    )  # real-*: from scratch, as the scripts were
    assert suite.root.resolve() == REPO.resolve() and suite.domain_path("data/acdc", Path("x")) == suite.root / "data/acdc"
    for m in suite.methods:  # every override is a known setting of its method (checked without data)
        cfg = resolve(m.name, sets=list(suite.sets + m.sets))
        assert cfg["method_name"] == m.name
