"""Shared inits: suite parsing, planning (once per task and seed, like-for-like, staleness) and
the tables against the init. Nothing trains here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from segshift.bench.runner import Benchmark, RunPlan, _check_like_for_like
from segshift.bench.suite import builtin_suites, load_suite, parse_suite
from segshift.bench.tables import compute, markdown, summary_csv, table_rows, versus_rows
from segshift.errors import InputFileError, SegshiftError
from segshift.methods.base import REGISTRY
from segshift.methods.source_only import SourceOnly

SUITE = """
name: t
seeds: [0, 1]
inits:
  - {{id: init, method: source-only, budget: {{steps: 7}}}}
budget: {{steps: 3}}
methods: [source-only, adaptseg, target-oracle]
tasks:
  - name: a
    sources: [{{domain: {src}, val_cases: [case008, case009]}}]
    target: {{domain: {tgt}, cases: [case000, case001]}}
    test: [{{name: lge, domain: {tgt}, cases: [case008, case009]}}]
    oracle: {{domain: {tgt}, train_cases: [case004, case005], val_cases: [case003]}}
"""


def _text(phantom, **edits: str) -> str:
    text = SUITE.format(src=phantom["bssfp"], tgt=phantom["lge"])
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def _parse(phantom, tmp_path, text: str | None = None):
    return parse_suite(text or _text(phantom), tmp_path / "s.yaml")


# -- parsing ---------------------------------------------------------------------------------


def test_rows_default_to_the_first_init_and_oracles_to_none(tmp_path, phantom):
    text = _text(
        phantom,
        **{
            "  - {id: init, method: source-only, budget: {steps: 7}}": "  - {id: init, method: source-only, budget: {steps: 7}}\n"
            "  - {id: init-b, method: source-only, budget: {epochs: 1}, set: [train.lr=0.002]}",
            "methods: [source-only, adaptseg, target-oracle]": "method_init: {advent: init-b}\n"
            "methods: [source-only, adaptseg, advent, {name: adaptseg, id: ad-scratch, init: none},"
            " {name: adaptseg, id: ad-b, init: init-b}, target-oracle]",
        },
    )
    suite = _parse(phantom, tmp_path, text)
    assert [(i.id, i.method, dict(i.budget), i.sets) for i in suite.inits] == [
        ("init", "source-only", {"steps": 7}, ()),
        ("init-b", "source-only", {"epochs": 1}, ("train.lr=0.002",)),
    ]
    assert {m.id: m.init for m in suite.methods} == {
        "source-only": "init",
        "adaptseg": "init",
        "advent": "init-b",
        "ad-scratch": None,
        "ad-b": "init-b",
        "target-oracle": None,
    }
    assert suite.budget == {"steps": 3}
    no_inits = _parse(phantom, tmp_path, _text(phantom, **{"inits:\n  - {id: init, method: source-only, budget: {steps: 7}}\n": ""}))
    assert no_inits.inits == () and all(m.init is None for m in no_inits.methods)  # suites without inits: all from scratch


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        (
            {"methods: [source-only, adaptseg, target-oracle]": "methods: [source-only, {name: adaptseg, init: nope}]"},
            "methods[1].init: unknown init 'nope'; the suite's inits: init (or 'none')",
        ),
        (
            {"  - {id: init, method: source-only, budget: {steps: 7}}": "  - {id: init, method: target-oracle, budget: {steps: 7}}"},
            "inits[0].method: target-oracle trains on target labels",
        ),
        (
            {
                "  - {id: init, method: source-only, budget: {steps: 7}}": "  - {id: init, method: source-only, budget: {steps: 7}}\n  - {id: init, method: sdnet-ss, budget: {steps: 7}}"
            },
            "duplicate init ids init",
        ),
        (
            {
                "  - {id: init, method: source-only, budget: {steps: 7}}": "  - {id: adaptseg, method: source-only, budget: {steps: 7}}",
                "methods: [source-only, adaptseg, target-oracle]": "methods: [source-only, {name: adaptseg, init: adaptseg}]",
            },
            "method id(s) adaptseg are also init ids",
        ),
        (
            {"  - {id: init, method: source-only, budget: {steps: 7}}": "  - {id: init, method: source-only}"},
            "inits[0]: missing key(s) budget",
        ),
        (
            {
                "  - {id: init, method: source-only, budget: {steps: 7}}": "  - {id: init, method: source-only, steps: 7, budget: {steps: 7}}"
            },
            "inits[0]: unknown key(s) steps",
        ),
        (
            {"  - {id: init, method: source-only, budget: {steps: 7}}": "  - {id: none, method: source-only, budget: {steps: 7}}"},
            "inits[0].id: an init id is a non-empty name without '/' other than 'none'",
        ),
        (
            {"  - {id: init, method: source-only, budget: {steps: 7}}": "  - {id: init, method: no-such, budget: {steps: 7}}"},
            "inits[0].method: unknown method 'no-such'",
        ),
        (
            {"methods: [source-only, adaptseg, target-oracle]": "methods: [source-only, {name: target-oracle, init: init}]"},
            "methods[1].init: target-oracle trains on target labels from scratch",
        ),
        (
            {"methods: [source-only, adaptseg, target-oracle]": "method_init: {target-oracle: init}\nmethods: all"},
            "method_init.target-oracle: target-oracle trains on target labels from scratch",
        ),
        (
            {"methods: [source-only, adaptseg, target-oracle]": "method_init: {nosuch: init}\nmethods: all"},
            "method_init: unknown method(s) nosuch",
        ),
        (
            {"methods: [source-only, adaptseg, target-oracle]": "method_init: {adaptseg: nope}\nmethods: all"},
            "method_init.adaptseg: unknown init 'nope'",
        ),
        (
            {"methods: [source-only, adaptseg, target-oracle]": "methods: [{name: adaptseg, set: [init=/some/run]}]"},
            "the harness sets init=",
        ),
        (
            {
                "inits:\n  - {id: init, method: source-only, budget: {steps: 7}}\n": "",
                "methods: [source-only, adaptseg, target-oracle]": "methods: [{name: adaptseg, init: init}]",
            },
            "init 'init': this suite has no inits: section",
        ),
        (
            {"methods: [source-only, adaptseg, target-oracle]": "methods: [source-only, adaptseg]\ncompare: [[adaptseg, nope]]"},
            "compare[0]: expected a pair of two different method (or init) ids",
        ),
    ],
)
def test_bad_init_sections_are_refused_naming_the_file(tmp_path, phantom, edits, message):
    path = tmp_path / "bad.yaml"
    path.write_text(_text(phantom, **edits))
    with pytest.raises(InputFileError) as err:
        load_suite(path)
    assert str(path) in str(err.value) and message in str(err.value)


# -- planning --------------------------------------------------------------------------------


def test_each_init_is_planned_once_per_task_and_seed_before_its_rows(tmp_path, phantom):
    text = _text(
        phantom,
        **{
            "  - {id: init, method: source-only, budget: {steps: 7}}": "  - {id: init, method: source-only, budget: {steps: 7}}\n"
            "  - {id: unused, method: noise-aug, budget: {steps: 9}}",
            "val_cases: [case008, case009]}]": "val_cases: [case008, case009], train_cases: 'case00[0-5]'}]",
            "cases: [case008, case009]}]": "cases: [case008, case009]}, {name: src-test, domain: %s, cases: [case007]}]" % phantom["bssfp"],
        },
    )
    out = tmp_path / "out"
    plans = Benchmark(_parse(phantom, tmp_path, text), out).plan()
    assert [p.key for p in plans] == [
        "a/init/seed0",
        "a/init/seed1",
        "a/source-only/seed0",
        "a/source-only/seed1",
        "a/adaptseg/seed0",
        "a/adaptseg/seed1",
        "a/target-oracle/seed0",
        "a/target-oracle/seed1",
    ]
    by = {p.key: p for p in plans}
    init0 = by["a/init/seed0"]
    assert init0.role == "init" and init0.label == "source-only (init)" and init0.steps == 7 and init0.init is None
    assert not any(s.startswith("init=") for s in init0.sets)
    for key in ("a/source-only/seed1", "a/adaptseg/seed1"):
        p = by[key]
        assert p.init is by["a/init/seed1"] and p.steps == 3  # the suite budget is the stage's
        assert f'init="{(out / "runs" / "a" / "init" / "seed1" / "train").resolve()}"' in p.sets
        assert p.spec()["init"] == {"key": "a/init/seed1", "fingerprint": by["a/init/seed1"].fingerprint()}
    oracle = by["a/target-oracle/seed0"]
    assert oracle.init is None and oracle.steps == 7 and oracle.role == "oracle"  # from scratch, with the init's budget
    assert "init" not in oracle.spec() and "role" not in oracle.spec()  # a row without init: no init keys in its fingerprint
    assert [t.name for t in init0.tests] == ["lge", "src-test"]  # an init is evaluated on every test set


def test_stage_set_reaches_the_warm_started_rows_only(tmp_path, phantom):
    text = _text(
        phantom,
        **{
            "budget: {steps: 3}": "budget: {steps: 3}\nset: [train.lr=0.002]\nstage_set: [train.lr=0.0001]",
            "methods: [source-only, adaptseg, target-oracle]": "methods: [source-only, {name: adaptseg, set: [train.lr=0.0003]}, "
            "{name: advent, id: adv-scratch, init: none}, target-oracle]",
        },
    )
    by = {p.key: p for p in Benchmark(_parse(phantom, tmp_path, text), tmp_path / "out").plan()}
    lr = {k: p.config["train"]["lr"] for k, p in by.items() if k.endswith("seed0")}
    assert lr == {
        "a/init/seed0": 0.002,
        "a/source-only/seed0": 0.0001,
        "a/adaptseg/seed0": 0.0003,  # the row's own wins
        "a/adv-scratch/seed0": 0.002,
        "a/target-oracle/seed0": 0.002,
    }
    path = tmp_path / "bad.yaml"
    path.write_text(
        _text(
            phantom,
            **{
                "inits:\n  - {id: init, method: source-only, budget: {steps: 7}}\n": "",
                "budget: {steps: 3}": "budget: {steps: 3}\nstage_set: [train.lr=0.0001]",
            },
        )
    )
    with pytest.raises(InputFileError, match="stage_set: sets the warm-started rows' adaptation stage, but the suite has no inits"):
        load_suite(path)


def test_a_changed_init_makes_its_dependants_stale(tmp_path, phantom):
    out = tmp_path / "out"
    before = {p.key: p for p in Benchmark(_parse(phantom, tmp_path), out).plan()}
    changed = _parse(phantom, tmp_path, _text(phantom, **{"budget: {steps: 7}}": "budget: {steps: 7}, set: [train.lr=0.002]}"}))
    bench = Benchmark(changed, out)
    after = {p.key: p for p in bench.plan()}
    for key in ("a/init/seed0", "a/source-only/seed0", "a/adaptseg/seed1"):
        assert before[key].fingerprint() != after[key].fingerprint(), key
    assert before["a/target-oracle/seed0"].fingerprint() == after["a/target-oracle/seed0"].fingerprint()  # not an init's dependant
    for p in before.values():  # folders made by the first version of the suite
        p.folder.mkdir(parents=True)
        (p.folder / "spec.json").write_text(json.dumps({"fingerprint": p.fingerprint(), **p.spec()}))
    with pytest.raises(SegshiftError, match=r"runs/a/init/seed0: this run folder was made by a different spec"):
        bench.run()
    with pytest.raises(SegshiftError, match=r"runs/a/adaptseg/seed0: this run folder was made by a different spec"):
        bench._check_spec(after["a/adaptseg/seed0"])
    bench._check_spec(after["a/target-oracle/seed0"])  # still valid


def test_a_row_of_another_network_family_is_refused_at_plan_time(tmp_path, phantom, monkeypatch):
    class OtherFamily(SourceOnly):
        name = "other-family"
        init_nets = ("sdnet",)

    monkeypatch.setitem(REGISTRY, "other-family", OtherFamily)
    path = tmp_path / "fam.yaml"
    path.write_text(_text(phantom, **{"methods: [source-only, adaptseg, target-oracle]": "methods: [source-only, other-family]"}))
    with pytest.raises(SegshiftError) as err:
        Benchmark(load_suite(path), tmp_path / "out").plan()
    msg = str(err.value)
    assert str(path) in msg and "task a: method other-family: cannot be warm-started from init init (source-only)" in msg
    assert "loads its networks sdnet, and source-only has seg" in msg and "method_init" in msg
    # the same row from an init of its own family plans
    path.write_text(
        _text(
            phantom,
            **{
                "  - {id: init, method: source-only, budget: {steps: 7}}": "  - {id: init, method: source-only, budget: {steps: 7}}\n  - {id: init-o, method: other-family, budget: {steps: 7}}",
                "methods: [source-only, adaptseg, target-oracle]": "method_init: {other-family: init-o}\nmethods: [source-only, other-family]",
            },
        )
    )
    plans = {p.key: p for p in Benchmark(load_suite(path), tmp_path / "out").plan()}
    assert plans["a/other-family/seed0"].init is plans["a/init-o/seed0"]


def test_a_row_whose_networks_cannot_be_built_is_refused_at_plan_time(tmp_path, phantom):
    """adanet's D_f at 1/4 of an 80 px crop: refused when planned, before any run trains (not at its first step)."""
    path = tmp_path / "fda.yaml"
    rows = "set: [model.name=unet, 'data.preprocess.crop_size=[80,80]']\nmethods: [source-only, {name: adanet, id: adanet-fda4, set: [method.fda_downsample=4]}]"
    path.write_text(_text(phantom, **{"methods: [source-only, adaptseg, target-oracle]": rows}))
    out = tmp_path / "out"
    with pytest.raises(SegshiftError) as err:
        Benchmark(load_suite(path), out).plan()
    assert f"{path}: task a: method adanet-fda4: adanet: D_f sees 20x20 (crop 80x80 / 4), too small" in str(err.value)
    assert not out.exists()
    path.write_text(path.read_text().replace("fda_downsample=4", "fda_downsample=2"))
    assert "a/adanet-fda4/seed1" in {p.key for p in Benchmark(load_suite(path), out).plan()}


