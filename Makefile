# Everything runs from a virtual environment this Makefile builds; only Python 3.11+ is needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test unit lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# The demo serves every demo catalog version (R10.5) unless CATALOG names another catalog.
run: $(STAMP)
	CATALOG="$${CATALOG:-deploy/catalog}" $(PY) -m services.embedded

test: $(STAMP)
	$(PY) -m pytest

# The pure rules alone, with network and file access refused: a few seconds (the pytest
# plugins only the contract and real-parts tests use are not loaded).
unit: $(STAMP)
	$(PY) -m pytest -m unit -p no:schemathesis -p no:valkey -p no:anyio

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict shared services tests bench

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/checks.py
	$(PY) bench/billing.py
	$(PY) bench/webhooks.py

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
