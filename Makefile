# Two commands from a fresh clone:  `make demo`  and  `make test`.
# Both create .venv (Python 3.11), install PyTorch from the local CPU wheel first
# (torch==2.13.0; a bare `torch` would pull a multi-GB CUDA build), then segshift.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.segshift-installed

.PHONY: setup browser demo test test-all test-fast lint format clean data

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,export,dicom]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segshift demo --out runs/demo

# headless Chromium for the report's browser test (tests/report/test_browser.py): Debian's chromium is
# installed (apt-get, as root) when missing; silent when present; never fails: where it cannot be installed it
# says why, and that test skips quoting the reason (scripts/ensure_browser.sh)
browser:
	@sh scripts/ensure_browser.sh

test: $(STAMP) browser  # CI (.ci/run): everything but the tests marked slow (<= 10 min on 2 CPU cores)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP) browser  # every test, the slow phantom training checks too (about 10 min more)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not real_data and not slow"

# the quality gate (configured in pyproject.toml; tests/test_quality.py runs the same checks under `make test`)
lint: $(STAMP)          # ruff check, ruff format --check, mypy on the modules listed in [tool.mypy]; all three run, any failure fails
	@rc=0; \
	$(VENV)/bin/ruff check . || rc=1; \
	$(VENV)/bin/ruff format --check . || rc=1; \
	$(VENV)/bin/mypy || rc=1; \
	exit $$rc

format: $(STAMP)        # the fixers: what `ruff check` can fix safely, then the formatter; review the diff before committing
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf runs .pytest_cache .ruff_cache .mypy_cache

SHARED ?= ../shared/data/cardiac
data: $(STAMP)
	for d in acdc mscmr_bssfp mscmr_lge; do \
	  $(VENV)/bin/segshift import $(SHARED)/$$d data/$$d --preset $$d --overwrite || exit 1; done
