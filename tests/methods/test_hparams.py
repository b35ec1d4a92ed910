"""The method contract: hyper-parameters declared once, one validator, thin YAMLs, discovery,
networks built apart from optimisers, the docs kept in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from segshift.cli.main import main
from segshift.engine.build import build_method
from segshift.engine.config import method_defaults, resolve
from segshift.errors import SegshiftError
from segshift.methods import available_methods, get_method
from segshift.methods.base import REGISTRY
from segshift.methods.hparams import HParam, choice, defaults, flag, integer, ints, markdown, number, numbers, validate

DOCS = Path(__file__).resolve().parents[2] / "docs"
METHODS = sorted(available_methods())


def test_each_kind_of_spec_accepts_its_values_and_names_the_key_it_refuses():
    spec = {
        "w": number(0.5, "a weight", high=1.0),
        "n": integer(2, "a count", low=0),
        "on": flag(True, "a switch"),
        "mode": choice("a", ("a", "b"), "a mode"),
        "widths": ints([4, 8], "widths", length=2),
        "betas": numbers([0.5, 0.9], "betas", length=2, low=0.0, high=1.0),
        "g": integer(None, "groups", nullable=True),
    }
    assert validate(spec, {}) == {"w": 0.5, "n": 2, "on": True, "mode": "a", "widths": [4, 8], "betas": [0.5, 0.9], "g": None}
    out = validate(spec, {"w": 1, "n": 0, "on": False, "mode": "b", "widths": (1, 2), "betas": [0, 1], "g": 3})
    assert out == {"w": 1.0, "n": 0, "on": False, "mode": "b", "widths": [1, 2], "betas": [0.0, 1.0], "g": 3}
    assert isinstance(out["w"], float) and isinstance(out["betas"][0], float)
    bad = [
        ("w", 1.5, "in \\[0, 1\\]"),
        ("w", float("nan"), "finite"),
        ("w", True, "finite"),
        ("n", -1, ">= 0"),
        ("n", 2.5, "whole"),
        ("on", "yes", "true or false"),
        ("mode", "c", "one of a, b"),
        ("widths", [4], "2 positive"),
        ("widths", [4, 0], "positive"),
        ("betas", [0.5, 2.0], "in \\[0, 1\\]"),
        ("betas", "0.5", "a list"),
        ("g", 0, ">= 1"),
    ]
    for key, value, words in bad:
        with pytest.raises(SegshiftError, match=rf"method\.{key} must be .*{words}.*, got"):
            validate(spec, {key: value})
    with pytest.raises(SegshiftError, match="unknown key.*wieght.*known: betas, g, mode, n, on, w, widths"):
        validate(spec, {"wieght": 1})


def test_a_spec_refuses_a_default_it_does_not_allow():
    with pytest.raises(SegshiftError, match="method.<default> must be a finite number >= 0"):
        number(-1.0, "a weight")


def test_defaults_are_fresh_copies():
    spec = {"widths": ints([4, 8], "")}
    a = defaults(spec)
    a["widths"].append(16)
    assert defaults(spec) == {"widths": [4, 8]}


@pytest.mark.parametrize("name", METHODS)
def test_every_method_declares_specs_and_resolves_to_its_defaults(name):
    cls = get_method(name)
    assert all(isinstance(s, HParam) and s.doc for s in cls.hparams.values()), "every key needs a spec with a meaning"
    cfg = resolve(name)
    assert cfg["method"] == defaults(cls.hparams)
    assert cls.validate_hparams(cfg["method"]) == cfg["method"]


@pytest.mark.parametrize("name", METHODS)
def test_method_yamls_hold_no_method_section(name):
    """The spec is the single source of a method's hyper-parameters: no YAML repeats it."""
    assert "method" not in method_defaults(name)


