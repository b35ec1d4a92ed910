"""Baselines: registry, what each one changes, and that none reads target labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segshift.cli.main import main
from segshift.engine.build import build_method
from segshift.engine.config import resolve
from segshift.engine.trainer import train
from segshift.methods import available_methods, get_method
from segshift.methods.base import Batch
from segshift.transforms import Preprocessor
from tests.conftest import garbage_labels_copy
from tests.methods.conftest import FAST


def test_registry_lists_the_baselines(capsys):
    names = set(available_methods())
    assert {"source-only", "target-oracle", "noise-aug", "histmatch"} <= names
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "target-oracle" in out and "ORACLE" in out and "yan2019" in out
    assert main(["methods", "--config", "noise-aug"]) == 0
    out = capsys.readouterr().out
    assert "method_name: noise-aug" in out and "noise_std: 0.5" in out


def test_noise_aug_perturbs_the_source_input():
    cfg = resolve("noise-aug", sets=["model.kwargs={features: [4, 8]}"])
    m = build_method(cfg, "train", num_classes=4)
    x = torch.zeros(4, 1, 16, 16)
    b = Batch(x, torch.zeros(4, 16, 16, dtype=torch.long), torch.zeros(4))
    noisy = m.source_input(b)
    assert noisy.std() > 0.05 and noisy.abs().max() < 5
    assert get_method("source-only")({**cfg, "method": {}}, num_classes=4).source_input(b) is x


@pytest.mark.parametrize("method", ["source-only", "noise-aug", "histmatch", "gin-ipa", "bigaug"])
def test_target_labels_are_never_read(phantom, tmp_path, method):
    target = garbage_labels_copy(phantom["lge"], tmp_path / "target", unreadable=True)
    sets = FAST + ["train.steps=4", "train.eval_every=2", "data.histmatch_reference=target"]
    cfg = resolve(method, sets=sets)
    summary = train(cfg, [phantom["bssfp"]], target, tmp_path / "run", progress=False)
    assert summary["finished"] and not summary["oracle"]


def test_histmatch_reference_is_fitted_and_saved(phantom, tmp_path):
    cfg = resolve("histmatch", sets=FAST + ["train.steps=2", "train.eval_every=2"])
    train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "run", progress=False)
    pre = Preprocessor.load(tmp_path / "run" / "preprocess.json")
    assert pre.config.histmatch and pre.reference is not None and len(pre.reference) == 256
    assert np.all(np.diff(pre.reference) >= 0)


def test_oracle_trains_on_target_labels_and_says_so(phantom, tmp_path):
    cfg = resolve("target-oracle", sets=FAST + ["train.steps=2", "train.eval_every=2"])
    summary = train(cfg, [phantom["bssfp"]], phantom["lge"], tmp_path / "run", progress=False)
    assert summary["oracle"] and summary["selection"].startswith("oracle")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["oracle"] and list(info["plan"]["train"]) == [str(phantom["lge"])]
