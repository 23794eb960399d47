"""Jobs in a given state, reached only through the store's public transitions."""

from __future__ import annotations

from typing import Any

from quorra.jobs import Job, JobSpec, JobStatus
from quorra.store import Store


def spec(**overrides: Any) -> JobSpec:
    fields = {"type": "email_send", "payload": {"to": "user@example.com"}} | overrides
    return JobSpec.parse(fields)


def make_job(store: Store, **overrides: Any) -> Job:
    return store.enqueue(spec(**overrides))


def leased_job(store: Store, *, ttl_seconds: float = 30, worker_id: str = "worker-a", **overrides: Any) -> Job:
    job = make_job(store, queue=overrides.pop("queue", f"q-{id(store)}-{_serial()}"), **overrides)
    [leased] = store.lease_jobs([job.queue], worker_id, 1, ttl_seconds)
    assert leased.id == job.id
    return leased


def dead_job(store: Store, **overrides: Any) -> Job:
    """Enqueue with max_retries=0, lease, nack: dead after one attempt."""
    job = leased_job(store, max_retries=0, **overrides)
    return store.nack(job.id, job.lease_id, "boom")


def processing_job(store: Store, **overrides: Any) -> Job:
    """Leased, then started by its worker's first heartbeat."""
    job = leased_job(store, **overrides)
    return store.extend_lease(job.id, job.lease_id, 30)


def succeeded_job(store: Store, **overrides: Any) -> Job:
    job = leased_job(store, **overrides)
    return store.ack(job.id, job.lease_id, {"ok": True})


def failed_job(store: Store, **overrides: Any) -> Job:
    """One failed attempt, a retry scheduled after the backoff."""
    job = leased_job(store, **overrides)
    return store.nack(job.id, job.lease_id, "boom")


def cancelled_job(store: Store, **overrides: Any) -> Job:
    return store.cancel(make_job(store, **overrides).id)


def blocked_job(store: Store, **overrides: Any) -> Job:
    """A dependant of a pending job (in a queue of its own), waiting for it."""
    parent = make_job(store, queue=f"parents-{_serial()}")
    return make_job(store, depends_on=[parent.id], **overrides)


def dependant_of(store: Store, *parents: Job, **overrides: Any) -> Job:
    return make_job(
        store,
        queue=overrides.pop("queue", f"q-{id(store)}-{_serial()}"),
        depends_on=[p.id for p in parents],
        **overrides,
    )


def job_in_status(store: Store, status: JobStatus | str, **overrides: Any) -> Job:
    """A job in `status`, each in a queue of its own, reached through the public verbs."""
    overrides.setdefault("queue", f"q-{id(store)}-{_serial()}")
    reach = {
        JobStatus.PENDING: lambda: make_job(store, **overrides),
        JobStatus.LEASED: lambda: leased_job(store, **overrides),
        JobStatus.PROCESSING: lambda: processing_job(store, **overrides),
        JobStatus.SUCCEEDED: lambda: succeeded_job(store, **overrides),
        JobStatus.FAILED: lambda: failed_job(store, **overrides),
        JobStatus.DEAD: lambda: dead_job(store, **overrides),
        JobStatus.CANCELLED: lambda: cancelled_job(store, **overrides),
        JobStatus.BLOCKED: lambda: blocked_job(store, **overrides),
    }
    job = reach[JobStatus(status)]()
    assert job.status == JobStatus(status)
    return job


_counter = iter(range(10**9))


def _serial() -> int:
    return next(_counter)