@pytest.mark.parametrize(
    ("row_set", "problem"),
    [
        ('"model.kwargs={features: [4, 8]}"', "model.kwargs: this run {'features': [4, 8]}, init run {}"),
        ("model.name=attention_unet", "model.name: this run 'attention_unet', init run 'unet'"),
        ("data.preprocess.target_spacing=2.0", "data.preprocess.target_spacing: this run 2.0, init run 1.5"),
        ("data.preprocess.histmatch=true", None),  # histogram matching may be switched on by the row
        ("data.preprocess.histmatch=true, data.preprocess.histmatch_levels=64", None),  # with its own levels
        ("data.preprocess.histmatch_levels=64", None),  # levels of a histogram matching neither run does
        ("data.val_fraction=0.5", "source validation cases of"),
    ],
)
def test_a_row_must_keep_its_inits_network_preprocessing_and_split(tmp_path, phantom, row_set, problem):
    path = tmp_path / "l4l.yaml"
    path.write_text(
        _text(
            phantom,
            **{
                "methods: [source-only, adaptseg, target-oracle]": f"methods: [source-only, {{name: adaptseg, set: [{row_set}]}}]",
                ", val_cases: [case008, case009]}": "}",
            },
        )
    )
    bench = Benchmark(load_suite(path), tmp_path / "out")
    if problem is None:
        assert {p.key for p in bench.plan()} >= {"a/adaptseg/seed0", "a/init/seed0"}
        return
    with pytest.raises(SegshiftError) as err:
        bench.plan()
    msg = str(err.value)
    assert str(path) in msg and "task a: method adaptseg: differs from its init init in" in msg and problem in msg
    assert "init: none" in msg


