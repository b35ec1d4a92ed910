"""The benchmark report in a real browser (headless Chromium), on every CI run.

The report of the session's tiny phantom benchmark (tests/conftest.py ``tiny_benchmark``) is
loaded from file: it must load without a console message or error event, with every table
and every figure of the HTML present in the rendered DOM and every image decoded; a
1280x2000 screenshot of it is kept in the test's folder (pytest keeps the last three
sessions' folders: ``pytest --basetemp=DIR`` puts it in DIR/test_report_renders.../).
`make test` runs `make browser` first, which installs Chromium when it is missing; where that
is impossible the test skips, quoting the reason.
"""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

from tests.report.browser import render, require_chromium, screenshot

SECTIONS = (
    "Results",
    "Paired tests",
    "QC validation (evaluation against test labels)",
    "Per-case scores",
    "Best, median and worst cases",
    "Method figures",
    "Training curves",
    "Runs: configuration, versions, code revision",
)


def _texts(pattern: str, text: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", m)).strip() for m in re.findall(pattern, text, flags=re.S)]


@pytest.fixture(scope="module")
def report(tiny_benchmark):
    path = tiny_benchmark / "report.html"
    text = path.read_text(encoding="utf-8")
    assert 'src="http' not in text and 'href="http' not in text  # self-contained: nothing to fetch
    return path, text


def test_report_renders_in_headless_chromium(report, tmp_path):
    path, text = report
    browser = require_chromium()
    expected = {
        "tables": text.count("<table>"),
        "images": text.count("<img "),
        "figures": _texts(r"<figcaption>(.*?)</figcaption>", text),
        "headings": _texts(r"<h[23]>(.*?)</h[23]>", text),
    }
    assert expected["tables"] >= 10 and expected["images"] >= 9 and len(expected["figures"]) == expected["images"]
    assert [h for h in expected["headings"] if h in SECTIONS] == list(SECTIONS)  # every section, in order

    plain = render(browser, path, tmp_path)
    assert plain.console == [], "the report printed console messages:\n" + "\n".join(plain.console)
    dom = html.unescape(re.sub(r"\s+", " ", plain.dom))
    for h in expected["headings"] + expected["figures"]:
        assert re.sub(r"\s+", " ", h) in dom, f"not in the rendered DOM: {h!r}"
    assert plain.dom.count("<table") == expected["tables"] and plain.dom.count("<img") == expected["images"]
    for key in (
        "source-only (init)",
        "target-oracle (ORACLE)",
        "gap recovered",
        "mean_entropy: rho / AUC",
        "pooled (all rows)",
        "QC scores against Dice, task bssfp2lge, test set lge",
        "Evaluation against the test labels",
    ):
        assert key in dom, key

    probed = render(browser, path, tmp_path, probe=True)
    assert probed.probe is not None, "the probe did not report (the page never fired load?)"
    assert probed.probe["errors"] == [] and probed.console == [], probed.probe["errors"] + probed.console
    assert probed.probe["broken"] == 0, f"{probed.probe['broken']} image(s) did not decode"
    assert (probed.probe["images"], probed.probe["tables"]) == (expected["images"], expected["tables"])
    assert probed.probe["height"] > 4000  # laid out: tables and figures take room

    shot = screenshot(browser, path, tmp_path / "report.png", tmp_path)
    print(f"screenshot: {shot}")
    import matplotlib.image as mpimg

    px = mpimg.imread(str(shot))
    assert px.shape[:2] == (2000, 1280)
    assert shot.stat().st_size > 100_000  # a page of tables and text, not a blank one (~20 KB)
    assert float(px[..., :3].std()) > 0.05
    assert len(np.unique((px[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200  # coloured rows and figures


def test_a_broken_page_is_caught(report, tmp_path):
    """The checks above can fail: a script error, a console.error and an image that does not decode are all reported."""
    _, text = report
    browser = require_chromium()
    bad = tmp_path / "bad.html"
    bad.write_text(
        text.replace("</body>", '<img src="data:image/png;base64,AAAA"><script>console.error("boom"); undefinedFn();</script></body>'),
        encoding="utf-8",
    )
    plain = render(browser, bad, tmp_path)
    assert any("boom" in line for line in plain.console) and any("undefinedFn" in line for line in plain.console)
    probed = render(browser, bad, tmp_path, probe=True)
    assert probed.probe["broken"] == 1
    assert any("undefinedFn" in e for e in probed.probe["errors"]) and "console.error: boom" in probed.probe["errors"]
