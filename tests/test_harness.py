"""The test harness itself: PostgreSQL clones handed from test to test come back as the
template built them, each xdist worker has its own Redis database and database names, and
a run with QUORRA_REQUIRE_SERVICES=1 fails when a service test skipped, under xdist too."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg2
import pytest
from sqlalchemy import text

from quorra import migrate
from quorra.db import make_engine
from quorra.store import Store
from tests import factories
from tests.conftest import DB_PREFIX, REPO, _database_url, database_name, free_port, redis_url_for

SUITE_TIMEOUT_SECONDS = 300


def _exists(pg_admin, name: str) -> bool:
    conn, _ = pg_admin
    return conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).first() is not None


def _jobs_in(name: str) -> int:
    store = Store.from_url(_database_url(name))
    try:
        return sum(count.count for count in store.queue_counts())
    finally:
        store.close()


# -- PostgreSQL clones -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_clone_handed_back_is_emptied_and_handed_out_again(pg_clones):
    # Given a clone a test filled with jobs, and left a session open on
    name = pg_clones.acquire()
    store = Store.from_url(_database_url(name))
    factories.leased_job(store)
    store.enqueue_many([factories.spec()] * 3)
    lingering = psycopg2.connect(_database_url(name))

    # When it is handed back, and the next test asks for a database
    pg_clones.release(name)
    again = pg_clones.acquire()

    # Then it gets that clone, with no job in it, and the lingering session was ended
    try:
        assert again == name
        assert _jobs_in(name) == 0
        assert lingering.closed or _session_is_gone(lingering)
    finally:
        store.close()
        pg_clones.release(again)


def _session_is_gone(conn) -> bool:
    try:
        conn.cursor().execute("SELECT 1")
    except psycopg2.Error:
        return True
    return False


@pytest.mark.postgres
def test_a_clone_migrated_down_is_dropped_not_handed_out(pg_admin, pg_clones):
    name = pg_clones.acquire()
    engine = make_engine(_database_url(name))
    migrate.downgrade(engine, "base")
    engine.dispose()

    pg_clones.release(name)

    assert not _exists(pg_admin, name)
    replacement = pg_clones.acquire()
    try:
        assert replacement != name
        assert migrate.current_revision(make_engine(_database_url(replacement))) is not None
    finally:
        pg_clones.release(replacement)


@pytest.mark.postgres
def test_a_clone_with_a_changed_table_is_dropped(pg_admin, pg_clones):
    name = pg_clones.acquire()
    engine = make_engine(_database_url(name))
    with engine.begin() as conn:
        conn.execute(text("CREATE INDEX ix_made_by_a_test ON jobs (type)"))
    engine.dispose()

    pg_clones.release(name)

    assert not _exists(pg_admin, name)


@pytest.mark.postgres
def test_a_clone_closed_to_connections_is_dropped(pg_admin, pg_clones):
    conn, _ = pg_admin
    name = pg_clones.acquire()
    conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))

    pg_clones.release(name)

    assert not _exists(pg_admin, name)


@pytest.mark.postgres
def test_every_database_name_carries_the_prefix_and_the_worker(postgres_url, worker_id):
    name = postgres_url.rsplit("/", 1)[1]

    assert name.startswith(f"{DB_PREFIX}_test_{worker_id}_{os.getpid()}_")
    assert database_name("x") != database_name("x")


# -- Redis --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "worker", "expected"),
    [
        ("redis://127.0.0.1:6379/8", "", "redis://127.0.0.1:6379/8"),
        ("redis://127.0.0.1:6379/8", "gw0", "redis://127.0.0.1:6379/8"),
        ("redis://127.0.0.1:6379/8", "gw3", "redis://127.0.0.1:6379/11"),
        ("redis://:secret@cache:6380", "gw1", "redis://:secret@cache:6380/1"),
        ("unix:///run/redis.sock?db=2", "gw1", "unix:///run/redis.sock?db=2"),
    ],
)
def test_each_xdist_worker_gets_the_next_redis_database(base, worker, expected):
    assert redis_url_for(base, worker) == expected


# -- QUORRA_REQUIRE_SERVICES under xdist ----------------------------------------------------------


def _run_suite(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("QUORRA_", "PYTEST_"))} | env
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.mark.slow
def test_under_xdist_a_postgres_test_skipped_for_want_of_the_server_fails_when_services_are_required():
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    done = _run_suite(
        "-n",
        "2",
        "tests/store/test_contract.py",
        "-k",
        "test_enqueue_fills_in_the_defaults",
        QUORRA_TEST_DATABASE_URL=nowhere,
        QUORRA_REQUIRE_SERVICES="1",
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 1 error" in done.stdout  # SQLite ran; the PostgreSQL one failed in its setup
    assert "QUORRA_REQUIRE_SERVICES=1 but this test was skipped" in done.stdout


@pytest.mark.slow
def test_a_browser_test_skipped_for_want_of_chromium_fails_when_services_are_required():
    done = _run_suite(
        "tests/browser/test_dashboard.py",
        "-k",
        "test_signing_out_ends_the_session",
        QUORRA_TEST_CHROMIUM="/nonexistent/chromium",
        QUORRA_REQUIRE_SERVICES="1",
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout
    assert "QUORRA_REQUIRE_SERVICES=1 but this test was skipped" in done.stdout
