"""The statements run straight on the DBAPI cursor (quorra.store.direct): the same values as
SQLAlchemy's rows on both backends; on PostgreSQL prepared once per session, still answered
by a session that lost its prepared statement, out of autocommit when the pool takes the
connection back, and seen by statement listeners (tracing) whenever there are some."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event, literal_column, select, text

from quorra.errors import DatabaseUnavailable, JobNotFound
from quorra.store import Store
from quorra.store.base import SELECT_JOB, to_job
from quorra.store.direct import PREPARED_INFO_KEY, DirectStatement
from tests.conftest import free_port
from tests.factories import make_job, spec
from tests.store.support import lease_one

ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
def one_connection_store(database_url):
    """A store whose pool holds one connection, so that calls in a row share one session."""
    store = Store.from_url(database_url, pool_size=1)
    yield store
    store.close()


def read_through_sqlalchemy(store: Store, job_id: str):
    with store.engine.connect() as conn:
        return to_job(conn.execute(SELECT_JOB, {"job_id": job_id}).one())


def test_a_job_read_directly_is_the_job_sqlalchemy_reads(store):
    # Given a leased job with a payload of its own
    job = make_job(store, payload={"to": "ada", "n": [1, 2.5, None]}, queue="mail")
    lease_one(store, "mail")
    # When it is read by the direct statement and through SQLAlchemy
    direct, through_sqlalchemy = store.get_job(job.id), read_through_sqlalchemy(store, job.id)
    # Then the two are equal, field by field, times in UTC
    assert direct == through_sqlalchemy
    assert direct.leased_at.tzinfo is UTC and direct.status.value == "leased"


def test_a_job_submitted_at_a_given_time_is_created_at_that_time(store):
    # Given a time of the caller's (the store's bind processors turn it to UTC)
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    # When a job is submitted at it
    job = store.enqueue(spec(), now=moment)
    # Then the row says so
    assert read_through_sqlalchemy(store, job.id).created_at == moment == job.created_at


def test_an_unknown_job_is_not_found(store):
    with pytest.raises(JobNotFound):
        store.get_job("00000000-0000-4000-8000-000000000000")


@ON_POSTGRES
def test_a_session_prepares_the_statement_once(one_connection_store):
    # Given one pooled session, which submitted a job
    job = make_job(one_connection_store)
    # When the job is read three times
    for _ in range(3):
        one_connection_store.get_job(job.id)
    # Then that session holds each statement prepared once: the INSERT run once, the SELECT three times
    with one_connection_store.engine.connect() as conn:
        runs = conn.execute(
            text("SELECT generic_plans + custom_plans FROM pg_prepared_statements WHERE name LIKE 'quorra_%'")
        ).scalars()
        assert sorted(runs) == [1, 3]


@ON_POSTGRES
def test_a_session_that_lost_its_prepared_statements_still_answers(one_connection_store):
    # Given a session that prepared the statement, then lost it (DEALLOCATE, or another
    # server session behind a transaction-pooling PgBouncer)
    job = make_job(one_connection_store)
    one_connection_store.get_job(job.id)
    with one_connection_store.engine.connect() as conn:
        conn.execute(text("DEALLOCATE ALL"))
        conn.commit()
    # When the job is read again, twice
    first, second = (one_connection_store.get_job(job.id) for _ in range(2))
    # Then both reads answer, and the session runs the plain statement from then on
    assert first == second == read_through_sqlalchemy(one_connection_store, job.id)
    with one_connection_store.engine.connect() as conn:
        assert conn.connection.info[PREPARED_INFO_KEY] is False


@ON_POSTGRES
def test_a_failed_statement_leaves_its_connection_ready_for_a_transaction(one_connection_store):
    # Given a statement that fails on the server
    failing = DirectStatement(select(literal_column("1 / 0")))
    # When it runs
    with pytest.raises(Exception, match="division by zero"):
        failing.rows(one_connection_store.engine, {})
    # Then the pooled connection is back out of autocommit, and a transaction rolls back as one
    with one_connection_store.engine.connect() as conn:
        assert conn.connection.dbapi_connection.autocommit is False
        conn.execute(text("CREATE TEMP TABLE t (n int)"))
        conn.rollback()
        assert conn.execute(text("SELECT to_regclass('pg_temp.t')")).scalar() is None


@ON_POSTGRES
def test_statement_listeners_see_the_direct_statements(one_connection_store):
    # Given a listener on the engine's statements (as the tracing instrumentation adds)
    seen = []
    event.listen(one_connection_store.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    # When a job is submitted and read
    job = one_connection_store.enqueue(spec())
    one_connection_store.get_job(job.id)
    # Then the listener saw the INSERT and the SELECT
    assert any("INSERT INTO jobs" in statement for statement in seen)
    assert any(statement.startswith("SELECT jobs.id") for statement in seen)


def test_an_unreachable_database_is_unavailable():
    # Given a store whose database does not answer
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/quorra"
    store = Store.from_url(url)
    # When a job is read or submitted, Then the database is unavailable (a 503 at the edges)
    with pytest.raises(DatabaseUnavailable):
        store.get_job("00000000-0000-4000-8000-000000000000")
    with pytest.raises(DatabaseUnavailable):
        store.enqueue(spec())
    store.close()
