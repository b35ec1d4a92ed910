"""Headless Chromium for the report tests: find it (or say why it is missing), render a page, take a screenshot.

`make browser` (a prerequisite of `make test`, so of CI) installs Debian's chromium when it is
missing, and writes the reason it could not to .cache/browser-unavailable.txt; a test that needs
the browser skips with that reason.

Console errors are caught two ways: Chromium's own log (``--enable-logging=stderr --v=0``
prints every console message of the page as a ``CONSOLE`` line; the report has no script, so
it must print none), and a probe script injected into a copy of the page, which records
``error`` events (scripts, and resources such as an image that fails to decode) and
``console.error`` calls, and after ``load`` writes them, with the count of images that did not
decode and of tables, into a ``<pre id="segshift-probe">`` of the DOM that ``--dump-dom`` prints.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in a container has no user namespace sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--mute-audio",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
)
STATUS = REPO / ".cache" / "browser-unavailable.txt"

PROBE = """<script>(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var what = e.message || (e.target && e.target.outerHTML ? e.target.outerHTML.slice(0, 120) : String(e));
    errors.push("error: " + what);
  }, true);
  var consoleError = console.error;
  console.error = function () { errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); consoleError.apply(console, arguments); };
  window.addEventListener("load", function () {
    var broken = 0, imgs = document.images;
    for (var i = 0; i < imgs.length; i++) { if (!imgs[i].complete || imgs[i].naturalWidth === 0) broken++; }
    var out = document.createElement("pre");
    out.id = "segshift-probe";
    out.textContent = JSON.stringify({errors: errors, images: imgs.length, broken: broken,
                                      tables: document.querySelectorAll("table").length,
                                      height: document.documentElement.scrollHeight});
    document.body.appendChild(out);
  });
})();</script>"""


def find_chromium() -> str | None:
    """The Chromium binary: ``$SEGSHIFT_CHROMIUM``, else the first of :data:`NAMES` on PATH."""
    env = os.environ.get("SEGSHIFT_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """The Chromium binary, or skip the test saying why there is none."""
    path = find_chromium()
    if path is None:
        why = STATUS.read_text(encoding="utf-8").strip() if STATUS.is_file() else "make browser has not run here"
        pytest.skip(
            f"no headless Chromium ({', '.join(NAMES)} or $SEGSHIFT_CHROMIUM): {why}. "
            "`make browser` installs Debian's chromium (apt-get, as root)"
        )
    return path


@dataclasses.dataclass
class Rendered:
    dom: str
    console: list[str]
    """The page's console messages, from Chromium's log (``CONSOLE`` lines)."""
    probe: dict | None
    """What the injected probe saw (``None`` when the page was rendered as is)."""


def _run(browser: str, profile: Path, args: list[str]) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=180,
        check=True,
    )


def console_lines(stderr: str) -> list[str]:
    """The page's console messages in Chromium's log (``...:CONSOLE:<line>] "message", source: ...``)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def render(browser: str, page: Path, work: Path, probe: bool = False) -> Rendered:
    """The DOM of ``page`` after load (``--dump-dom``) and its console messages; with ``probe`` of a copy with the probe."""
    work.mkdir(parents=True, exist_ok=True)
    if probe:
        text = page.read_text(encoding="utf-8")
        assert "<head>" in text, "the page has no <head> to inject the probe into"
        copy = work / f"probed-{page.name}"
        copy.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
        page = copy
    res = _run(browser, work / "profile", ["--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()])
    found = None
    if probe:
        m = re.search(r'<pre id="segshift-probe">([^<]*)</pre>', res.stdout)
        found = json.loads(html.unescape(m.group(1))) if m else None
    return Rendered(res.stdout, console_lines(res.stderr), found)


def screenshot(browser: str, page: Path, png: Path, work: Path, size: tuple[int, int] = (1280, 2000)) -> Path:
    """A PNG of the top of ``page`` at ``size`` (width, height)."""
    _run(browser, work / "profile", [f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", page.resolve().as_uri()])
    return png
