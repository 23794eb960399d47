"""Attempt history: every attempt that ended is recorded by the statement or transaction
that ended it, on both backends; the attempt in flight comes from the job row."""

from __future__ import annotations

import uuid

from quorra.jobs import AttemptOutcome, JobStatus
from quorra.store import Settlement
from tests.factories import leased_job, make_job, processing_job
from tests.store.support import later, lease_one


def outcomes(store, job_id: str) -> list[tuple]:
    _, attempts = store.job_attempts(job_id)
    return [(a.attempt, a.worker_id, a.outcome, a.error) for a in attempts]


def test_a_job_that_failed_then_succeeded_has_both_attempts_in_order(store):
    # Given a job whose first attempt failed and whose second succeeded
    job = make_job(store, queue="q")
    first = lease_one(store, "q", worker_id="w1")
    store.nack(first.id, first.lease_id, "boom")
    second = lease_one(store, "q", worker_id="w2", now=later(store, 3600))
    store.ack(second.id, second.lease_id, {"ok": True}, now=later(store, 3601))
    # When its attempts are read
    read, attempts = store.job_attempts(job.id)
    # Then each is there, with its worker, times, outcome and error
    assert read.status is JobStatus.SUCCEEDED
    assert [(a.attempt, a.worker_id, a.outcome, a.error) for a in attempts] == [
        (1, "w1", AttemptOutcome.FAILED, "boom"),
        (2, "w2", AttemptOutcome.SUCCEEDED, None),
    ]
    assert all(a.finished_at is not None and a.finished_at >= a.leased_at for a in attempts)


def test_the_attempt_in_flight_comes_last_without_an_outcome(store):
    job = processing_job(store, worker_id="w1")
    [attempt] = store.job_attempts(job.id)[1]
    assert (attempt.attempt, attempt.worker_id, attempt.outcome, attempt.finished_at) == (1, "w1", None, None)
    assert attempt.lease_expires_at == store.get_job(job.id).lease_expires_at


def test_a_pending_job_has_no_attempts(store):
    assert store.job_attempts(make_job(store).id)[1] == []


def test_a_batch_of_settlements_records_one_attempt_each(store):
    # Given three leased jobs
    for _ in range(3):
        make_job(store, queue="batch", max_retries=0)
    leased = store.lease_jobs(["batch"], "w1", 3, 30)
    # When one batch acks two and nacks the last (out of retries: dead)
    settlements = [Settlement(j.id, j.lease_id, success=True) for j in leased[:2]]
    settlements.append(Settlement(leased[2].id, leased[2].lease_id, success=False, error="bad"))
    store.settle_many(settlements, worker_id="w1")
    # Then each job has its one attempt
    assert [outcomes(store, j.id) for j in leased] == [
        [(1, "w1", AttemptOutcome.SUCCEEDED, None)],
        [(1, "w1", AttemptOutcome.SUCCEEDED, None)],
        [(1, "w1", AttemptOutcome.FAILED, "bad")],
    ]


def test_a_stale_settlement_records_nothing(store):
    job = leased_job(store)
    store.settle_many([Settlement(job.id, "00000000-0000-0000-0000-000000000000", success=True)])
    [attempt] = store.job_attempts(job.id)[1]
    assert attempt.outcome is None  # still in flight


def test_an_expired_lease_is_recorded_by_the_reaper(store):
    job = leased_job(store, worker_id="w1", ttl_seconds=5)
    store.reap_expired_leases(now=later(store, 60))
    assert outcomes(store, job.id) == [(1, "w1", AttemptOutcome.EXPIRED, "lease expired")]


def test_cancelling_a_held_job_ends_its_attempt_as_cancelled(store):
    job = leased_job(store, worker_id="w1")
    store.cancel(job.id)
    assert outcomes(store, job.id) == [(1, "w1", AttemptOutcome.CANCELLED, None)]


def test_cancelling_a_waiting_job_records_no_attempt(store):
    job = make_job(store)
    store.cancel(job.id)
    assert outcomes(store, job.id) == []


def test_a_lease_handed_back_is_no_attempt(store):
    job = leased_job(store)
    store.release(job.id, job.lease_id)
    assert outcomes(store, job.id) == []


def test_attempts_after_a_manual_retry_are_added_to_the_history(store):
    # Given a dead job retried by a person (its attempts count starts again)
    job = leased_job(store, worker_id="w1", max_retries=0, queue="again")
    store.nack(job.id, job.lease_id, "first")
    store.retry(job.id)
    # When it runs again
    again = lease_one(store, "again", worker_id="w2")
    store.ack(again.id, again.lease_id)
    # Then both runs are in its history
    assert outcomes(store, job.id) == [
        (1, "w1", AttemptOutcome.FAILED, "first"),
        (1, "w2", AttemptOutcome.SUCCEEDED, None),
    ]


def test_pruning_a_job_removes_its_attempts_and_no_others(store):
    # Given a succeeded job and a dead one (which pruning keeps), each with an attempt
    done = leased_job(store, queue="prune")
    store.ack(done.id, done.lease_id)
    dead = leased_job(store, queue="prune", max_retries=0)
    store.nack(dead.id, dead.lease_id, "boom")
    # When finished jobs are pruned
    assert store.prune(later(store, 1)) == 1
    # Then the pruned job's attempt is gone with it, and the dead job keeps its own
    with store.engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT job_id FROM job_attempts").scalars().all()
    assert [str(uuid.UUID(str(job_id))) for job_id in left] == [dead.id]
