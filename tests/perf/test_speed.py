"""The speed benchmark runs and counts FLOPs correctly (a smoke test: no speed thresholds)."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn

from segshift.cli.main import main
from segshift.perf.speed import (
    TRAIN_FLOPS_FACTOR,
    bf16_support,
    count_flops,
    format_report,
    machine_info,
    measure_inference,
    measure_training,
    parse_variant,
    run_speed_bench,
)
from segshift.utils import machine
from segshift.utils.execution import ExecutionPolicy, resolve_precision

TRAINING_KEYS = {
    "net",
    "variant",
    "device",
    "size",
    "batch",
    "iters",
    "warmup",
    "threads",
    "step_s",
    "step_s_mean",
    "step_s_min",
    "step_s_max",
    "step_times",
    "slices_per_s",
    "forward_flops_per_slice",
    "forward_flops",
    "flops",
    "achieved_gflops",
    "compile_s",
    "loss",
    "max_rss_mb",
    "cuda_peak_mb",
}


def test_measure_training_smoke():
    # One thread: the suite may run beside other torch work, and oversubscribed threads can
    # make even this tiny step take seconds. Not a timed test: no speed thresholds.
    before = torch.get_num_threads()
    r = measure_training("unet", "fp32", size=32, batch=2, iters=2, warmup=1, device="cpu", threads=1)
    assert torch.get_num_threads() == before  # restored
    assert r["threads"] == 1
    assert set(r) >= TRAINING_KEYS
    assert r["net"] == "unet" and r["variant"] == "fp32" and r["batch"] == 2
    assert len(r["step_times"]) == 2 and r["compile_s"] is None
    assert r["slices_per_s"] > 0 and r["step_s"] > 0
    assert r["flops"] > 0 and r["flops"] == TRAIN_FLOPS_FACTOR * r["forward_flops"] == TRAIN_FLOPS_FACTOR * 2 * r["forward_flops_per_slice"]
    assert r["achieved_gflops"] > 0
    assert torch.isfinite(torch.tensor(r["loss"]))


def test_conv3x3_flops_match_hand_count():
    cin, cout, h, w, batch = 3, 5, 12, 10, 2
    conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)
    per_sample = 2 * cin * cout * 9 * h * w  # one multiply-add = 2 FLOPs per weight per output pixel
    with torch.no_grad():
        assert count_flops(conv, torch.zeros(batch, cin, h, w)) == batch * per_sample


def test_variants_parse_and_reject():
    v = parse_variant("bf16+cl+compile")
    assert v.bf16 and v.channels_last and v.compile
    assert not parse_variant("fp32").bf16
    for bad in ("fp16", "bf16+cl+cl", "cl"):
        with pytest.raises(ValueError):
            parse_variant(bad)


def test_run_speed_bench_tiny_and_report():
    res = run_speed_bench(
        ["unet"],
        size=16,
        batch=1,
        iters=1,
        warmup=0,
        variants=["fp32"],
        device="cpu",
        slices=2,
        peak_n=64,
        peak_reps=1,
        net_kwargs={"features": (4, 8)},
        threads=1,
    )
    assert not res["errors"]
    t = res["training"][0]
    assert t["speedup_vs_fp32"] == pytest.approx(1.0) and t["peak_gflops"] > 0
    assert {r["precision"] for r in res["inference"]} == {"fp32", "bf16"}
    text = format_report(res)
    assert "slices/s" in text and "unet" in text and "3 x forward" in text


@pytest.mark.parametrize(("flags", "native"), [("avx2 avx512f avx512_bf16", True), ("avx2 avx512f", False)])
def test_speed_reports_the_native_answer_that_auto_uses(monkeypatch, tmp_path, flags, native):
    # an AVX-512 CPU with and without bf16 instructions: oneDNN's own check says yes to both (it is kept
    # as evidence), the single decision only to the first, and bench speed reports that decision
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu {flags}\n")
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "cpuinfo")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    info = machine_info("cpu")
    assert info["bf16"]["native"] is native
    assert (resolve_precision("auto", "cpu") == "bf16") is native
    assert bf16_support("cpu")["native"] == info["bf16"]["native"] and info["cpu_model"] == "Test CPU"
    assert "avx512f" in info["bf16"]["cpu_flags"] and "mkldnn_bf16" in info["bf16"]


def test_variants_run_under_the_engines_execution_policy(monkeypatch):
    # the benchmark times what training runs: the engine's policy decides autocast, memory format and compilation
    assert parse_variant("bf16+cl+compile").policy == ExecutionPolicy("bf16", channels_last=True, compile=True)
    assert parse_variant("fp32").policy == ExecutionPolicy()
    seen: list[tuple] = []
    autocast, prepare, place = ExecutionPolicy.autocast, ExecutionPolicy.prepare, ExecutionPolicy.place
    monkeypatch.setattr(ExecutionPolicy, "autocast", lambda self, d: seen.append(("autocast", self.precision, d)) or autocast(self, d))
    monkeypatch.setattr(ExecutionPolicy, "prepare", lambda self, x: seen.append(("prepare", self.channels_last)) or prepare(self, x))
    monkeypatch.setattr(ExecutionPolicy, "place", lambda self, n: seen.append(("place", self.channels_last)) or place(self, n))
    tiny = {"features": (4, 8)}
    measure_training("unet", "bf16+cl", size=16, batch=1, iters=2, warmup=1, device="cpu", threads=1, net_kwargs=tiny)
    assert seen.count(("autocast", "bf16", "cpu")) == 3 and ("prepare", True) in seen and ("place", True) in seen
    seen.clear()
    measure_inference("unet", "bf16", size=16, slices=2, iters=1, warmup=0, device="cpu", threads=1, net_kwargs=tiny)
    assert seen == [("autocast", "bf16", "cpu")]


def test_bench_speed_measures_every_registered_network_by_default(monkeypatch, tmp_path, capsys):
    from segshift import nets

    registry = {"tiny_a": functools.partial(nets.UNet, features=(4, 8)), "tiny_b": functools.partial(nets.UNet, features=(4, 8, 16))}
    monkeypatch.setattr(nets, "NETS", registry)  # the registry is the one list: no name is written elsewhere
    args = ["bench", "speed", "--size", "16", "--batch", "1", "--iters", "1", "--warmup", "0", "--slices", "1"]
    assert main([*args, "--peak-size", "64", "--threads", "1", "--json", str(tmp_path / "speed.json")]) == 0
    res = json.loads((tmp_path / "speed.json").read_text())
    assert res["settings"]["nets"] == ["tiny_a", "tiny_b"]
    assert [(r["net"], r["variant"]) for r in res["training"]] == [(n, v) for n in registry for v in ("fp32", "bf16", "bf16+cl")]
    out = capsys.readouterr().out
    assert all(f"tiny_{x}  " in out for x in "ab")
