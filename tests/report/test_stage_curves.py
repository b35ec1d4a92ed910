"""The diagnostics in the benchmark report's stage curves (:mod:`segshift.report.bench_figures`).

What is checked: each diagnostic column of a run's ``logs/train.csv`` gets its panel
(discriminator accuracy, alignment over supervised gradient, translated-source Dice, image
statistics distance), absent columns none; the session's tiny phantom benchmark
(tests/conftest.py ``tiny_benchmark``) logs them for its adaptseg row, not for source-only,
and its report draws and names them.
"""

from __future__ import annotations

import math
import struct

from segshift.report.bench_figures import DIAGNOSTIC_GROUPS, curve_columns, read_curve, stage_curves, stage_groups

NAN = math.nan


def _width(png: bytes) -> int:
    return struct.unpack(">I", png[16:20])[0]  # IHDR


def test_a_panel_per_diagnostic_logged_and_none_for_the_absent():
    source = {"step": [5, 10], "loss_seg": [1.0, 0.9], "val_mean": [NAN, 0.6]}
    adapt = {**source, "adv_d": [0.7, 0.69], "loss_d": [1.4, 1.3], "d_acc_d": [0.5, 0.7], "grad_ratio_d": [0.0, 0.01], "w_adv": [0, 1]}
    trans = {
        **source,
        "d_acc_d_s": [0.5, 0.6],
        "d_acc_d_t": [0.5, 0.8],
        "trans_dice": [0.8, 0.7],
        "trans_dice_raw": [0.9, 0.9],
        "trans_stat_dist": [1.0, 0.4],
        "trans_stat_dist_t2s": [1.0, 0.5],
        "trans_stat_dist_raw": [1.0, 1.0],
    }
    assert not set(curve_columns(source)) & set(DIAGNOSTIC_GROUPS)
    assert curve_columns(adapt)["discriminator accuracy"] == ["d_acc_d"]
    assert curve_columns(adapt)["alignment / supervised gradient"] == ["grad_ratio_d"]
    t = curve_columns(trans)
    assert t["discriminator accuracy"] == ["d_acc_d_s", "d_acc_d_t"] and "alignment / supervised gradient" not in t
    assert t["translated-source Dice"] == ["trans_dice", "trans_dice_raw"]
    assert t["image statistics distance"] == ["trans_stat_dist", "trans_stat_dist_t2s", "trans_stat_dist_raw"]
    assert curve_columns({"step": [1], "acc_d_mask": [0.6]}) == {"discriminator accuracy": ["acc_d_mask"]}  # the acc_<D> spelling

    only_source = [("source-only (init)", [("seed 0", source)])]
    rows = [*only_source, ("adaptseg\nfrom init", [("seed 0", adapt)]), ("cyclegan\nfrom init", [("seed 0", trans)])]
    assert [g for g in stage_groups(only_source) if g in DIAGNOSTIC_GROUPS] == []
    assert [g for g in stage_groups(rows) if g in DIAGNOSTIC_GROUPS] == list(DIAGNOSTIC_GROUPS)
    assert _width(stage_curves(rows, "t")) > _width(stage_curves(only_source, "t")) + 4 * 100  # four more panels


def test_the_tiny_benchmark_report_draws_the_diagnostics_of_its_adaptseg_row(tiny_benchmark):
    logs = {p.parts[-5]: read_curve(p) for p in (tiny_benchmark / "runs").glob("*/*/seed0/train/logs/train.csv")}
    assert {"adaptseg", "source-only"} <= set(logs)
    adapt = curve_columns(logs["adaptseg"])
    assert adapt["discriminator accuracy"] == ["d_acc_d"] and adapt["alignment / supervised gradient"] == ["grad_ratio_d"]
    assert all(0 <= v <= 1 for v in logs["adaptseg"]["d_acc_d"])
    assert logs["adaptseg"]["grad_ratio_d"] == [0.0] * 4  # a 4-step stage is all discriminator warm-up: no alignment gradient yet
    assert not set(curve_columns(logs["source-only"])) & set(DIAGNOSTIC_GROUPS)
    report = (tiny_benchmark / "report.html").read_text(encoding="utf-8")
    assert "init and adaptation stages (logs/train.csv); diagnostics: discriminator accuracy, alignment / supervised gradient" in report
