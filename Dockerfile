# syntax=docker/dockerfile:1
# Quorra's image: one image for every role, the command picks it (`quorra` is the entry point).
#
#   docker build -t quorra:dev .                      (make docker-build)
#   docker run --rm quorra:dev --version
#   docker run --rm -e DATABASE_URL=... quorra:dev migrate | web | grpc | scheduler | worker
#
# Stage 1 builds wheels: Quorra's own, and the exact versions requirements.txt pins. Stage 2
# installs them into a fresh virtualenv on a slim base with no compiler, no pip cache, no
# source tree and nothing installed at start, and runs as an unprivileged user.
# tests/test_deployment.py builds and installs the Python layer the same way.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the pins change.
COPY requirements.txt ./
RUN pip wheel --wheel-dir /wheels -r requirements.txt && cp requirements.txt /wheels/
COPY setup.py setup.cfg README.md ./
COPY migrations ./migrations
COPY quorra ./quorra
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Every extra (server, worker, client; otel: tracing, off unless OTEL_* ask for it), each
# dependency at its pinned version, from the wheels of stage 1 only (--no-index): what runs
# is what was built.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/quorra \
    && /opt/quorra/bin/pip install --no-index --find-links /wheels -c /wheels/requirements.txt "quorra[all,otel]" \
    && /opt/quorra/bin/quorra --version
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/quorra --shell /usr/sbin/nologin quorra
ENV PATH=/opt/quorra/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The working directory is the user's own: a SQLite quorra.db (the default DATABASE_URL)
# can be written there; real deployments set DATABASE_URL to PostgreSQL.
WORKDIR /home/quorra
USER 10001:10001
# 8080 REST (web), 50051 gRPC (grpc), 9102 /metrics of grpc, scheduler and worker when
# QUORRA_METRICS_ADDR=:9102 is set (as the compose file, the manifests and the chart do).
EXPOSE 8080 50051 9102
ENTRYPOINT ["quorra"]
CMD ["web"]
