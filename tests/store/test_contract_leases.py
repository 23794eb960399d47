"""The store contract, part two: the worker's and the reaper's verbs (lease, extend, ack,
nack, reap, release) on SQLite and on PostgreSQL. test_contract.py holds the rest."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import event

from quorra.db import ASYNC_COMMIT_PREFIX
from quorra.errors import InvalidArgument, JobNotFound, StaleLease
from quorra.jobs import JobStatus
from quorra.store import MAX_ERROR_CHARS, Store
from tests.factories import job_in_status, leased_job, make_job, spec
from tests.store.support import canonical, lease_one

S = JobStatus


# -- lease -----------------------------------------------------------------------------------


def test_lease_order_is_priority_then_run_at_then_id(store):
    # Given jobs of mixed priority and run_at, some sharing both
    start = store.database_now()
    low = store.enqueue(spec(queue="q", priority=0), now=start - timedelta(seconds=30))
    urgent_late = store.enqueue(spec(queue="q", priority=5), now=start)
    urgent_early = store.enqueue(spec(queue="q", priority=5), now=start - timedelta(seconds=10))
    tied = store.enqueue_many([spec(queue="q", priority=1) for _ in range(3)], now=start)
    expected = [urgent_early.id, urgent_late.id, *sorted(job.id for job in tied), low.id]
    # When they are leased one at a time (so the database, not a sort in Python, decides)
    order = [lease_one(store, "q").id for _ in expected]
    # Then the best comes first: priority desc, then run_at, then id
    assert order == expected


def test_lease_returns_a_batch_best_first(store):
    # Given a low and a high priority job
    low, high = make_job(store, queue="q", priority=1), make_job(store, queue="q", priority=2)
    # When both are leased at once
    leased = store.lease_jobs(["q"], "worker-a", 2, 30)
    # Then the higher priority comes first
    assert [job.id for job in leased] == [high.id, low.id]


def test_lease_skips_a_job_before_its_run_at(store):
    # Given a job delayed by a minute
    job = make_job(store, queue="q", delay_seconds=60)
    # When a worker leases now, and again just after run_at
    early = store.lease_jobs(["q"], "worker-a", 1, 30)
    due = store.lease_jobs(["q"], "worker-a", 1, 30, now=job.run_at + timedelta(seconds=1))
    # Then it is leased only once due
    assert early == [] and [j.id for j in due] == [job.id]


def test_lease_takes_jobs_from_every_named_queue_and_no_other(store):
    # Given one job in each of three queues
    mail, media = make_job(store, queue="mail"), make_job(store, queue="media")
    make_job(store, queue="other")
    # When a worker leases from two of them
    leased = store.lease_jobs(["mail", "media"], "worker-a", 10, 30)
    # Then it gets the jobs of those two queues only
    assert sorted(job.id for job in leased) == sorted([mail.id, media.id])


def test_lease_returns_at_most_max_jobs(store):
    # Given five ready jobs
    store.enqueue_many([spec(queue="q") for _ in range(5)])
    # When a worker asks for three
    leased = store.lease_jobs(["q"], "worker-a", 3, 30)
    # Then it gets three and two remain ready
    assert len(leased) == 3
    assert len(store.lease_jobs(["q"], "worker-a", 10, 30)) == 2


def test_lease_of_an_empty_queue_returns_nothing(store):
    assert store.lease_jobs(["empty"], "worker-a", 5, 30) == []


def test_lease_does_not_hand_out_a_leased_job_again(store):
    # Given a leased job
    job = leased_job(store)
    # When another worker leases from its queue
    again = store.lease_jobs([job.queue], "worker-b", 5, 30)
    # Then it gets nothing
    assert again == []


def test_lease_counts_an_attempt_and_records_the_lease(store):
    # Given a pending job
    job = make_job(store, queue="q")
    now = store.database_now()
    # When a worker leases it for 45 seconds
    leased = lease_one(store, "q", worker_id="worker-7", ttl=45, now=now)
    # Then one attempt is counted and the lease is on the row
    assert (leased.status, leased.attempts, leased.leased_by) == (S.LEASED, 1, "worker-7")
    assert leased.leased_at == now and leased.lease_expires_at == now + timedelta(seconds=45)
    assert store.get_job(job.id) == leased


def test_lease_gives_each_job_its_own_lease_id(store):
    # Given four ready jobs
    store.enqueue_many([spec(queue="q") for _ in range(4)])
    # When they are leased in one call
    leased = store.lease_jobs(["q"], "worker-a", 4, 30)
    # Then each has a distinct, well-formed lease id
    lease_ids = [job.lease_id for job in leased]
    assert len(set(lease_ids)) == 4
    assert all(lease_id == canonical(lease_id) for lease_id in lease_ids)


@pytest.mark.parametrize(("queues", "max_jobs", "ttl"), [([], 1, 30), (["q"], 0, 30), (["q"], 1, 0), (["q"], 1, -5)])
def test_lease_with_invalid_arguments_raises_invalid_argument(store, queues, max_jobs, ttl):
    with pytest.raises(InvalidArgument):
        store.lease_jobs(queues, "worker-a", max_jobs, ttl)


# -- extend ----------------------------------------------------------------------------------


def test_extend_lease_moves_a_leased_job_to_processing(store):
    job = leased_job(store)
    extended = store.extend_lease(job.id, job.lease_id, 30)
    assert extended.status == S.PROCESSING and extended.lease_id == job.lease_id


def test_extend_lease_pushes_the_expiry_to_now_plus_ttl(store):
    # Given a job leased for 30 seconds
    job = leased_job(store, ttl_seconds=30)
    # When its worker extends it by 120 seconds, 20 seconds later
    when = job.leased_at + timedelta(seconds=20)
    extended = store.extend_lease(job.id, job.lease_id, 120, now=when)
    # Then the lease now ends 120 seconds after that heartbeat
    assert extended.lease_expires_at == when + timedelta(seconds=120)


def test_extend_lease_after_expiry_is_refused_as_stale(store):
    job = leased_job(store, ttl_seconds=30)
    with pytest.raises(StaleLease):
        store.extend_lease(job.id, job.lease_id, 30, now=job.lease_expires_at + timedelta(seconds=1))


def test_extend_lease_with_a_non_positive_ttl_raises_invalid_argument(store):
    job = leased_job(store)
    with pytest.raises(InvalidArgument):
        store.extend_lease(job.id, job.lease_id, 0)


# -- ack -------------------------------------------------------------------------------------


def test_ack_marks_the_job_succeeded_with_its_result(store):
    # Given a leased job
    job = leased_job(store)
    # When its worker acks with a result
    store.ack(job.id, job.lease_id, {"sent": True, "ids": [1, 2]})
    # Then the job is finished with that result
    done = store.get_job(job.id)
    assert (done.status, done.result) == (S.SUCCEEDED, {"sent": True, "ids": [1, 2]})
    assert done.finished_at is not None and done.lease_expires_at is None


def test_ack_of_a_processing_job_succeeds(store):
    job = job_in_status(store, S.PROCESSING)
    assert store.ack(job.id, job.lease_id).status == S.SUCCEEDED


def test_second_ack_is_refused_as_stale(store):
    job = leased_job(store)
    store.ack(job.id, job.lease_id)
    with pytest.raises(StaleLease):
        store.ack(job.id, job.lease_id)


def test_ack_with_another_lease_id_is_refused_as_stale(store):
    # Given a leased job
    job = leased_job(store)
    # When someone acks it under a lease id that is not its own
    with pytest.raises(StaleLease):
        store.ack(job.id, str(uuid.uuid4()))
    # Then the job is still held by its worker
    assert store.get_job(job.id).status == S.LEASED


def test_ack_with_a_malformed_lease_id_is_refused_as_stale(store):
    job = leased_job(store)
    with pytest.raises(StaleLease):
        store.ack(job.id, "not-a-lease")


def test_ack_after_the_lease_expired_is_refused_as_stale(store):
    # Given a lease that expired but was not reaped yet
    job = leased_job(store, ttl_seconds=30)
    # When the worker acks late
    with pytest.raises(StaleLease):
        store.ack(job.id, job.lease_id, now=job.lease_expires_at + timedelta(seconds=1))
    # Then the job is not marked succeeded
    assert store.get_job(job.id).status == S.LEASED


def test_ack_of_a_cancelled_job_is_refused_as_stale(store):
    # Given a leased job that a person cancelled
    job = leased_job(store)
    store.cancel(job.id)
    # When its worker acks
    with pytest.raises(StaleLease):
        store.ack(job.id, job.lease_id)
    # Then it stays cancelled
    assert store.get_job(job.id).status == S.CANCELLED


def test_ack_of_an_unknown_job_raises_job_not_found(store):
    with pytest.raises(JobNotFound):
        store.ack(str(uuid.uuid4()), str(uuid.uuid4()))


@pytest.mark.parametrize("result", [{"text": "nul\x00"}, {"n": float("nan")}, [float("inf")]])
def test_ack_with_a_result_a_database_cannot_store_is_refused(store, result):
    # Given a leased job
    job = leased_job(store)
    # When the worker acks with a result PostgreSQL's jsonb would reject (and SQLite keep)
    with pytest.raises(InvalidArgument):
        store.ack(job.id, job.lease_id, result)
    # Then the lease is still held, on both backends alike
    assert store.get_job(job.id).status == S.LEASED


# -- nack ------------------------------------------------------------------------------------


def test_nack_schedules_retries_after_2_then_4_then_8_seconds(store):
    # Given a job with three retries
    job = make_job(store, queue="q", max_retries=3)
    when = store.database_now()
    for attempt, delay in [(1, 2), (2, 4), (3, 8)]:
        # When attempt n is leased and fails
        leased = lease_one(store, "q", now=when)
        failed = store.nack(leased.id, leased.lease_id, f"boom {attempt}", now=when)
        # Then it is retried 2**n seconds later
        assert (failed.id, failed.status, failed.attempts) == (job.id, S.FAILED, attempt)
        assert failed.run_at == when + timedelta(seconds=delay)
        assert store.lease_jobs(["q"], "worker-a", 1, 30, now=failed.run_at - timedelta(microseconds=1)) == []
        when = failed.run_at


def test_nack_of_the_last_allowed_attempt_makes_the_job_dead(store):
    # Given a job with two retries that failed twice
    job = make_job(store, queue="q", max_retries=2)
    when = store.database_now()
    for _ in range(2):
        leased = lease_one(store, "q", now=when)
        when = store.nack(leased.id, leased.lease_id, "boom", now=when).run_at
    # When the third attempt (attempts > max_retries) fails
    leased = lease_one(store, "q", now=when)
    dead = store.nack(leased.id, leased.lease_id, "final boom", now=when)
    # Then the job is dead, finished, with the last error, and never leased again
    assert (dead.id, dead.status, dead.attempts, dead.last_error) == (job.id, S.DEAD, 3, "final boom")
    assert dead.finished_at == when and dead.lease_expires_at is None
    assert store.lease_jobs(["q"], "worker-a", 1, 30, now=when + timedelta(days=1)) == []


def test_nack_with_a_stale_lease_is_refused(store):
    job = leased_job(store)
    store.ack(job.id, job.lease_id)
    with pytest.raises(StaleLease):
        store.nack(job.id, job.lease_id, "too late")


def test_nack_of_an_unknown_job_raises_job_not_found(store):
    with pytest.raises(JobNotFound):
        store.nack(str(uuid.uuid4()), str(uuid.uuid4()), "boom")


def test_nack_cuts_a_long_error_to_the_limit(store):
    job = leased_job(store)
    failed = store.nack(job.id, job.lease_id, "x" * (MAX_ERROR_CHARS + 10))
    assert store.get_job(failed.id).last_error == "x" * MAX_ERROR_CHARS


def test_nack_stores_an_error_with_a_nul_character_on_both_backends(store):
    # Given a leased job
    job = leased_job(store)
    # When the worker reports an error holding a NUL (PostgreSQL text cannot hold one)
    store.nack(job.id, job.lease_id, "bad byte \x00 here")
    # Then the error is kept, the NUL replaced
    assert store.get_job(job.id).last_error == "bad byte \ufffd here"


# -- reap ------------------------------------------------------------------------------------


def test_reap_fails_an_expired_lease_as_an_attempt(store):
    # Given a lease that expired
    job = leased_job(store, ttl_seconds=30)
    when = job.lease_expires_at + timedelta(seconds=1)
    # When the reaper runs
    [reaped] = store.reap_expired_leases(now=when)
    # Then the attempt counts as failed with "lease expired", retried after the backoff
    assert (reaped.id, reaped.status, reaped.attempts) == (job.id, S.FAILED, 1)
    assert reaped.last_error == "lease expired"
    assert reaped.run_at == when + timedelta(seconds=2)


def test_reap_reclaims_a_processing_job_too(store):
    job = job_in_status(store, S.PROCESSING)
    reaped = store.reap_expired_leases(now=job.lease_expires_at + timedelta(seconds=1))
    assert [(j.id, j.status) for j in reaped] == [(job.id, S.FAILED)]


def test_reap_leaves_unexpired_leases_alone(store):
    # Given a lease with time left
    job = leased_job(store, ttl_seconds=30)
    # When the reaper runs before it expires
    reaped = store.reap_expired_leases(now=job.lease_expires_at - timedelta(seconds=1))
    # Then nothing is reaped and the worker can still ack
    assert reaped == []
    assert store.ack(job.id, job.lease_id).status == S.SUCCEEDED


def test_reaped_job_is_leased_again_only_after_its_backoff(store):
    # Given a reaped job
    job = leased_job(store, ttl_seconds=30)
    [reaped] = store.reap_expired_leases(now=job.lease_expires_at)
    # When workers lease before and at its new run_at
    early = store.lease_jobs([job.queue], "worker-b", 1, 30, now=reaped.run_at - timedelta(seconds=1))
    due = store.lease_jobs([job.queue], "worker-b", 1, 30, now=reaped.run_at)
    # Then it comes back only when due, as attempt two
    assert early == [] and [(j.id, j.attempts) for j in due] == [(job.id, 2)]


def test_reap_makes_a_job_dead_when_out_of_retries(store):
    job = leased_job(store, max_retries=0)
    [reaped] = store.reap_expired_leases(now=job.lease_expires_at)
    assert (reaped.status, reaped.last_error) == (S.DEAD, "lease expired") and reaped.finished_at is not None


def test_worker_of_a_reaped_lease_can_no_longer_ack(store):
    job = leased_job(store, ttl_seconds=30)
    store.reap_expired_leases(now=job.lease_expires_at)
    with pytest.raises(StaleLease):
        store.ack(job.id, job.lease_id)


def test_reap_takes_at_most_limit_leases(store):
    # Given three expired leases
    store.enqueue_many([spec(queue="q") for _ in range(3)])
    leased = store.lease_jobs(["q"], "worker-a", 3, 30)
    when = leased[0].lease_expires_at + timedelta(seconds=1)
    # When the reaper runs with a limit of two, twice
    first, second = store.reap_expired_leases(now=when, limit=2), store.reap_expired_leases(now=when, limit=2)
    # Then it takes two, then the last one
    assert (len(first), len(second)) == (2, 1)


# -- release ---------------------------------------------------------------------------------


def test_release_hands_a_lease_back_without_counting_the_attempt(store):
    # Given a leased job
    job = leased_job(store)
    # When the lease is handed back (it never reached a worker)
    released = store.release(job.id, job.lease_id)
    # Then the job is pending again, as if never leased, and ready at once
    assert (released.status, released.attempts) == (S.PENDING, 0)
    assert (released.lease_id, released.leased_by, released.lease_expires_at) == (None, None, None)
    assert [j.id for j in store.lease_jobs([job.queue], "worker-b", 1, 30)] == [job.id]


def test_release_of_a_started_job_is_refused_as_stale(store):
    job = job_in_status(store, S.PROCESSING)
    with pytest.raises(StaleLease):
        store.release(job.id, job.lease_id)


def test_release_with_another_lease_id_is_refused_as_stale(store):
    job = leased_job(store)
    with pytest.raises(StaleLease):
        store.release(job.id, str(uuid.uuid4()))


def test_release_of_a_malformed_job_id_raises_job_not_found(store):
    job = leased_job(store)
    with pytest.raises(JobNotFound):
        store.release("nope", job.lease_id)


def test_release_accepts_ids_in_capitals_like_every_verb(store):
    job = leased_job(store)
    released = store.release(job.id.upper(), job.lease_id.upper())
    assert released.status == S.PENDING


# -- durability of a lease's commit (PostgreSQL) -----------------------------------------------------


def _statements_sent(store) -> list[str]:
    sent: list[str] = []
    event.listen(store.engine, "after_cursor_execute", lambda _c, _cur, statement, *_rest: sent.append(statement))
    return sent


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_lease_commits_without_waiting_for_its_wal_flush(store):
    # Given a ready job, and a store by default (leases not durable)
    make_job(store, queue="q")
    sent = _statements_sent(store)

    # When it is leased
    [leased] = store.lease_jobs(["q"], "worker-a", 1, 30)

    # Then its statement went with synchronous_commit off for its own transaction
    [lease] = [statement for statement in sent if "UPDATE jobs" in statement]
    assert ASYNC_COMMIT_PREFIX in lease
    assert leased.status is S.LEASED


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_enqueue_and_settle_wait_for_their_commits_and_so_do_durable_leases(database_url):
    # Given a store whose leases are durable (QUORRA_DURABLE_LEASES=true)
    store = Store.from_url(database_url, durable_leases=True)
    sent = _statements_sent(store)

    # When a job is enqueued, leased and acked
    job = make_job(store, queue="q")
    [leased] = store.lease_jobs(["q"], "worker-a", 1, 30)
    store.ack(job.id, leased.lease_id)
    store.close()

    # Then no statement was sent with synchronous_commit off
    assert sent and not [statement for statement in sent if "synchronous_commit" in statement]