def test_an_init_not_made_on_a_task_skips_its_rows(tmp_path, phantom):
    # an init that adapts (as sdnet-ss) needs a target pool; on an unseen-domain task it is not made, nor are its rows
    text = _text(
        phantom,
        **{
            "method: source-only, budget": "method: adaptseg, budget",
            "    target: {domain: %s, cases: [case000, case001]}\n" % phantom["lge"]: "",
            "    oracle: {domain: %s, train_cases: [case004, case005], val_cases: [case003]}\n" % phantom["lge"]: "",
        },
    )
    plans = Benchmark(_parse(phantom, tmp_path, text), tmp_path / "out").plan()
    assert "a/init/seed0" not in {p.key for p in plans}
    so = next(p for p in plans if p.key == "a/source-only/seed0")
    assert so.skipped.startswith("its init init is not made on this task (adapts to an unlabelled target pool")


def test_builtin_suites_rows_are_like_for_like_with_their_inits():
    """Every row of the built-in suites resolves to its init's model and preprocessing (checked without data)."""
    from segshift.engine.config import resolve
    from segshift.methods import get_method
    from segshift.methods.adanet import ABLATIONS

    def cfg(name: str, sets) -> dict:
        return resolve(name, sets=list(sets))

    for name in builtin_suites():
        suite = load_suite(name, root="/nowhere")
        assert suite.inits, name
        for task in suite.tasks:
            for m in suite.methods:
                if m.init is None or (m.tasks and task.name not in m.tasks):
                    continue
                init = suite.init(m.init)
                assert get_method(m.name).init_nets == get_method(init.method).init_nets, (name, m.id)
                common = {"task": task.name, "seed": 0, "oracle": False, "sources": [], "tests": [], "steps": 1}
                row = RunPlan(
                    **common,
                    method_id=m.id,
                    method=m.name,
                    folder=Path("x"),
                    config=cfg(m.name, suite.sets + task.sets + suite.stage_sets + m.sets),
                )
                ini = RunPlan(
                    **common,
                    method_id=init.id,
                    method=init.method,
                    folder=Path("y"),
                    config=cfg(init.method, suite.sets + task.sets + init.sets),
                )
                _check_like_for_like(f"{name}/{task.name}/{m.id}", row, ini)
                assert row.config["model"]["name"] == "unet" or get_method(m.name).init_nets != ("seg",), (name, m.id)
    dev, quick = load_suite("cardiac-dev", root="/x"), load_suite("cardiac-quick", root="/x")
    rows = {m.id: m for m in dev.methods}
    adanet_set = tuple(rows["adanet"].sets)  # method_set.adanet
    for mid, key in {"adanet-s2t": "S2T", "adanet-hm": "S2T+HM", "adanet-mda": "S2T+HM+MDA", "adanet-fda": "S2T+HM+MDA+FDA"}.items():
        assert rows[mid].name == "adanet" and rows[mid].sets == adanet_set + tuple(ABLATIONS[key]) and rows[mid].tasks == ("bssfp2lge",)
    assert ABLATIONS["S2T+HM+MDA+FDA+GFRM"] == [] and rows["adanet"].tasks is None  # the full row is `adanet`
    assert {m.id: m.init for m in dev.methods if m.name.startswith("sdnet")} == {
        "sdnet": "init-sdnet",
        "sdnet-fa": "init-sdnet",
        "sdnet-ss": "init-sdnet",
        "sdnet-ra": "init-sdnet",
    }
    assert [t.name for t in quick.tasks] == ["bssfp2lge"]
    assert [(m.id, m.init) for m in quick.methods] == [
        ("source-only", "init"),
        ("adabn", "init"),
        ("adanet", "init"),
        ("advent", "init"),
        ("attent", "init"),
        ("unetgan", "init"),
        ("sdnet-fa", "init-sdnet"),
    ]
    for suite in (dev, quick):
        assert "TODO" not in suite.text  # calibrated (docs/benchmark.md)
        assert [(i.id, dict(i.budget)) for i in suite.inits] == [("init", {"steps": 1000}), ("init-sdnet", {"steps": 1500})]
        assert suite.budget == {"steps": 150} and suite.stage_sets == ("train.lr=0.0001",)


