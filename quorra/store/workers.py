"""Workers: who leased lately, from which host, for which queues and job types. Written by
the gRPC servers (a few rows every few seconds, see quorra.rpc.sightings), read by
GET /v1/workers; the jobs a worker holds are counted from the jobs table when read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from quorra.access import ALL_TENANTS, DEFAULT_TENANT
from quorra.jobs import HOLDING_LEASE
from quorra.schema import UTCDateTime, jobs, workers
from quorra.store.base import StoreBase, of_tenant, status_in

MAX_WORKERS_LISTED = 1000


@dataclass(frozen=True)
class WorkerSighting:
    """A worker seen by a gRPC server. None: not told this time (a heartbeat), keep what is known."""

    worker_id: str
    host: str | None = None
    pid: int | None = None
    queues: tuple[str, ...] | None = None
    handlers: tuple[str, ...] | None = None
    tenant: str = DEFAULT_TENANT  # of its key ("*": a fleet worker); a worker id is named within it


@dataclass(frozen=True)
class Worker:
    id: str
    host: str | None
    pid: int | None
    queues: list[str]
    handlers: list[str] | None  # None: the worker did not say
    first_seen_at: datetime
    last_seen_at: datetime
    jobs_in_flight: int = 0
    held_by_queue: dict[str, int] = field(default_factory=dict)
    tenant: str = "default"  # the tenant of its key; "*" for a worker of every tenant


class Workers(StoreBase):
    """Record and read the workers the gRPC servers see."""

    def record_workers(self, sightings: Sequence[WorkerSighting], *, now: datetime | None = None) -> None:
        """Upsert each sighting: last_seen_at now, and whatever it told (the rest is kept)."""
        if not sightings:
            return
        with self._transaction() as conn:
            clock = self._clock(now)
            for sighting in sightings:
                conn.execute(self._upsert(sighting, clock.now()))

    def _upsert(self, sighting: WorkerSighting, now):
        insert = (postgresql if self.dialect == "postgresql" else sqlite).insert(workers)
        told = {
            "host": sighting.host,
            "pid": sighting.pid,
            "queues": list(sighting.queues) if sighting.queues is not None else None,
            "handlers": list(sighting.handlers) if sighting.handlers is not None else None,
        }
        statement = insert.values(
            tenant=sighting.tenant, id=sighting.worker_id, first_seen_at=now, last_seen_at=now, **told
        )
        changes = {"last_seen_at": statement.excluded.last_seen_at}
        changes |= {name: statement.excluded[name] for name, value in told.items() if value is not None}
        return statement.on_conflict_do_update(index_elements=[workers.c.tenant, workers.c.id], set_=changes)

    def recent_workers(self, seen_since: datetime, *, tenant: str = DEFAULT_TENANT) -> list[Worker]:
        """The workers of `tenant` and the fleet workers (of every tenant) seen since
        `seen_since`, most recently seen first, each with the jobs of `tenant` it holds now
        (by queue): a fleet worker's other jobs are other tenants' business."""
        query = (
            select(workers)
            .where(workers.c.last_seen_at >= literal(seen_since, UTCDateTime), *_serving(tenant))
            .order_by(workers.c.last_seen_at.desc(), workers.c.id)
            .limit(MAX_WORKERS_LISTED)
        )
        held = (
            select(jobs.c.leased_by, jobs.c.queue, func.count())
            .where(status_in(HOLDING_LEASE), *of_tenant(jobs, tenant))
            .group_by(jobs.c.leased_by, jobs.c.queue)
        )
        with self._transaction() as conn:
            rows = conn.execute(query).all()
            holding: dict[str, dict[str, int]] = {}
            for worker_id, queue, count in conn.execute(held):
                holding.setdefault(worker_id, {})[queue] = count
        return [_worker(row, holding.get(row.id, {})) for row in rows]

    def queues_served_since(self, seen_since: datetime, *, tenant: str = DEFAULT_TENANT) -> set[str]:
        """The queues of `tenant` that some worker seen since `seen_since` leases from (one
        of its own, or a fleet worker)."""
        query = select(workers.c.queues).where(
            workers.c.last_seen_at >= literal(seen_since, UTCDateTime), *_serving(tenant)
        )
        with self._transaction() as conn:
            return {queue for queues in conn.execute(query).scalars() for queue in queues or ()}

    def prune_workers(self, seen_before: datetime) -> int:
        """Forget the workers not seen since `seen_before`."""
        with self._transaction() as conn:
            statement = delete(workers).where(workers.c.last_seen_at < literal(seen_before, UTCDateTime))
            return conn.execute(statement).rowcount


def _serving(tenant: str) -> list:
    """The workers that may serve `tenant`: its own and the fleet's (ALL_TENANTS: every one)."""
    return [] if tenant == ALL_TENANTS else [workers.c.tenant.in_([tenant, ALL_TENANTS])]


def _worker(row, held: dict[str, int]) -> Worker:
    return Worker(
        id=row.id,
        host=row.host,
        pid=row.pid,
        queues=list(row.queues or []),
        handlers=list(row.handlers) if row.handlers is not None else None,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        jobs_in_flight=sum(held.values()),
        held_by_queue=held,
        tenant=row.tenant,
    )
