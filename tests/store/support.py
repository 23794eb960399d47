"""Helpers shared by the store tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from quorra.jobs import Job
from quorra.store import Store


def later(store: Store, seconds: float) -> datetime:
    """A time `seconds` from now on the store's clock."""
    return store.database_now() + timedelta(seconds=seconds)


def lease_one(store: Store, queue: str, *, worker_id: str = "worker-a", ttl: float = 30, **kwargs) -> Job:
    [job] = store.lease_jobs([queue], worker_id, 1, ttl, **kwargs)
    return job


def canonical(text: str) -> str:
    return str(uuid.UUID(text))
