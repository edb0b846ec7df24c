# metrocloud — `make demo` and `make test` set everything up from scratch.
# See docs/setup.md for why the interpreter must be CPython 3.10 or 3.12.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_PATHS := src tests bench

.PHONY: help setup demo test lint bench clean

help:
	@echo "make setup  - create $(VENV) (CPython 3.10/3.12 + openfhe), install metrocloud[dev], SoftHSM2, Chromium"
	@echo "make demo   - setup, then run 'metrocloud demo'"
	@echo "make test   - setup, lint (ruff, mypy), then pytest"
	@echo "make lint   - ruff check, ruff format --check, mypy"
	@echo "make bench  - setup, then run every bench/*.py"
	@echo "make clean  - remove $(VENV), build artifacts and data/"
	@echo "Override the interpreter with: make PYTHON=/path/to/python3.10 setup"

# The stamp is rebuilt when pyproject.toml (the dependencies) changes.
# 1. An existing venv on which openfhe imports is kept and just re-installed into.
# 2. Otherwise try each interpreter from `scripts/find-python --all` in turn:
#    fresh venv, pip install -e '.[dev]', then `import openfhe` must work
#    (the 3.12 wheel installs but fails to import on an old libstdc++, e.g. Debian 12).
$(STAMP): pyproject.toml scripts/find-python
	@if [ -x $(PY) ] && $(PY) -c 'import openfhe' >/dev/null 2>&1; then \
	  echo "==> $(VENV) exists with openfhe ($$($(PY) -V)); installing metrocloud[dev]"; \
	  $(PY) -m pip install -q -e '.[dev]'; \
	  touch $@; \
	  exit 0; \
	fi; \
	cands=$$(scripts/find-python --all) || exit 1; \
	tried=""; \
	while IFS= read -r py; do \
	  [ -n "$$py" ] || continue; \
	  echo "==> creating $(VENV) with $$py ($$("$$py" -V 2>&1))"; \
	  rm -rf $(VENV); \
	  if ! "$$py" -m venv $(VENV); then \
	    tried="$$tried\n  $$py: could not create a venv"; continue; \
	  fi; \
	  echo "==> pip install -e '.[dev]'"; \
	  if ! $(PY) -m pip install -q -e '.[dev]'; then \
	    tried="$$tried\n  $$py: pip install -e '.[dev]' failed"; continue; \
	  fi; \
	  if $(PY) -c 'import openfhe'; then \
	    touch $@; \
	    echo "==> $(VENV) ready ($$($(PY) -V), openfhe imports)"; \
	    exit 0; \
	  fi; \
	  echo "==> 'import openfhe' fails with $$py; trying the next interpreter"; \
	  tried="$$tried\n  $$py: openfhe installed but 'import openfhe' fails (libstdc++ too old?)"; \
	done <<< "$$cands"; \
	rm -rf $(VENV); \
	echo -e "error: no interpreter gave a working openfhe. Tried:$$tried" >&2; \
	echo "metrocloud needs CPython 3.10 (or 3.12 with a recent libstdc++): the openfhe" >&2; \
	echo "wheels exist only for those. Install one (e.g. 'pyenv install 3.10', or" >&2; \
	echo "'apt-get install python3.10-venv' on Ubuntu 22.04) or run: make PYTHON=/path/to/python setup" >&2; \
	exit 1

# SoftHSM2 (Debian's softhsm2) is the PKCS#11 token of the PKI tests, Chromium (Debian's
# chromium) the headless browser of the page tests, PostgreSQL 15 (Debian's postgresql-15)
# the database of the distributed mode and its tests; each installed if missing.
setup: $(STAMP)
	@scripts/ensure-softhsm
	@scripts/ensure-chromium
	@scripts/ensure-postgres

demo: setup
	$(VENV)/bin/metrocloud demo

lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

# pytest's exit code 5 (no tests collected) fails the target like any non-zero code.
test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile tests

bench: setup
	@shopt -s nullglob; scripts=(bench/*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no bench/*.py scripts"; exit 0; fi; \
	for f in "$${scripts[@]}"; do \
	  echo "==> $(PY) $$f"; \
	  $(PY) "$$f"; \
	done

clean:
	rm -rf $(VENV) build dist data artifacts src/*.egg-info *.egg-info \
	  .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