# -- tables ----------------------------------------------------------------------------------


def _rows_and_runs():
    """A hand-made benchmark with an init: 4 cases, 2 structures; rows listed out of order on purpose."""
    dice = {
        "target-oracle": {"LV": [0.9, 0.9, 0.9, 0.9], "RV": [0.8, 0.8, 0.8, 0.8]},
        "adaptseg": {"LV": [0.7, 0.8, 0.8, 0.7], "RV": [0.5, 0.6, 0.6, 0.5]},
        "init": {"LV": [0.6, 0.7, 0.8, 0.5], "RV": [0.4, 0.5, 0.6, 0.3]},
        "source-only": {"LV": [0.6, 0.7, 0.6, 0.5], "RV": [0.4, 0.5, 0.5, 0.4]},
        "scratch": {"LV": [0.5, 0.5, 0.5, 0.5], "RV": [0.3, 0.3, 0.3, 0.3]},
    }
    meta = {
        "init": ("source-only", "init", None, 40, "source validation Dice"),
        "source-only": ("source-only", "method", "init", 20, "last step"),
        "adaptseg": ("adaptseg", "method", "init", 20, "last step"),
        "scratch": ("adaptseg", "method", None, 40, "source validation Dice"),
        "target-oracle": ("target-oracle", "oracle", None, 40, "oracle: validation on labelled target cases"),
    }
    rows, runs = [], []
    for mid, per in dice.items():
        method, role, init, steps, sel = meta[mid]
        runs.append(
            {
                "key": f"t/{mid}/seed0",
                "task": "t",
                "method_id": mid,
                "method": method,
                "seed": 0,
                "oracle": role == "oracle",
                "role": role,
                "init": init,
                "label": "source-only (init)" if role == "init" else None,
                "state": "ran",
                "steps": steps,
                "selection": sel,
            }
        )
        for s, vals in per.items():
            for i, v in enumerate(vals):
                rows.append(
                    {
                        "task": "t",
                        "test": "x",
                        "method_id": mid,
                        "method": method,
                        "oracle": role == "oracle",
                        "role": role,
                        "init": init or "",
                        "seed": 0,
                        "case": f"c{i}",
                        "structure": s,
                        "dice": v,
                        "jaccard": v / (2 - v),
                        "assd_mm": 1.0,
                        "hd95_mm": 2.0,
                        "status": "ok",
                    }
                )
    return rows, runs


