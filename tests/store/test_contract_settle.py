"""The store contract, part three: batched settles, the lease byte budget, lease expiry at
statement time and pooled connections the database closed. SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from quorra.jobs import BACKOFF_CAPPED_FROM, MAX_BACKOFF_SECONDS, JobStatus, backoff_seconds
from quorra.store import Settlement, SettleOutcome, Store
from tests.factories import leased_job, make_job

S = JobStatus
O = SettleOutcome


def test_settle_many_gives_one_outcome_per_settlement_in_order(store):
    # Given three held leases, one of them under another worker, and an unknown job
    ack_me, nack_me, theirs = (leased_job(store) for _ in range(3))
    theirs = leased_job(store, worker_id="worker-b")
    unknown = str(uuid.uuid4())
    batch = [
        Settlement(ack_me.id, ack_me.lease_id, True, result={"ok": 1}),
        Settlement(unknown, str(uuid.uuid4()), True),
        Settlement(theirs.id, theirs.lease_id, True),
        Settlement(nack_me.id, nack_me.lease_id, False, error="boom"),
        Settlement(ack_me.id, ack_me.lease_id, True),
        Settlement("not-a-uuid", "x", True),
        Settlement(ack_me.id.upper(), "not-a-lease", False),
    ]

    # When worker-a settles them all in one call
    results = store.settle_many(batch, worker_id="worker-a")

    # Then each has its own outcome and only worker-a's two leases are settled
    outcomes = [r.outcome for r in results]
    assert outcomes == [O.SETTLED, O.NOT_FOUND, O.STALE_LEASE, O.SETTLED, O.INVALID, O.NOT_FOUND, O.STALE_LEASE]
    assert results[0].job.status is S.SUCCEEDED and results[0].job.result == {"ok": 1}
    assert results[3].job.status is S.FAILED and results[3].job.last_error == "boom"
    assert store.get_job(theirs.id).status is S.LEASED


def test_settle_many_without_worker_id_settles_any_holder(store):
    job = leased_job(store, worker_id="worker-b")
    [result] = store.settle_many([Settlement(job.id, job.lease_id, True)])
    assert result.outcome is O.SETTLED


def test_a_nack_in_a_batch_follows_the_backoff_rule_of_quorra_jobs(store):
    # Given a job with retries to spare, failed again and again (past the backoff cap)
    job = make_job(store, queue="backoff", max_retries=BACKOFF_CAPPED_FROM + 3)
    delays = []
    for _ in range(BACKOFF_CAPPED_FROM + 2):
        [leased] = store.lease_jobs(["backoff"], "worker-a", 1, 30, now=job.run_at + timedelta(seconds=1))
        # When each attempt is nacked through a batch, at the store's own clock
        [result] = store.settle_many([Settlement(leased.id, leased.lease_id, False, error="again")])
        job = result.job
        delays.append(round((job.run_at - job.updated_at).total_seconds()))
    # Then every retry waits backoff_seconds(attempts), capped at an hour
    assert delays == [backoff_seconds(n) for n in range(1, BACKOFF_CAPPED_FROM + 3)]
    assert delays[-1] == MAX_BACKOFF_SECONDS


def test_the_backoff_is_capped_from_backoff_capped_from():
    assert backoff_seconds(BACKOFF_CAPPED_FROM - 1) < MAX_BACKOFF_SECONDS
    assert {backoff_seconds(n) for n in range(BACKOFF_CAPPED_FROM, 500)} == {MAX_BACKOFF_SECONDS}


def test_the_last_nack_in_a_batch_makes_the_job_dead(store):
    job = leased_job(store, max_retries=0)
    [result] = store.settle_many([Settlement(job.id, job.lease_id, False, error="fatal")])
    assert result.job.status is S.DEAD and result.job.finished_at is not None


def test_reaping_fails_each_expired_lease_as_a_nack_would(store):
    # Given five expired leases, one of them on its last attempt
    jobs = [leased_job(store, queue="reap", ttl_seconds=1) for _ in range(4)]
    last = leased_job(store, queue="reap", ttl_seconds=1, max_retries=0)
    later = store.database_now() + timedelta(seconds=60)

    # When the reaper takes them in batches of two
    batches = [store.reap_expired_leases(now=later, limit=2) for _ in range(4)]

    # Then all five are reaped once, in three batches, retried or dead as a nack would decide
    reaped = {job.id: job for batch in batches for job in batch}
    assert [len(batch) for batch in batches] == [2, 2, 1, 0]
    assert reaped.keys() == {job.id for job in [*jobs, last]}
    assert reaped[last.id].status is S.DEAD
    assert {reaped[job.id].status for job in jobs} == {S.FAILED}
    assert all(job.last_error == "lease expired" for job in reaped.values())
    assert all(reaped[j.id].run_at == later + timedelta(seconds=backoff_seconds(1)) for j in jobs)


# -- the lease byte budget (issue 8, item 8) ----------------------------------------------------


def test_a_lease_stops_before_its_byte_budget(store):
    # Given five ready jobs of about 10 kB each
    for n in range(5):
        make_job(store, queue="big", priority=-n, payload={"blob": "x" * 10_000})

    # When a worker asks for all five within a budget of 25 kB
    leased = store.lease_jobs(["big"], "worker-a", 5, 30, max_bytes=25_000)

    # Then it gets the best two, and the rest stay ready for the next lease
    assert [job.priority for job in leased] == [0, -1]
    assert len(store.lease_jobs(["big"], "worker-a", 5, 30)) == 3


def test_a_job_larger_than_the_budget_still_comes_alone(store):
    make_job(store, queue="big", payload={"blob": "x" * 10_000})
    make_job(store, queue="big", payload={"blob": "y"})
    assert len(store.lease_jobs(["big"], "worker-a", 5, 30, max_bytes=1_024)) == 1


# -- the lease expiry is taken when the statement runs (issue 8, item 11) ------------------------


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_lease_that_waited_for_a_lock_still_gets_its_whole_ttl(database_url):
    # Given a ready job, a store of one pooled session that has leased before (its lease
    # statement is prepared: the wait below happens inside the lease's own transaction),
    # and another session holding a lock that the lease's UPDATE waits for
    store, others = Store.from_url(database_url, pool_size=1), Store.from_url(database_url)
    make_job(store, queue="slow"), make_job(store, queue="slow")
    store.lease_jobs(["slow"], "worker-a", 1, 30)
    with others.engine.connect() as blocker:
        blocker.execute(text("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE"))
        with ThreadPoolExecutor(1) as pool:
            leasing = pool.submit(store.lease_jobs, ["slow"], "worker-a", 1, 30)
            _wait_for_a_lock_waiter(others)  # the lease's transaction has begun and waits...
            time.sleep(2)  # ...for 2 s
            blocker.commit()
            released = others.database_now()
            # When the lock is released and the lease commits
            [job] = leasing.result(timeout=30)
    store.close(), others.close()
    # Then its expiry counts from when the statement ran, after the wait, not from its
    # transaction's start
    assert job.lease_expires_at >= released + timedelta(seconds=29.5)


# -- pooled connections the database closed -------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_pooled_connection_the_server_closed_costs_no_error(store, database_url):
    # Given a store whose pooled sessions were all ended by the server (as in a restart)
    make_job(store, queue="q")
    admin = create_engine(make_url(database_url).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        name = make_url(database_url).database
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": name},
        )
        # pg_terminate_backend only signals: wait until the sessions have ended (and so
        # closed their sockets), as they have after a restart
        others = text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()")
        deadline = time.monotonic() + 30
        while conn.execute(others, {"d": name}).scalar() and time.monotonic() < deadline:
            time.sleep(0.05)
    admin.dispose()

    # When the store is used again, without pool_pre_ping
    counts = store.queue_counts()

    # Then the first call already succeeds, on a fresh connection
    assert [(c.queue, c.count) for c in counts] == [("q", 1)]
    assert store.engine.pool._pre_ping is False
    assert isinstance(store, Store)


def _wait_for_a_lock_waiter(store, deadline_seconds: float = 60) -> None:
    """Until a session of this database waits for a lock (a busy machine may start it late)."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + deadline_seconds
    with store.engine.connect() as probe:
        while probe.execute(waiting).scalar_one() == 0:
            assert time.monotonic() < deadline, "the lease never waited for the lock"
            probe.rollback()
            time.sleep(0.05)
