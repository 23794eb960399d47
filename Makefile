# Two commands set everything up on a fresh machine with Python 3.11:
#   make run    install into .venv, migrate the database, start every process (honcho)
#   make test   install the test dependencies into .venv and run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
METRICS_DIR ?= $(CURDIR)/var/prometheus
PYTEST_ARGS ?=
# The suite runs on this many pytest-xdist workers (most tests wait on I/O and subprocesses,
# so more workers than cores pays); TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 4

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
# honcho SIGKILLs 5 s after SIGTERM, so the grace periods must end before that.
run: export QUORRA_SHUTDOWN_GRACE ?= 4s
run: export QUORRA_WORKER_SHUTDOWN_GRACE ?= 4s
run: migrate
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho start web grpc scheduler worker

test: install-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Generated gRPC code is left as protoc writes it.
RUFF_FLAGS := --line-length 120 --extend-exclude 'quorra/rpc/quorra_pb2*'
lint: install-dev
	$(BIN)/ruff check $(RUFF_FLAGS) quorra tests bench bin migrations
	$(BIN)/ruff format --check $(RUFF_FLAGS) quorra tests bench migrations

proto: install-dev
	$(BIN)/python -m quorra.rpc.codegen

bench: install-dev
	$(BIN)/python bench/lease_throughput.py
	$(BIN)/python bench/wakeup_latency.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache var quorra.db quorra.db-wal quorra.db-shm quorra.db-scheduler.lock
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