def test_rows_are_compared_against_their_init():
    rows, runs = _rows_and_runs()
    res = compute(rows, compare=[["adaptseg", "source-only"]], n_boot=2000, runs=runs)
    u = res["units"][0]
    assert [m["id"] for m in u["methods"]] == ["init", "adaptseg", "source-only", "scratch", "target-oracle"]  # init first, oracle last
    assert u["inits"] == ["init"] and u["baseline"] == "init" and u["oracle"] == "target-oracle"
    m = {x["id"]: x for x in u["methods"]}
    assert {k: v["reference"] for k, v in m.items()} == {
        "init": None,
        "adaptseg": "init",
        "source-only": "init",
        "scratch": "init",
        "target-oracle": "init",
    }
    # case means: init (.5,.6,.7,.4)=.55; adaptseg (.6,.7,.7,.6)=.65; continuation (.5,.6,.55,.45)=.525; oracle .85
    assert m["adaptseg"]["delta"]["mean"]["dice"] == pytest.approx(0.10)
    assert m["adaptseg"]["delta"]["LV"]["dice"] == pytest.approx(0.10) and m["adaptseg"]["delta"]["RV"]["dice"] == pytest.approx(0.10)
    assert m["source-only"]["delta"]["LV"]["dice"] == pytest.approx(-0.05) and m["source-only"]["delta"]["mean"]["dice"] == pytest.approx(
        -0.025
    )
    assert m["adaptseg"]["gap_recovered"]["dice"] == pytest.approx(0.10 / 0.30)
    assert m["init"]["gap_recovered"]["dice"] == 0 and m["target-oracle"]["gap_recovered"]["dice"] == pytest.approx(1)
    assert math.isnan(m["init"]["delta"]["mean"]["dice"])
    assert [m[k]["steps_text"] for k in ("init", "adaptseg", "scratch", "target-oracle")] == ["40", "40 + 20", "40", "40"]
    assert m["adaptseg"]["selection"] == "last step" and m["init"]["label"] == "source-only (init)"
    dice_tests = [t for t in res["comparisons"] if t["metric"] == "dice"]
    assert [(t["a"], t["b"]) for t in dice_tests] == [
        ("adaptseg", "init"),
        ("source-only", "init"),
        ("scratch", "init"),
        ("target-oracle", "init"),
        ("adaptseg", "source-only"),
    ]
    assert res["n_comparisons"]["dice"] == 5 and all(t["vs_reference"] for t in dice_tests[:4]) and not dice_tests[4]["vs_reference"]
    ad = np.array([0.6, 0.7, 0.7, 0.6])
    ini = np.array([0.5, 0.6, 0.7, 0.4])
    assert dice_tests[0]["t_p"] == pytest.approx(st.ttest_rel(ad, ini).pvalue)
    assert dice_tests[0]["wilcoxon_p"] == pytest.approx(st.wilcoxon(ad - ini).pvalue)
    holm = sorted(t["t_p"] for t in dice_tests if math.isfinite(t["t_p"]))
    assert min(t["t_p_holm"] for t in dice_tests if math.isfinite(t["t_p"])) == pytest.approx(min(1, len(holm) * holm[0]))
    # rendered: the init row first with its steps, Δ and steps init + stage, the oracle last
    head, body = table_rows(u, res["structures"], ("dice", "jaccard"), gap=True)
    assert head[-4:] == ["Δ Dice vs init", "gap recovered (Dice)", "steps", "selection"]
    assert body[0][0] == "source-only (init)" and body[0][-4:] == ["—", "0.00", "40", "source validation Dice"]
    assert body[1][0] == "adaptseg" and body[1][-4:] == ["+0.100", "0.33", "40 + 20", "last step"]
    assert body[-1][0] == "target-oracle (ORACLE)"
    vhead, vbody = versus_rows(u, res)
    assert vhead[:5] == ["method", "vs", "Δ Dice LV", "Δ Dice RV", "Δ Dice mean [95% CI]"]
    assert vbody[0][:4] == ["adaptseg", "source-only (init)", "+0.100", "+0.100"] and vbody[0][4].startswith("+0.100 [")
    assert vbody[0][-1] == "0.33" and vbody[-1][0] == "target-oracle (ORACLE)"
    md = markdown(res)
    assert "Against the init (mean Dice):" in md and "| adaptseg vs source-only (init) | Dice |" in md.replace("| t | x ", "")
    csv_lines = summary_csv(res).splitlines()
    header = csv_lines[0].split(",")
    first = dict(zip(header, csv_lines[2].split(",")))
    assert first["row"] == "adaptseg" and first["reference"] == "init" and first["steps"] == "40 + 20"
    assert float(first["delta_dice_mean"]) == pytest.approx(0.10) and float(first["gap_recovered_dice"]) == pytest.approx(1 / 3)
    assert float(first["vs_reference_t_p"]) == pytest.approx(st.ttest_rel(ad, ini).pvalue)


