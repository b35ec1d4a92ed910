#!/bin/sh
# `make browser`: make a headless Chromium available for the report's browser test
# (tests/report/test_browser.py). Called by `make test` and `make test-all`, so CI (.ci/run) renders
# the report in a real browser on every run.
#
# * Chromium already on PATH (chromium, chromium-browser, google-chrome, google-chrome-stable, or
#   $SEGSHIFT_CHROMIUM): nothing is done, nothing is printed.
# * Otherwise Debian's package is installed: apt-get install -y --no-install-recommends chromium
#   (apt-get update first when apt knows no candidate), as root, or through `sudo -n` when that
#   needs no password. The apt output goes to .cache/browser-install.log.
# * When that is impossible (no apt-get, not root and no password-less sudo, no network, no
#   package), the reason is printed and written to .cache/browser-unavailable.txt, and the script
#   still exits 0: the test run goes on, and the browser test skips, quoting that reason.
set -u
cd "$(dirname "$0")/.."
STATUS=.cache/browser-unavailable.txt
LOG=.cache/browser-install.log
mkdir -p .cache

found() {
    if [ -n "${SEGSHIFT_CHROMIUM:-}" ] && [ -x "${SEGSHIFT_CHROMIUM}" ]; then return 0; fi
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        command -v "$name" >/dev/null 2>&1 && return 0
    done
    return 1
}

unavailable() {
    echo "make browser: no headless Chromium: $1; tests/report/test_browser.py will skip (install chromium and rerun)"
    echo "$1" > "$STATUS"
    exit 0
}

if found; then
    rm -f "$STATUS"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || unavailable "chromium is not on PATH and apt-get is not available (not Debian/Ubuntu): install it with the system's package manager"
if [ "$(id -u)" = 0 ]; then
    AS=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    AS="sudo -n"
else
    unavailable "chromium is not on PATH, and installing it needs root (apt-get install chromium): not root and no password-less sudo"
fi

TIMEOUT=""
command -v timeout >/dev/null 2>&1 && TIMEOUT="timeout 900"
echo "make browser: installing Debian's chromium for the headless report test (apt-get; log: $LOG) ..."
export DEBIAN_FRONTEND=noninteractive
: > "$LOG"
candidate() { apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; }
if ! candidate; then
    $TIMEOUT $AS apt-get update -q >>"$LOG" 2>&1 || unavailable "apt-get update failed (no network or no package mirror?); see $LOG"
fi
candidate || unavailable "apt knows no chromium package (not in this system's package lists); see $LOG"
if ! $TIMEOUT $AS apt-get install -y -q --no-install-recommends chromium >>"$LOG" 2>&1; then
    # the lists may be stale (a mirror that no longer holds the listed version): refresh once and retry
    $TIMEOUT $AS apt-get update -q >>"$LOG" 2>&1 \
        && $TIMEOUT $AS apt-get install -y -q --no-install-recommends chromium >>"$LOG" 2>&1 \
        || unavailable "apt-get install chromium failed (no network, or a broken mirror?); see $LOG"
fi
found || unavailable "apt-get installed chromium but no chromium binary is on PATH; see $LOG"
rm -f "$STATUS"
echo "make browser: $(command -v chromium || command -v chromium-browser) installed"
