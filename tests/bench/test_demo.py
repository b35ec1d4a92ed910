"""The demo pipeline end to end at toy size: phantom -> two runs -> predictions -> table."""

from __future__ import annotations

import json

from segshift.bench.demo import run_demo


def test_demo_runs_end_to_end(tmp_path):
    lines: list[str] = []
    res = run_demo(tmp_path / "demo", cases=8, test_cases=3, steps=6, echo=lines.append)
    methods = [(r["method"], r["tested_on"]) for r in res["rows"]]
    assert methods == [("source-only", "bssfp (source)"), ("source-only", "lge (target)"), ("target-oracle (oracle)", "lge (target)")]
    assert all(0 <= r["dice_mean"] <= 1 for r in res["rows"])
    doc = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert doc["test_cases"] == ["case005", "case006", "case007"]
    assert (tmp_path / "demo" / "phantom_domains.png").stat().st_size > 20_000
    assert "| target-oracle (oracle) | lge (target) |" in (tmp_path / "demo" / "results.md").read_text()
    assert any("domain gap" in line for line in lines)
