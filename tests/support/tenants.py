"""Jobs of a given tenant, and API keys of one, for the tenant isolation tests."""

from __future__ import annotations

import uuid
from typing import Any

from quorra.access import Role
from quorra.jobs import Job
from quorra.keys import KeySpec
from quorra.store import Store
from tests.factories import spec


def job_of(store: Store, tenant: str, **fields: Any) -> Job:
    """A pending job of `tenant`, in a queue of its own unless `fields` names one."""
    fields.setdefault("queue", f"q-{uuid.uuid4().hex[:8]}")
    return store.enqueue(spec(**fields), tenant=tenant)


def leased_job_of(store: Store, tenant: str, **fields: Any) -> Job:
    job = job_of(store, tenant, **fields)
    [leased] = store.lease_jobs([job.queue], "worker-a", 1, 30, tenant=tenant)
    assert leased.id == job.id
    return leased


def key_of(store: Store, tenant: str, role: Role = Role.ADMIN) -> dict[str, str]:
    """The X-API-Key header of a new managed key of `tenant`."""
    created = store.create_api_key(KeySpec(name=f"{tenant} {role}", role=role, tenant=tenant), created_by="test")
    return {"X-API-Key": created.secret}
