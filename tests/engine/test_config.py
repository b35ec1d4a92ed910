"""Config resolution: defaults, method YAML, user YAML, --set, strict keys and types."""

from __future__ import annotations

import pytest

from segshift.engine.config import merge, parse_set, resolve
from segshift.errors import SegshiftError


def test_resolution_order(tmp_path):
    user = tmp_path / "u.yaml"
    user.write_text("train:\n  steps: 50\n  lr: 0.01\n")
    cfg = resolve("histmatch", [user], ["train.steps=20", "data.val_cases=[patient16, patient17]"])
    assert cfg["train"]["steps"] == 20 and cfg["train"]["lr"] == 0.01
    assert cfg["data"]["preprocess"]["histmatch"] is True  # from methods/histmatch.yaml
    assert cfg["data"]["val_cases"] == ["patient16", "patient17"]
    assert cfg["method_name"] == "histmatch"


def test_method_hparams_are_the_method_section():
    cfg = resolve("noise-aug", sets=["method.noise_std=0.2"])  # the spec is found from the name
    assert cfg["method"] == {"noise_std": 0.2, "noise_prob": 1.0}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["train.stepz=3"], "unknown key 'train.stepz'"),
        (["train.steps=abc"], "expected an integer"),
        (["train.lr=fast"], "expected a number"),
        (["augment.flip=3"], "expected true/false"),
        (["train=3"], "expected a mapping"),
        (["trainsteps"], "expected key.path=value"),
    ],
)
def test_bad_overrides_are_errors(sets, message):
    with pytest.raises(SegshiftError, match=message):
        resolve("source-only", sets=sets)


def test_free_sections_accept_any_key():
    cfg = resolve("source-only", sets=["model.kwargs={features: [4, 8]}", "train.loss={ce: 1.0, focal: 0.5}"])
    assert cfg["model"]["kwargs"] == {"features": [4, 8]} and cfg["train"]["loss"] == {"ce": 1.0, "focal": 0.5}


def test_parse_set_nests_and_types():
    assert parse_set(["a.b=1", "a.c=true", "d=[1, 2]", "e=null"]) == {"a": {"b": 1, "c": True}, "d": [1, 2], "e": None}
    assert merge({"x": 1.0}, {"x": 2}) == {"x": 2.0}


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(SegshiftError, match=r"bad\.yaml: is not valid YAML"):
        resolve("source-only", [bad])
