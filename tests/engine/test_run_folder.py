"""A run folder's staging and ``--overwrite`` (:mod:`segshift.engine.run_folder`), without training.

What is checked: a failure while staging leaves neither the staging folder nor a run folder; a
published run holds its config, preprocessing and run.json; an existing run is set aside,
named in run.json's ``replaces``, and deleted by :func:`discard_replaced` only. The trainer's
tests cover the same through ``segshift train`` (tests/engine/test_trainer.py,
tests/cli/test_bad_inputs_train.py).
"""

from __future__ import annotations

import json

import pytest

from segshift.engine import run_folder
from segshift.transforms import PreprocessConfig, Preprocessor


def test_a_failure_while_staging_leaves_nothing(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="input unreadable"), run_folder.staging(run) as stage:
        assert stage == tmp_path / ".run.staging"
        (stage / "cache").mkdir(parents=True)
        raise RuntimeError("input unreadable")
    assert list(tmp_path.iterdir()) == []


def test_publish_sets_an_existing_run_aside_until_discarded(tmp_path, capsys):
    run, pre = tmp_path / "run", Preprocessor(PreprocessConfig())
    with run_folder.staging(run) as stage:
        stage.mkdir()
        assert run_folder.publish(stage, run, {"seed": 0}, pre, {"method": "source-only"}) is False
    assert {p.name for p in run.iterdir()} == {"checkpoints", "config.yaml", "preprocess.json", "run.json"}
    assert json.loads((run / "run.json").read_text()) == {"method": "source-only"}
    with run_folder.staging(run) as stage:
        stage.mkdir()
        assert run_folder.publish(stage, run, {"seed": 1}, pre, {"method": "adabn"}) is True
    kept = tmp_path / ".run.replaced"
    assert json.loads((kept / "run.json").read_text()) == {"method": "source-only"}
    assert json.loads((run / "run.json").read_text()) == {"method": "adabn", "replaces": ".run.replaced"}
    assert f"is kept at {kept}" in capsys.readouterr().err
    run_folder.discard_replaced(run)
    assert not kept.exists() and run.is_dir()
