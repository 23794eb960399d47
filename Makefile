# Two commands set everything up on a fresh machine with Python 3.11:
#   make run    install into .venv, migrate the database, start every process (honcho)
#   make test   install the test dependencies into .venv and run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMETHEUS_MULTIPROC_DIR ?= $(CURDIR)/var/prometheus
export PROMETHEUS_MULTIPROC_DIR
PYTEST_ARGS ?=

.PHONY: run test lint migrate proto clean install install-dev bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt setup.cfg setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -e .
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/quorra migrate

# The release step runs first; then honcho starts the long-running processes. The metrics
# directory is wiped so counters of earlier runs never leak into this one.
run: migrate
	rm -rf $(PROMETHEUS_MULTIPROC_DIR) && mkdir -p $(PROMETHEUS_MULTIPROC_DIR)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho start web grpc scheduler worker

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check quorra tests bench bin migrations
	$(BIN)/ruff format --check quorra tests bench migrations

proto: install-dev
	$(BIN)/python -m quorra.rpc.codegen

bench: install-dev
	$(BIN)/python bench/lease_throughput.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache var quorra.db quorra.db-wal quorra.db-shm
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
