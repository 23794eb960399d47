"""The statements run straight on the DBAPI cursor (quorra.store.direct): the same values as
SQLAlchemy's rows on both backends; on PostgreSQL prepared once per session, still answered
by a session that lost its prepared statement, out of autocommit when the pool takes the
connection back, and seen by statement listeners (tracing) whenever there are some; the lease
planned once per session (a generic plan), and committed without waiting for its flush when
the store says so; the settle prepared too, in its transaction, which a session that lost it
runs again unprepared."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event, func, literal_column, select, text

from quorra.errors import DatabaseUnavailable, JobNotFound
from quorra.jobs import Job
from quorra.store import Settlement, SettleOutcome, Store
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


def plans_of(store: Store, statement_like: str) -> list[tuple[int, int]]:
    """(generic plans, custom plans) run by each statement prepared on the store's session."""
    with store.engine.connect() as conn:
        query = text("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE :like")
        return [tuple(plan) for plan in conn.execute(query, {"like": statement_like})]


def two_leased_jobs(store: Store) -> list[Job]:
    for _ in range(2):
        make_job(store, queue="q")
    return store.lease_jobs(["q"], "worker-a", 2, 30)


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
def test_a_session_plans_its_lease_once_for_any_values(one_connection_store):
    # Given ready jobs in two queues, and one pooled session
    for queue in ("q1", "q1", "q2"):
        make_job(one_connection_store, queue=queue)
    # When the session leases three times, from one queue and then the other
    leased = [one_connection_store.lease_jobs([queue], "worker-a", 1, 30) for queue in ("q1", "q2", "q1")]
    # Then each lease took a job, and all three ran one generic plan: never planned for their values
    assert [[job.queue for job in batch] for batch in leased] == [["q1"], ["q2"], ["q1"]]
    assert plans_of(one_connection_store, "%UPDATE jobs%") == [(3, 0)]


@ON_POSTGRES
def test_a_session_prepares_its_settles_once_in_their_transactions(one_connection_store):
    # Given two leased jobs, and one pooled session
    store = one_connection_store
    leased = two_leased_jobs(store)
    # When each is settled in a call of its own (an ack, then a nack)
    outcomes = [
        store.settle_many([Settlement(leased[0].id, leased[0].lease_id, True, {"n": 1})], worker_id="worker-a"),
        store.settle_many([Settlement(leased[1].id, leased[1].lease_id, False, error="boom")], worker_id="worker-a"),
    ]
    # Then both settled, as SQLAlchemy's rows would say, each planned for its own values
    assert [result.outcome for [result] in outcomes] == [SettleOutcome.SETTLED] * 2
    assert [store.get_job(job.id).status.value for job in leased] == ["succeeded", "failed"]
    assert store.get_job(leased[0].id).result == {"n": 1} == outcomes[0][0].job.result
    assert plans_of(store, "%unnest%") == [(0, 2)]


@ON_POSTGRES
def test_a_session_that_lost_its_settle_statement_still_settles(one_connection_store):
    # Given a session that prepared the settle statement, then lost it
    store = one_connection_store
    first, second = two_leased_jobs(store)
    store.settle_many([Settlement(first.id, first.lease_id, True)], worker_id="worker-a")
    with store.engine.connect() as conn:
        conn.execute(text("DEALLOCATE ALL"))
        conn.commit()
    # When it settles again (inside a transaction, which the lost statement aborts)
    [result] = store.settle_many([Settlement(second.id, second.lease_id, True)], worker_id="worker-a")
    # Then the settle went through once, and the session runs the plain statement from then on
    assert result.outcome is SettleOutcome.SETTLED and store.get_job(second.id).status.value == "succeeded"
    with store.engine.connect() as conn:
        assert conn.connection.info[PREPARED_INFO_KEY] is False


@ON_POSTGRES
@pytest.mark.parametrize("durable", [True, False])
def test_a_direct_statement_commits_durably_unless_told(one_connection_store, durable):
    # Given a statement that reads the setting it runs under
    setting = DirectStatement(select(func.current_setting("synchronous_commit")))
    # When it runs durably, or not, twice (prepared on the second run)
    answers = [setting.rows(one_connection_store.engine, {}, durable=durable) for _ in range(2)]
    # Then it ran with synchronous_commit as told, and the session kept its own setting
    assert answers == [[("on" if durable else "off",)]] * 2
    with one_connection_store.engine.connect() as conn:
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"


@ON_POSTGRES
def test_a_statement_runs_under_its_plan_setting(one_connection_store):
    for plans, setting in (("generic", "force_generic_plan"), ("custom", "force_custom_plan"), ("auto", "auto")):
        mode = DirectStatement(select(func.current_setting("plan_cache_mode")), plans=plans)
        assert mode.rows(one_connection_store.engine, {}) == [(setting,)]


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
    # When a job is submitted, read and leased
    job = one_connection_store.enqueue(spec(queue="q"))
    one_connection_store.get_job(job.id)
    [leased] = one_connection_store.lease_jobs(["q"], "worker-a", 1, 30)
    # Then the listener saw the INSERT, the SELECT and the lease's UPDATE
    assert any("INSERT INTO jobs" in statement for statement in seen)
    assert any(statement.startswith("SELECT jobs.id") for statement in seen)
    assert any("UPDATE jobs SET status" in statement for statement in seen) and leased.id == job.id


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
