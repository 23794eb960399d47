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

.PHONY: run test lint migrate proto clean install install-dev bench bench-micro build docker-build dev dev-down db-init

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Every extra (server, worker, client, and otel: tracing, off unless OTEL_* ask for it) at
# the versions requirements.txt pins.
$(VENV)/.installed: requirements.txt setup.cfg setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -e '.[all,otel]'
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
# On Ctrl-C honcho SIGTERMs every process group and SIGKILLs 5 s later, so the grace periods
# end before that, the worker's first: it nacks what still runs at 3 s, while the servers
# still answer (they drain for up to 4 s, and stop as soon as nothing is left to settle).
# The worker reads every queue the README's examples use. honcho gives each process a $PORT,
# which the Procfile's web honours only when QUORRA_HTTP_ADDR is unset: here it is :8080
# unless set (in the environment or .env).
run: export QUORRA_SHUTDOWN_GRACE ?= 4s
run: export QUORRA_WORKER_SHUTDOWN_GRACE ?= 3s
run: export QUORRA_WORKER_QUEUES ?= default,email,images
run: migrate
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	QUORRA_HTTP_ADDR=$${QUORRA_HTTP_ADDR:-:8080} PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) PATH=$(CURDIR)/$(BIN):$$PATH \
		$(BIN)/honcho start web grpc scheduler worker

test: install-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Generated gRPC code is left as protoc writes it.
RUFF_FLAGS := --line-length 120 --extend-exclude 'quorra/rpc/quorra_pb2*'
lint: install-dev
	$(BIN)/ruff check $(RUFF_FLAGS) quorra tests bench bin migrations
	$(BIN)/ruff format --check $(RUFF_FLAGS) quorra tests bench migrations

proto: install-dev
	$(BIN)/python -m quorra.rpc.codegen

# The end-to-end benchmark on a stack of its own (README, "Performance"); not part of `make test`.
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick" or BENCH_ARGS="--workloads W1,W2 --runs 5".
BENCH_ARGS ?=
bench: install-dev
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The older, narrower benchmarks: store lease+ack throughput in-process, and wake-up latency per channel.
bench-micro: install-dev
	$(BIN)/python bench/lease_throughput.py
	$(BIN)/python bench/wakeup_latency.py

# -- GoQuorra's build and deploy targets (README, "Deployment") ------------------------------
IMAGE ?= quorra:dev
COMPOSE ?= docker compose
COMPOSE_FILE ?= deployments/docker-compose.yml
# The compose stack's PostgreSQL, seen from this host.
DEV_DATABASE_URL ?= postgresql://quorra:quorra@localhost:5432/quorra

# The wheel (dist/quorra-<version>-py3-none-any.whl): what `pip install` and the image install.
build: $(BIN)/python
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .

docker-build:
	docker build -t $(IMAGE) .

# PostgreSQL, Redis, migrate, web, grpc, scheduler and two workers, built from this checkout.
dev:
	$(COMPOSE) -f $(COMPOSE_FILE) up --build --detach

dev-down:
	$(COMPOSE) -f $(COMPOSE_FILE) down

# The compose stack's PostgreSQL and Redis up and healthy, and the schema migrated from here:
# then e.g. DATABASE_URL=$(DEV_DATABASE_URL) REDIS_URL=redis://localhost:6379/0 make run.
db-init: install
	$(COMPOSE) -f $(COMPOSE_FILE) up --detach --wait postgres redis
	DATABASE_URL=$(DEV_DATABASE_URL) $(BIN)/quorra migrate

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache var quorra.db quorra.db-wal quorra.db-shm quorra.db-scheduler.lock
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