def test_a_row_from_another_init_is_compared_with_that_init():
    rows, runs = _rows_and_runs()
    for r in rows + runs:
        if r["method_id"] == "scratch":
            r["init"] = "init2"
    extra = [dict(r, method_id="init2", role="init", init="", dice=r["dice"] - 0.1) for r in rows if r["method_id"] == "init"]
    runs.append(dict(next(r for r in runs if r["method_id"] == "init"), method_id="init2", key="t/init2/seed0", label="x (init init2)"))
    res = compute(rows + extra, n_boot=500, runs=runs)
    m = {x["id"]: x for x in res["units"][0]["methods"]}
    assert [x["id"] for x in res["units"][0]["methods"]][:2] == ["init", "init2"]
    assert m["scratch"]["reference"] == "init2" and m["scratch"]["delta"]["mean"]["dice"] == pytest.approx(0.40 - 0.45)
    # gap against its own init: (0.40 - 0.45) / (0.85 - 0.45)
    assert m["scratch"]["gap_recovered"]["dice"] == pytest.approx(-0.05 / 0.40)
    assert m["init2"]["reference"] is None and m["init2"]["label"] == "x (init init2)"


def test_stage_curves_group_the_logged_terms():
    from segshift.report.bench_figures import curve_columns, stage_curves

    nan = math.nan
    adapt = {
        "step": [5, 10],
        "loss_seg": [1.0, 0.9],
        "ce": [1, 1],
        "adv_d_mask": [0.7, 0.69],
        "loss_d_mask": [1.4, 1.38],
        "acc_d_mask": [0.5, 0.5],
        "w_d_mask": [0.0, 0.5],
        "loss": [1.1, 1.0],
        "lr": [0.1, 0.1],
        "val_mean": [nan, 0.6],
    }
    plain = {"step": [5, 10], "loss": [1.0, 0.8], "dice": [0.5, 0.4], "val_mean": [nan, nan]}
    assert curve_columns(adapt) == {
        "supervised loss": ["loss_seg"],
        "alignment / generator terms": ["adv_d_mask"],
        "discriminator losses": ["loss_d_mask"],
        "alignment weights w_*": ["w_d_mask"],
        "source validation Dice": ["val_mean"],
        "discriminator accuracy": ["acc_d_mask"],
    }
    assert curve_columns(plain) == {"supervised loss": ["loss"]}  # never-validated columns are left out
    png = stage_curves([("source-only (init)", [("seed 0", plain)]), ("adanet\nfrom init", [("seed 0", adapt), ("seed 1", adapt)])], "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# -- TTA rows --------------------------------------------------------------------------------


def test_a_tta_row_predicts_with_the_model_of_the_row_trained_like_it(tmp_path, phantom):
    text = _text(
        phantom,
        **{
            "methods: [source-only, adaptseg, target-oracle]": "methods: [{name: source-only, id: so+tent, tta: tent}, source-only,"
            " {name: source-only, id: so+flip, tta: {mode: flip}},"
            " {name: source-only, id: so-lr+tent, set: [train.lr=0.002], tta: {mode: tent, steps: 3, lr: 0.002}}]"
        },
    )
    suite = _parse(phantom, tmp_path, text)
    assert [m.tta["mode"] if m.tta else None for m in suite.methods] == ["tent", None, "flip", "tent"]
    assert suite.methods[0].tta == {"mode": "tent", "steps": 10, "lr": 0.001, "alpha": 0.5}
    plans = [p for p in Benchmark(suite, tmp_path / "out").plan() if p.seed == 0 and p.role != "init"]
    by = {p.method_id: p for p in plans}
    assert by["so+tent"].train_from is by["source-only"] and by["so+flip"].train_from is by["source-only"]
    assert by["so+tent"].train_dir == by["source-only"].folder / "train"
    assert by["so-lr+tent"].train_from is None  # trained otherwise: it trains its own model
    order = [p.method_id for p in plans]
    assert order.index("so+tent") > order.index("source-only")  # after the row whose model it uses
    # the TTA settings are part of the fingerprint
    assert by["so+tent"].fingerprint() != by["so+flip"].fingerprint() != by["source-only"].fingerprint()


@pytest.mark.parametrize(
    ("tta", "msg"), [("bogus", "--tta must"), ({"mode": "tent", "steps": 0}, "--tta-steps"), ({"mode": "tent", "speed": 1}, "unknown key")]
)
def test_bad_tta_rows_are_refused(tmp_path, phantom, tta, msg):
    text = _text(
        phantom, **{"methods: [source-only, adaptseg, target-oracle]": f"methods: [{{name: source-only, id: x, tta: {json.dumps(tta)}}}]"}
    )
    with pytest.raises(SegshiftError, match=msg):
        _parse(phantom, tmp_path, text)
