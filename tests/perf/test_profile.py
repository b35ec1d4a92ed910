"""``segshift bench profile``: a step's time split into its parts, which add up to the step."""

from __future__ import annotations

import pytest
import torch

from segshift.cli.main import main
from segshift.engine import trainer as trainer_module
from segshift.engine.divergence import TrainingDiverged
from segshift.errors import SegshiftError
from segshift.perf.profile import format_profile, profile_method
from tests.conftest import FAST, set_args

TINY = [*FAST, "method.d_channels=[8, 16, 1]"]


def test_the_parts_of_an_adversarial_step_add_up_to_the_step(phantom):
    backward, augment = torch.autograd.backward, trainer_module.augment_batch
    p = profile_method("adaptseg", [phantom["bssfp"]], phantom["lge"], steps=3, warmup=1, sets=TINY)
    assert p["steps_counted"] == 3 and p["step_seconds"] > 0
    parts = p["parts"]
    for key in ("forward seg", "backward seg", "forward d", "backward d", "optimizer seg", "optimizer d", "data", "augment"):
        assert parts.get(key, 0) > 0, (key, parts)
    assert abs(sum(parts.values()) - p["step_seconds"]) < 0.1 * p["step_seconds"], (sum(parts.values()), p["step_seconds"])
    assert p["validation_seconds_per_call"] > 0 and p["checkpoint_seconds_per_call"] > 0
    assert p["amortised"]["validation"] == p["validation_seconds_per_call"] / p["eval_every"]
    assert torch.autograd.backward is backward and trainer_module.augment_batch is augment  # nothing left patched
    text = format_profile(p)
    assert "forward seg" in text and "s/step" in text and "CPU:" in text


def test_the_profile_command_lists_the_source_only_parts_and_torch_operators(phantom, capsys, tmp_path):
    args = [
        "bench",
        "profile",
        "-m",
        "source-only",
        "-s",
        str(phantom["bssfp"]),
        "--steps",
        "2",
        "--warmup",
        "1",
        "--torch-profile",
        "--json",
        str(tmp_path / "p.json"),
        *set_args(FAST),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "forward seg" in out and "optimizer seg" in out and "forward d" not in out
    assert "top operators" in out and "aten::" in out
    assert (tmp_path / "p.json").is_file()


def test_a_profiled_run_that_fails_leaves_nothing_patched(phantom, monkeypatch):
    """fit skips on_train_end when training raises; the trainer's __exit__ must still restore what it patched."""
    backward, augment, gin = torch.autograd.backward, trainer_module.augment_batch, trainer_module.gin_views
    engine_step = trainer_module.Trainer.train_step
    seen = []

    def failing_step(self, step):
        seen.append(torch.autograd.backward is not backward and trainer_module.augment_batch is not augment)
        if step == 3:  # after a warm-up step and a counted, torch-profiled one
            raise TrainingDiverged(f"training diverged at step {step} (made up by the test)")
        return engine_step(self, step)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", failing_step)
    with pytest.raises(TrainingDiverged, match="made up by the test"):
        profile_method("source-only", [phantom["bssfp"]], None, steps=3, warmup=1, sets=FAST, torch_profile=True)
    assert seen == [True, True, True]  # the failure came while instrumented
    assert torch.autograd.backward is backward
    assert trainer_module.augment_batch is augment and trainer_module.gin_views is gin
    assert not torch.autograd._profiler_enabled()  # the torch profiler was stopped too


def test_the_profile_needs_a_counted_step(phantom, capsys):
    with pytest.raises(SegshiftError, match="at least 1 counted step"):
        profile_method("source-only", [phantom["bssfp"]], None, steps=0)
    assert main(["bench", "profile", "-m", "source-only", "-s", str(phantom["bssfp"]), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
