"""The FGSM probe (yan2019 Fig. 1): directed perturbations hurt far more than random signs of the same size."""

from __future__ import annotations

import json

import pytest
import torch

from segshift.cli.main import main
from segshift.inference.attack import attack_probe, perturb


def test_fgsm_step_is_the_gradient_sign_and_random_is_plus_minus_eps():
    seg = torch.nn.Conv2d(1, 2, 1)
    x = torch.randn(2, 1, 8, 8)
    y = torch.randint(0, 2, (2, 8, 8))
    gen = torch.Generator().manual_seed(0)
    adv = perturb(seg, x, y, 0.1, "fgsm", gen)
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(seg(xg), y).backward()
    assert torch.allclose(adv - x, 0.1 * xg.grad.sign())
    rnd = perturb(seg, x, y, 0.1, "random", gen)
    assert torch.allclose((rnd - x).abs(), torch.full_like(x, 0.1))
    assert perturb(seg, x, y, 0.0, "fgsm", gen) is x


@pytest.mark.slow
def test_probe_on_a_trained_run(trained_run, phantom, tmp_path):
    out = tmp_path / "attack"
    s = attack_probe(trained_run, phantom["bssfp"], [0, 0.05, 0.3], out, cases=["case008", "case009"])
    clean, fgsm, rnd = s["fgsm"][0], s["fgsm"], s["random"]
    assert clean == rnd[0] and clean > 0.8  # eps 0 is the clean image
    # measured: clean 0.917; FGSM 0.889 (eps 0.05), 0.790 (eps 0.3); random signs 0.917, 0.908
    assert fgsm[2] < clean - 0.08, s  # one directed step of 0.3 sd costs over 0.08 Dice
    assert clean - fgsm[2] > 5 * (clean - rnd[2]), s  # random signs of the same size hardly matter
    assert fgsm[1] < clean
    assert (out / "examples.png").stat().st_size > 5000
    rows = (out / "attack.csv").read_text().splitlines()
    assert rows[0].startswith("eps,kind,case") and len(rows) == 1 + 2 * 3 * 2  # (eps x kinds) x cases
    assert json.loads((out / "summary.json").read_text())["eps"] == [0.0, 0.05, 0.3]


def test_bad_eps_and_existing_output_fail_cleanly(trained_run, phantom, tmp_path, capsys):
    assert main(["attack", str(trained_run), str(phantom["bssfp"]), "--out", str(tmp_path / "a"), "--eps", "0,x"]) == 2
    assert "--eps" in capsys.readouterr().err
    assert main(["attack", str(trained_run), str(phantom["bssfp"]), "--out", str(tmp_path / "a"), "--eps", "-1"]) == 2
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    assert main(["attack", str(trained_run), str(phantom["bssfp"]), "--out", str(tmp_path / "b"), "--eps", "0", "--cases", "case009"]) == 2
    assert (tmp_path / "b" / "keep.txt").read_text() == "x"
