# The habits a newcomer looks for. Every target works on a fresh clone: `make setup` first
# (or any target: they set up the venv when it is missing). `make help` lists them.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup run demo test test-fast faults lint format types bench ci clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the app with every extra (tests, lint)

run: $(STAMP) ## serve the app on http://127.0.0.1:8000 (in-memory bus, SQLite ticketing.db)
	$(VENV)/bin/ticketing run

demo: $(STAMP) ## the narrated walkthrough: events, the concurrency problem and its fix
	$(VENV)/bin/ticketing demo

test: $(STAMP) ## the whole suite (NATS, PostgreSQL when TICKETING_TEST_POSTGRES_URL is set, browser, faults)
	$(PY) -m pytest

test-fast: $(STAMP) ## the in-memory suite alone, on every core: no servers, no processes, no browser
	$(PY) -m pytest -n auto --dist loadgroup -m "not nats and not postgres and not browser and not slow"

faults: $(STAMP) ## real signals to real processes under load (tests/faults), with how long each took to settle
	$(PY) -m pytest tests/faults

lint: $(STAMP) ## ruff, ruff format --check and mypy --strict, as CI runs them
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP) ## ruff's fixes and formatting, applied
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP) ## every benchmark, each against a baseline measured in the same run (BENCH=--quick: smaller)
	$(PY) benchmarks $(BENCH)

ci: ## what CI runs, from scratch (bash .ci/run)
	bash .ci/run

clean: ## remove the venv, caches and local databases
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis ticketing.db ticketing.db-shm ticketing.db-wal
