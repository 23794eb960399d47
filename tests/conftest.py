"""Fixtures on real services: SQLite files, PostgreSQL databases cloned from a migrated
template (one per test), Redis db 15 flushed per test.

Tests that need PostgreSQL or Redis skip when the service is unreachable, except when
QUORRA_REQUIRE_SERVICES=1 (CI), where such a skip is turned into a failure.
"""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from quorra import migrate
from quorra.config import Settings
from quorra.db import make_engine
from quorra.store import Store

PG_URL = os.environ.get("QUORRA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("QUORRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("QUORRA_REQUIRE_SERVICES") == "1"
TEST_API_KEY = "test-api-key"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- skips that CI refuses ----------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    needs_service = item.get_closest_marker("postgres") or item.get_closest_marker("redis")
    if REQUIRE_SERVICES and report.skipped and needs_service:
        report.outcome = "failed"
        report.longrepr = f"QUORRA_REQUIRE_SERVICES=1 but this test was skipped: {report.longrepr}"


def pytest_collection_modifyitems(items):
    for item in items:
        params = getattr(item, "callspec", None)
        if params and "postgres" in params.params.values():
            item.add_marker(pytest.mark.postgres)


# -- PostgreSQL -----------------------------------------------------------------------------


def _admin_url() -> str:
    url = make_url(PG_URL).set(database="postgres", drivername="postgresql+psycopg2")
    return url.render_as_string(hide_password=False)


def _database_url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin(worker_id):
    """An autocommit connection to the server, and a migrated template database."""
    try:
        engine = create_engine(_admin_url(), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        conn = engine.connect()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server is a skip
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {exc}")
    template = f"quorra_template_{worker_id}_{os.getpid()}"
    conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
    conn.execute(text(f'CREATE DATABASE "{template}"'))
    template_engine = make_engine(_database_url(template))
    migrate.upgrade(template_engine)
    template_engine.dispose()
    yield conn, template
    conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
    conn.close()
    engine.dispose()


@pytest.fixture(scope="session")
def worker_id(request):
    """xdist's worker id ('gw0'...), or 'main' without xdist."""
    return getattr(request.config, "workerinput", {}).get("workerid", "main")


_numbers = itertools.count()


@pytest.fixture
def postgres_url(pg_admin, worker_id):
    """A fresh, migrated PostgreSQL database for this test, dropped afterwards."""
    conn, template = pg_admin
    name = f"quorra_test_{worker_id}_{os.getpid()}_{next(_numbers)}"
    conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield _database_url(name)
    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_postgres_url(pg_admin, worker_id):
    """A PostgreSQL database with no schema at all."""
    conn, _ = pg_admin
    name = f"quorra_empty_{worker_id}_{os.getpid()}_{next(_numbers)}"
    conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield _database_url(name)
    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- SQLite ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()  # closing the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    """A migrated SQLite file of this test's own (a file, so threads share it)."""
    path = tmp_path / "quorra.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite:///{path}"


# -- either backend ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Every store behaviour runs on both backends."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(database_url):
    store = Store.from_url(database_url)
    yield store
    store.close()


@pytest.fixture
def settings(database_url) -> Settings:
    return Settings(database_url=database_url, api_keys=(TEST_API_KEY,), log_format="text")


# -- Redis ------------------------------------------------------------------------------------


@pytest.fixture
def redis_url():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()