@pytest.mark.parametrize(
    ("name", "setting", "words"),
    [
        ("adaptseg", "method.lambda_adv=-0.1", "method.lambda_adv must be a finite number >= 0, got -0.1"),
        ("advent", "method.mode=maxent", "method.mode must be one of adversarial, minent, got 'maxent'"),
        ("adanet", "method.seg_lr_floor=2", "method.seg_lr_floor must be a finite number in \\[0, 1\\], got 2"),
        ("adanet", "method.gfrm=1", "expected true/false"),
        ("cyclegan", "method.g_norm=group", "method.g_norm must be one of batch, instance, none"),
        ("cyclegan", "method.betas=[0.5]", "method.betas must be a list of 2 finite numbers"),
        ("sdnet", "method.anatomy_features=[16]", "method.anatomy_features must be a list of at least 2 positive whole numbers"),
        ("sdnet-fa", "method.fa_fraction=1.5", "method.fa_fraction must be a finite number in \\[0, 1\\]"),
        ("unetgan", "method.direction=source_to_target", "unetgan translates target images to the source look"),
        ("attent", "method.translation=false", None),  # alone it is a valid ablation row
        ("noise-aug", "method.noise_prob=1.1", "method.noise_prob must be a finite number in \\[0, 1\\]"),
        ("source-only", "method.lambda_adv=0.1", "unknown key 'method.lambda_adv'"),
    ],
)
def test_resolve_refuses_bad_method_values_before_any_data_is_read(name, setting, words):
    if words is None:
        assert resolve(name, sets=[setting])["method"]["translation"] is False
        with pytest.raises(SegshiftError, match="adapts nothing"):
            resolve(name, sets=[setting, "method.entropy=false"])
        return
    with pytest.raises(SegshiftError, match=words):
        resolve(name, sets=[setting])


def test_a_built_method_checks_its_section_too():
    """A config that did not come through resolve (an edited config.yaml) is checked when the method is made."""
    cfg = resolve("adaptseg")
    cfg["method"]["d_channels"] = [64, -1]
    with pytest.raises(SegshiftError, match="method.d_channels must be a list of positive whole numbers"):
        get_method("adaptseg")(cfg, num_classes=4)
    cfg["method"] = {"lambda_adv": 0.5}  # a run saved before other keys existed: the rest take their defaults
    m = get_method("adaptseg")(cfg, num_classes=4)
    assert m.hp["lambda_adv"] == 0.5 and m.hp["ramp_steps"] == 100


def test_methods_are_discovered_from_the_package():
    """Every module of segshift.methods is imported: a method needs no list entry."""
    package = Path(get_method("source-only").__module__.replace(".", "/")).parent
    modules = {p.stem for p in (Path(__file__).resolve().parents[2] / "src" / package).glob("*.py") if not p.stem.startswith("_")}
    found = {cls.__module__.rsplit(".", 1)[1] for cls in REGISTRY.values()}
    assert found <= modules and len(found) >= 14
    assert {"source_only", "adaptseg", "attent", "sdnet", "gin_ipa"} <= found


@pytest.mark.parametrize("name", ["adaptseg", "adanet", "cyclegan", "attent", "unetgan", "sdnet-fa"])
def test_prediction_builds_what_it_needs_and_nothing_for_training(name):
    sets = ["model.kwargs={features: [4, 8, 16, 32]}", "method.d_channels=[4, 4, 1]"] if name != "sdnet-fa" else []
    if name in ("cyclegan", "attent", "unetgan"):
        sets = ["method.g_ngf=4", "method.d_channels=[4, 1]", "method.g_blocks=1"]
    if name == "unetgan":
        sets += ["model.name=resunet", "model.kwargs={features: [4, 8, 16, 32], encoder_blocks: [1, 2, 3, 3]}"]
    if name == "adanet":
        sets += ["model.kwargs={features: [4, 8, 16, 32]}", "method.gfrm_channels=4"]
    cfg = resolve(name, sets=["train.precision=fp32", *sets])
    pred = build_method(cfg, "predict", num_classes=4)
    assert not pred.optimizers and not pred.schedulers
    assert set(pred.inference_nets()) <= set(pred.nets)
    full = build_method(cfg, "train", num_classes=4)
    assert full.optimizers
    assert set(pred.nets) < set(full.nets) or name not in ("adaptseg", "adanet", "cyclegan", "attent", "sdnet-fa")
    training_only = set(full.nets) - set(pred.nets)
    assert not training_only & set(full.inference_nets())


def test_docs_list_every_method_and_the_generated_reference_is_current(capsys):
    text = (DOCS / "training.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text.split("## Train", 1)[0], flags=re.M))
    assert set(METHODS) <= rows, f"methods without a row in docs/training.md: {sorted(set(METHODS) - rows)}"
    assert (DOCS / "hparams.md").read_text(encoding="utf-8") == markdown(available_methods()), (
        "docs/hparams.md is stale: regenerate it with `segshift methods --markdown > docs/hparams.md`"
    )
    assert main(["methods", "--hparams", "advent"]) == 0
    out = capsys.readouterr().out
    assert "method.mode = adversarial  (one of adversarial, minent)" in out and "method.ramp_steps = 100" in out


def test_methods_config_prints_the_spec_defaults(capsys):
    assert main(["methods", "--config", "unetgan"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["method"]["lambda_cycle"] == 0.0 and cfg["method"]["seg_steps"] == 1500 and cfg["model"]["name"] == "resunet"
