# Two entry points for a new machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup services demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)  ## virtualenv with pinned dependencies, Kafka jars in ~/.cache/laer
	$(BIN)/python -c "from laer.local.kafka import ensure_jars; print('kafka jars:', ensure_jars(echo=True))"

services: setup  ## PostgreSQL for the storage tests (installs Debian's package when missing)
	bash deployments/local/postgres.sh

demo: setup  ## the main job on its embedded default: local Kafka, Prefect server, SQLite
	$(BIN)/laer up

test: services  ## every test, against real Kafka, PostgreSQL and Prefect
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m bench.ingest

clean:
	rm -rf $(VENV) .laer
