"""Jobs in a given state, reached only through the store's public transitions."""

from __future__ import annotations

from typing import Any

from quorra.jobs import Job, JobSpec
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


_counter = iter(range(10**9))


def _serial() -> int:
    return next(_counter)
