# One command per job. `make test` installs what it needs and runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install test check lint format typecheck scan demo screenshots browser bench chaos lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "remediation-bot needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

# The Agents Playground (npm) for the demo and the browser test.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 20 to run the demo and the browser test"; exit 1; }
	npm ci --no-audit --no-fund --prefer-offline
	touch $@

# Chromium for the browser test: installed from Debian when we may (root with apt-get);
# otherwise the browser test says it was not run (CI sets REQUIRE_E2E=1 and fails instead).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Chromium from Debian for the browser test"; \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)) || \
		echo "could not install Chromium: the browser test will not run"; \
	fi
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory node_modules/.installed; \
	else echo "npm not found: the browser test will not run"; fi

# PostgreSQL tests use TEST_POSTGRES_URL (default: the local server); without a server they are
# skipped with the reason shown (CI sets REQUIRE_POSTGRES=1 and fails instead). The suite mostly
# waits on loopback servers and child processes, so it runs in TEST_WORKERS processes (pytest-xdist,
# one per CPU by default), each test file whole in one of them.
TEST_WORKERS ?= auto
test: install browser
	TEST_POSTGRES_URL="$${TEST_POSTGRES_URL-postgresql://postgres@127.0.0.1:5432/test}" $(BIN)/python -m pytest -q -rs \
		-n $(TEST_WORKERS) --dist loadfile

# Benchmarks (not part of make test), each beside its baseline in the same run: card clicks beside
# a bare botbuilder echo bot, approval -> thread reply beside the time of the calls it makes, the
# alert storm under Teams' and Graph's documented limits, one card per identity and in storm mode
# (the campaign card, then "disable all" beside its floor). Writes tests/bench/results/*.json and
# SUMMARY.md (also printed). BENCH_QUICK=1: a few minutes; BENCH_STORM=0: without the storm.
bench: install
	$(BIN)/python -m tests.bench.run

# The chaos run (not part of make test): three replicas on PostgreSQL under a push + click
# workload with random SIGKILL and SIGSTOP, then every invariant checked. CHAOS_SECONDS (60),
# CHAOS_SEED (printed when random), CHAOS_NAMES=mixed to name people by UPN too.
chaos: install
	TEST_POSTGRES_URL="$${TEST_POSTGRES_URL-postgresql://postgres@127.0.0.1:5432/test}" $(BIN)/python -m tests.chaos.run

screenshots: install browser
	SCREENSHOTS_DIR=$(CURDIR)/docs REQUIRE_E2E=1 $(BIN)/python -m pytest -q -m e2e

# Deployment checks: hadolint on the Dockerfile, checkov on the Bicep and the Dockerfile (offline:
# no platform download). Their own virtual environment and lock, so neither the bot's environment
# nor its image carries them. Findings are fixed, or suppressed inline with the reason beside them.
SCAN_VENV  := .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed-$(shell cat deploy/scan/requirements.lock | cksum | cut -d' ' -f1)

$(SCAN_STAMP): deploy/scan/requirements.lock
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install --quiet --disable-pip-version-check -r deploy/scan/requirements.lock
	rm -f $(SCAN_VENV)/.installed-*
	touch $@

scan: $(SCAN_STAMP)
	$(SCAN_VENV)/bin/hadolint deploy/Dockerfile
	@# checkov exits 0 on a file it cannot parse, so a parsing error fails the scan here. It cannot
	@# parse Bicep extensions: modules/graph-permissions.bicep (Graph app roles only) is skipped.
	@$(SCAN_VENV)/bin/checkov --directory deploy --framework bicep dockerfile --skip-download --compact \
		--quiet --skip-path graph-permissions.bicep | tee $(SCAN_VENV)/checkov.out; \
	status=$${PIPESTATUS[0]}; \
	if grep -q 'Parsing errors: [1-9]' $(SCAN_VENV)/checkov.out; then echo "checkov could not parse a file"; exit 1; fi; \
	exit $$status

check: install lint typecheck scan test

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

demo: install node_modules/.installed
	$(BIN)/remediation-bot demo

lock:
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile deploy/scan/requirements.in --python-version 3.11 -o deploy/scan/requirements.lock

clean:
	rm -rf $(VENV) data demo-run node_modules
