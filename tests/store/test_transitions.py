"""Every store verb moves jobs only along quorra.jobs.TRANSITIONS, and every edge of
TRANSITIONS is reachable through some verb: a scripted walk applies each verb to a job in
each status and watches the status of every job in the database before and after."""

from __future__ import annotations

import uuid

from quorra.errors import IllegalTransition, StaleLease
from quorra.jobs import TRANSITIONS, Job, JobStatus
from quorra.store import Store
from tests.factories import blocked_job, dependant_of, job_in_status
from tests.store.support import later

S = JobStatus
HOUR = 3600


def _lease_id(job) -> str:
    return job.lease_id or str(uuid.uuid4())


# Each verb as a worker, a person or the scheduler would call it. Lease and reap look an
# hour ahead, so that failed jobs are due again and every lease has expired.
VERBS = {
    "lease": lambda store, job: store.lease_jobs([job.queue], "walker", 1, 30, now=later(store, HOUR)),
    "extend": lambda store, job: store.extend_lease(job.id, _lease_id(job), 30),
    "ack": lambda store, job: store.ack(job.id, _lease_id(job), {"ok": True}),
    "nack": lambda store, job: store.nack(job.id, _lease_id(job), "boom"),
    "release": lambda store, job: store.release(job.id, _lease_id(job)),
    "cancel": lambda store, job: store.cancel(job.id),
    "retry": lambda store, job: store.retry(job.id),
    "reap": lambda store, job: store.reap_expired_leases(now=later(store, HOUR)),
}
EVERY_EDGE = {(source, target) for source, targets in TRANSITIONS.items() for target in targets}


def _statuses(store: Store) -> dict[str, JobStatus]:
    return {job.id: job.status for job in store.list_jobs(limit=500).jobs}


def _apply(store: Store, verb: str, job) -> set[tuple[JobStatus, JobStatus]]:
    """Run one verb; return the status changes it made to any job. A refused verb
    changes nothing."""
    before = _statuses(store)
    try:
        VERBS[verb](store, job)
    except (IllegalTransition, StaleLease):
        assert _statuses(store) == before, f"a refused {verb} changed a job"
        return set()
    after = _statuses(store)
    return {(before[job_id], after[job_id]) for job_id in before if before[job_id] != after[job_id]}


def _with_a_dependant(store: Store, status: JobStatus, **overrides) -> Job:
    """A job in `status` that a job submitted after it depends on (which is blocked, pending
    or, when the job is dead or cancelled, cancelled)."""
    job = job_in_status(store, status, **overrides)
    dependant_of(store, job)
    return job


def _cancelled_dependant(store: Store) -> Job:
    """A dependant cancelled by a person while its parent is still pending."""
    return store.cancel(blocked_job(store).id)


def test_every_store_verb_moves_jobs_only_along_the_transitions(store):
    # Given a job in each status (retrying jobs, and jobs that die on their first failure),
    # the same with a dependant, and a dependant cancelled before its parent ran
    walk = [(status, {}) for status in JobStatus] + [(s, {"max_retries": 0}) for s in (S.LEASED, S.PROCESSING)]
    makers = [
        lambda status=status, overrides=overrides: job_in_status(store, status, **overrides)
        for status, overrides in walk
    ]
    makers += [
        lambda status=status, overrides=overrides: _with_a_dependant(store, status, **overrides)
        for status, overrides in walk
    ]
    makers.append(lambda: _cancelled_dependant(store))
    seen = set()
    for make in makers:
        for verb in VERBS:
            # When each verb is applied to a fresh job in that status
            job = make()
            status = job.status
            changes = _apply(store, verb, job)
            # Then every status change it made is an edge of TRANSITIONS
            assert changes <= EVERY_EDGE, f"{verb} on a {status} job made {changes - EVERY_EDGE}"
            seen |= changes
    # And the verbs together reach every edge
    assert seen == EVERY_EDGE, f"no verb reaches {EVERY_EDGE - seen}"
