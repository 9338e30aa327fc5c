# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv and install what they need; nothing else is required.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
HOST   ?= 127.0.0.1
# Worker processes (gunicorn's WEB_CONCURRENCY, as for calcinosis-cds serve).
WORKERS ?= $(or $(WEB_CONCURRENCY),2)
# Threads per worker: more than the slow clients one worker may meet at once (README, "Slow clients").
THREADS ?= $(or $(CDS_THREADS),32)
# Processes make test runs the suite in (pytest-xdist); 0 runs it in this one process.
TEST_WORKERS ?= 2
# Embedded default store: an SQLite file under the project.
DATABASE_URL ?= sqlite:///$(CURDIR)/var/calcinosis-cds.sqlite3

.PHONY: run test lint format fixtures golden provenance clean help

help:
	@echo "make run     serve the CDS service on http://$(HOST):$(PORT) (PORT=... to change)"
	@echo "make test    lint (ruff) and run the whole test suite"
	@echo "make fuzz    fuzz the HTTP API ten times longer than make test, from a new seed each run"
	@echo "make format  format the code with ruff"
	@echo "make fixtures  regenerate fixtures/ (AS_OF=YYYY-MM-DD to re-anchor the dates)"
	@echo "make golden  rewrite the golden cards (fixtures/golden/, fixtures/field/golden/)"
	@echo "make provenance  regenerate the code tables of docs/codes.md from the value sets"
	@echo "make image   build the Docker image and smoke-test it (says so when no builder is here)"
	@echo "make constraints  regenerate constraints.txt, the versions the image installs"
	@echo "make bench   benchmark against a minimal Flask floor; writes the table into README.md"
	@echo "make chaos   the fault battery (slow clients, bad FHIR servers, database outages, retention); writes its table into README.md"

$(BIN)/python:
	@command -v '$(PYTHON)' >/dev/null 2>&1 \
		|| { echo "error: no Python interpreter $(PYTHON) (on Debian: apt-get install python3 python3-venv; or set PYTHON=python3.11)"; exit 1; }
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"' 2>/dev/null \
		|| { echo "error: $(PYTHON) is older than 3.11 (it is $$($(PYTHON) -V 2>&1)); set PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "error: could not create $(VENV); on Debian: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	@mkdir -p var
	DATABASE_URL='$(DATABASE_URL)' $(BIN)/calcinosis-cds serve --host $(HOST) --port $(PORT) \
		--workers $(WORKERS) --threads $(THREADS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The store tests also run against PostgreSQL: scripts/ensure-postgres starts (or, as root on
# Debian, installs) it on 127.0.0.1:5432 and says so when it cannot; those tests then skip.
# The browser tests (preview page, official CDS Hooks Sandbox) need Chromium: scripts/ensure-browser
# finds (or, as root on Debian, installs) one and says so when it cannot; those tests then skip.
test: lint
	@TEST_POSTGRES_URL="$$(PY=$(BIN)/python scripts/ensure-postgres)"; export TEST_POSTGRES_URL; \
		echo "PostgreSQL for the store tests: $${TEST_POSTGRES_URL:-none (skipped)}"; \
		CDS_TEST_CHROMIUM="$$(scripts/ensure-browser)"; export CDS_TEST_CHROMIUM; \
		echo "Chromium for the browser tests: $${CDS_TEST_CHROMIUM:-none (skipped)}"; \
		$(BIN)/python -m pytest -n $(TEST_WORKERS)

# Property-based fuzzing, longer than in `make test`: the Hypothesis profile `fuzz` of
# tests/conftest.py (ten times the examples of `ci`, a new random seed each run; a failure prints
# the @reproduce_failure line that replays it). About two minutes.
.PHONY: fuzz
fuzz: $(VENV)/.installed-test
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/test_fuzz.py \
		tests/hooks/test_json_nesting_depth.py

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

fixtures: $(VENV)/.installed-test
	$(BIN)/python -m fixtures.build $(if $(AS_OF),--as-of $(AS_OF))

# The golden cards: every fixture's whole response, en and fr (tests/test_golden_cards.py), written
# instead of compared. Review the diff before committing it.
golden: $(VENV)/.installed-test
	CDS_UPDATE_GOLDEN=1 $(BIN)/python -m pytest tests/test_golden_cards.py -q

# docs/codes.md: its tables of codes and products, from the value sets and the product lexicon
# (the text around them is kept). tests/devtools/test_provenance.py fails when it is out of date.
provenance: $(VENV)/.installed-run
	$(BIN)/python -m cds_service.devtools.provenance

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info

# Benchmark against the floor (bench/run.py, README "Performance"): about two minutes; writes
# the table into README.md. bench/ensure-wrk finds (or, as root on Debian, installs) wrk; without
# it the run says so and uses its Python load generator. BENCH_ARGS=--quick for a smoke run.
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@ $(VENV)/.installed-run

.PHONY: bench
bench: $(VENV)/.installed-bench
	@bash bench/ensure-wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

# The fault battery of issue 15 (bench/chaos.py, README "The fault battery"): slow clients,
# dripping and oversized FHIR answers, the database stopped and black-holed behind a TCP proxy of
# its own, a worker killed, retention; loopback only, about three minutes; writes the table into
# README.md. PostgreSQL as for make test (scripts/ensure-postgres); CHAOS_ARGS="--only S1,S3"
# runs some scenarios.
.PHONY: chaos
chaos: $(VENV)/.installed-test
	@TEST_POSTGRES_URL="$$(PY=$(BIN)/python scripts/ensure-postgres)"; export TEST_POSTGRES_URL; \
		$(BIN)/python -m bench.chaos --write-readme $(CHAOS_ARGS)

# The Docker image (README, "Docker"): scripts/image builds it with podman or docker (with a
# running engine) and smoke-tests it. Without a builder or the base image it says so, builds
# nothing and exits 3; this target then exits 0.
.PHONY: image
image:
	@scripts/image; status=$$?; \
		if [ $$status -eq 3 ]; then echo "make image: nothing was built (see above)"; exit 0; fi; \
		exit $$status

# constraints.txt: the version of every package the image installs (the dependencies, the
# postgres extra, the build backend), resolved now in a fresh venv of the image's Python (3.11).
# Regenerate it after changing the dependencies in pyproject.toml, and commit it.
CONSTRAINTS_VENV := var/constraints-venv
.PHONY: constraints
constraints:
	@command -v '$(PYTHON)' >/dev/null 2>&1 \
		|| { echo "error: no Python interpreter $(PYTHON); set PYTHON=python3.11"; exit 1; }
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
		|| { echo "error: the image runs Python 3.11, $(PYTHON) is $$($(PYTHON) -V 2>&1); set PYTHON=python3.11"; exit 1; }
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet 'setuptools>=77' '.[postgres]'
	{ echo "# The versions the Docker image installs: generated by make constraints (Python 3.11)."; \
		echo "# Do not edit by hand; regenerate after changing the dependencies in pyproject.toml."; \
		$(CONSTRAINTS_VENV)/bin/python -m pip freeze --all --exclude calcinosis-cds --exclude pip; \
	} > constraints.txt
	rm -rf $(CONSTRAINTS_VENV)
