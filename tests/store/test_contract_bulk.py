"""Bulk retry and delete by filter, and deleting one job: one statement each, on both
backends; a deleted job's attempts and idempotency keys go with it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from quorra.errors import IllegalTransition, InvalidArgument, JobNotFound
from quorra.jobs import JobStatus
from quorra.schema import idempotency_keys, job_attempts
from quorra.store import JobFilter
from tests.factories import cancelled_job, dead_job, leased_job, make_job, spec, succeeded_job


def rows(store, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_delete_matching_deletes_the_chosen_finished_jobs_and_their_attempts(store):
    # Given dead jobs of two types in a queue, a dead job elsewhere and a pending one
    doomed = [dead_job(store, queue="dlq", type="charge") for _ in range(2)]
    kept_type = dead_job(store, queue="dlq", type="refund")
    elsewhere = dead_job(store, queue="other", type="charge")
    pending = make_job(store, queue="dlq", type="charge")
    # When the dead charges of the queue are deleted
    deleted = store.delete_matching(JobFilter("dlq", JobStatus.DEAD, "charge"))
    # Then those two are gone with their attempts, and nothing else
    assert deleted == 2
    for job in doomed:
        with pytest.raises(JobNotFound):
            store.get_job(job.id)
    assert {store.get_job(j.id).status for j in (kept_type, elsewhere, pending)} == {JobStatus.DEAD, JobStatus.PENDING}
    assert rows(store, job_attempts) == 2  # the two dead jobs left


def test_delete_matching_takes_a_created_range(store):
    jobs = [cancelled_job(store, queue="c") for _ in range(3)]
    chosen = JobFilter("c", JobStatus.CANCELLED, created_from=jobs[1].created_at, created_to=jobs[2].created_at)
    assert store.delete_matching(chosen) == 1
    with pytest.raises(JobNotFound):
        store.get_job(jobs[1].id)


def test_deleting_a_job_deletes_the_idempotency_keys_that_name_it(store):
    job = store.enqueue(spec(queue="k", idempotency_key="once"))
    store.cancel(job.id)
    assert store.delete_matching(JobFilter("k", JobStatus.CANCELLED)) == 1
    assert rows(store, idempotency_keys) == 0


def test_only_finished_jobs_can_be_bulk_deleted(store):
    with pytest.raises(InvalidArgument):
        store.delete_matching(JobFilter("q", JobStatus.PENDING))


def test_retry_matching_retries_failed_or_cancelled_jobs_too(store):
    cancelled = [cancelled_job(store, queue="r") for _ in range(2)]
    dead = dead_job(store, queue="r")
    assert store.retry_matching(JobFilter("r", JobStatus.CANCELLED)) == {"email_send": 2}
    assert [store.get_job(j.id).status for j in cancelled] == [JobStatus.PENDING] * 2
    assert store.get_job(dead.id).status is JobStatus.DEAD
    with pytest.raises(InvalidArgument):
        store.retry_matching(JobFilter("r", JobStatus.SUCCEEDED))


def test_delete_job_deletes_one_finished_job(store):
    job = succeeded_job(store)
    assert store.delete_job(job.id).id == job.id
    with pytest.raises(JobNotFound):
        store.get_job(job.id)
    assert rows(store, job_attempts) == 0


@pytest.mark.parametrize("status", ["pending", "leased"])
def test_a_job_not_finished_cannot_be_deleted(store, status):
    job = make_job(store) if status == "pending" else leased_job(store)
    with pytest.raises(IllegalTransition):
        store.delete_job(job.id)
    assert store.get_job(job.id).status.value == status


def test_deleting_an_unknown_job_is_not_found(store):
    with pytest.raises(JobNotFound):
        store.delete_job("00000000-0000-0000-0000-000000000000")


def test_a_parent_whose_dependant_has_not_finished_is_not_deleted(store):
    # Given a cancelled parent whose dependant (on_parent_failure: run) still waits to run
    parent = make_job(store, queue="dag")
    store.cancel(parent.id)
    child = store.enqueue(spec(queue="dag-children", depends_on=[parent.id], on_parent_failure="run"))
    # When cancelled jobs of its queue are deleted, or it alone
    assert store.delete_matching(JobFilter("dag", JobStatus.CANCELLED)) == 0
    with pytest.raises(IllegalTransition):
        store.delete_job(parent.id)
    # Then it is still there for its dependant; once that finishes, it may go, edges and all
    store.cancel(child.id)
    assert store.delete_matching(JobFilter("dag", JobStatus.CANCELLED)) == 1
