"""`quorra web` for the web benchmarks: a fresh PostgreSQL database, migrated, and the web
process with its default settings (2 workers x 8 threads) on a free loopback port.

Used by bench/slow_clients.py, bench/overload.py and bench/rest_throughput.py; each also
takes --url to measure a server that is already running instead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from quorra import migrate
from quorra.db import make_engine

API_KEY = "bench-api-key"
AUTH = {"X-API-Key": API_KEY}
PG_URL = os.environ.get("QUORRA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def web_server(url: str | None, **env_overrides: str) -> Iterator[str]:
    """The base URL of the server to measure: `url` as given, or a fresh `quorra web`."""
    if url:
        yield url.rstrip("/")
        return
    with started_web_server(**env_overrides) as (base, _pid):
        yield base


@contextmanager
def started_web_server(**env_overrides: str) -> Iterator[tuple[str, int]]:
    """A fresh `quorra web` on a fresh database: its base URL and its (gunicorn master's) pid."""
    with (
        _database() as database_url,
        _quorra_web(database_url, env_overrides) as started,
    ):
        yield started


@contextmanager
def _database() -> Iterator[str]:
    name = f"quorra_bench_web_{os.getpid()}"
    admin = create_engine(
        make_url(PG_URL).set(drivername="postgresql+psycopg2"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def _quorra_web(database_url: str, env_overrides: dict[str, str]) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUORRA_", "REDIS_URL", "PROMETHEUS"))}
    env |= {
        "DATABASE_URL": database_url,
        "QUORRA_HTTP_ADDR": f"127.0.0.1:{port}",
        "QUORRA_API_KEY": API_KEY,
        **env_overrides,
    }
    command = [sys.executable, "-m", "quorra.cli.admin", "web"]
    base = f"http://127.0.0.1:{port}"
    # The server's log (info: one line per request) goes to a file, read if it fails to start.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            _wait_healthy(base, process, log)
            yield base, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_healthy(base: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"quorra web exited early: {log.read().decode()[-3000:]}")
        try:
            if requests.get(f"{base}/healthz", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit("quorra web did not become healthy")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
