"""Store.retry_dead: the bulk retry of a queue's dead jobs, one UPDATE, on both backends."""

from __future__ import annotations

from quorra.jobs import JobStatus
from tests.factories import dead_job, make_job


def test_retry_dead_puts_every_dead_job_of_the_queue_back_in_line(store):
    # Given dead jobs of two types in a queue, a dead job elsewhere and a pending one
    dead = [dead_job(store, queue="payments", type=kind) for kind in ("charge", "charge", "refund")]
    elsewhere = dead_job(store, queue="other")
    pending = make_job(store, queue="payments")

    # When the queue's dead jobs are retried
    retried = store.retry_dead("payments")

    # Then each is pending with its retries renewed, counted by type, and nothing else moved
    assert retried == {"charge": 2, "refund": 1}
    for job in (store.get_job(job.id) for job in dead):
        assert (job.status, job.attempts, job.finished_at, job.lease_id) == (JobStatus.PENDING, 0, None, None)
    assert store.get_job(elsewhere.id).status is JobStatus.DEAD
    assert store.get_job(pending.id).status is JobStatus.PENDING


def test_retry_dead_of_one_type_leaves_the_other_types_dead(store):
    charge = dead_job(store, queue="payments", type="charge")
    refund = dead_job(store, queue="payments", type="refund")

    assert store.retry_dead("payments", type="refund") == {"refund": 1}
    assert (store.get_job(charge.id).status, store.get_job(refund.id).status) == (JobStatus.DEAD, JobStatus.PENDING)


def test_retry_dead_of_a_queue_without_dead_jobs_retries_nothing(store):
    make_job(store, queue="calm")
    assert store.retry_dead("calm") == {}
