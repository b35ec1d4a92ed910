"""The planner refuses a warm-started row exactly when the engine would: a row that plans also starts.

The planner checks every row against its init with the engine's own rule
(:func:`segshift.engine.warmstart.like_for_like`). A row that switches histogram matching on
with its own ``histmatch_levels`` (the init matched no histogram, so it has no levels to keep)
passes ``--plan``, and the engine takes it when the row starts, after its init has trained.
"""

from __future__ import annotations

import json

from segshift.cli.main import main
from tests.conftest import FAST

SUITE = """
name: l4l
seeds: [0]
inits:
  - {{id: init, method: source-only, budget: {{steps: 2}}}}
budget: {{steps: 1}}
set: {fast}
methods:
  - {{name: source-only, id: so-hm, set: [data.preprocess.histmatch=true, data.preprocess.histmatch_levels=64]}}
tasks:
  - name: a
    sources: [{{domain: {src}, val_cases: [case008, case009]}}]
    test: [{{name: lge, domain: {tgt}, cases: [case008]}}]
"""


def test_a_row_that_switches_histogram_matching_on_with_its_own_levels_plans_and_starts(phantom, tmp_path, capsys):
    suite = tmp_path / "l4l.yaml"
    suite.write_text(SUITE.format(fast=json.dumps([*FAST, "train.eval_every=1"]), src=phantom["bssfp"], tgt=phantom["lge"]))
    out = tmp_path / "out"
    assert main(["benchmark", str(suite), "--out", str(out), "--plan"]) == 0
    assert main(["benchmark", str(suite), "--out", str(out)]) == 0, capsys.readouterr().err
    train = out / "runs" / "a" / "so-hm" / "seed0" / "train"
    assert json.loads((train / "run.json").read_text())["init"]["histmatch"] == "fitted"
    assert json.loads((train / "preprocess.json").read_text())["config"]["histmatch_levels"] == 64
    assert (out / "results" / "summary.csv").is_file()
