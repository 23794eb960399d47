"""Leasing: the ready-jobs walk (priority levels, one index range scan per queue), the
lease byte budget, heartbeats and the hand-back of a lease that never reached its worker."""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Interval,
    LargeBinary,
    Text,
    bindparam,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE, Select

from quorra.access import DEFAULT_TENANT
from quorra.errors import InvalidArgument
from quorra.jobs import (
    LEASABLE,
    Job,
    JobStatus,
)
from quorra.schema import UTCDateTime, jobs, queues
from quorra.store.base import (
    Clock,
    StoreBase,
    lease_ids,
    log_transition,
    of_tenant,
    status_in,
    to_job,
)
from quorra.store.dependencies import parent_outcomes


class Leasing(StoreBase):
    """Lease, heartbeat and hand-back: the worker's verbs other than settling."""

    def lease_jobs(
        self,
        queues: Sequence[str],
        worker_id: str,
        max_jobs: int,
        ttl_seconds: float,
        *,
        max_bytes: int | None = None,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
    ) -> list[Job]:
        """Lease up to `max_jobs` ready jobs of `tenant`'s `queues`, best first; each gets
        its own new lease_id and one more attempt. With `max_bytes`, the batch stops before
        the job whose payload would take it past that many bytes (the first job always comes)."""
        if not queues or max_jobs < 1 or ttl_seconds <= 0:
            raise InvalidArgument("lease needs at least one queue, max_jobs >= 1 and a positive ttl")
        queues = list(dict.fromkeys(queues))  # each queue once: one index scan each
        ask = (queues, tenant, worker_id, max_jobs, ttl_seconds, max_bytes)
        with self._one_statement_verb() as conn:
            clock = self._clock(now)
            if self.dialect == "postgresql":
                rows = self._lease_skip_locked(conn, clock, *ask)
            else:
                rows = self._lease_one_by_one(conn, clock, *ask)
            leased = [to_job(row) for row in rows]
            if any(job.pending_parents is not None for job in leased):  # dependants: their parents' outcomes
                outcomes = parent_outcomes(conn, leased)
                leased = [_with_parents(job, outcomes) for job in leased]
        leased.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        for job in leased:
            log_transition("job leased", "job.leased", job, worker_id=worker_id)
        return leased

    def _ready_ids_level_by_level(self, conn, clock: Clock, queues: list[str], tenant: str, max_jobs: int) -> list[str]:
        """SQLite: the same walk as _ready_cte, one priority level per statement, over the
        queues that are not paused (read first, in the same transaction)."""
        queues = _unpaused(conn, queues, tenant)
        if not queues:
            return []
        top, below, at_level = _level_walk(len(queues))
        params = _ready_params(clock, queues, tenant, max_jobs)
        ids: list[str] = []
        level = conn.execute(top, params).scalar()
        while level is not None and len(ids) < max_jobs:
            ids += conn.execute(at_level, params | {"priority": level, "max_jobs": max_jobs - len(ids)}).scalars()
            level = conn.execute(below, params | {"below": level}).scalar()
        return ids

    def _lease_values(self, clock: Clock, worker_id: str, ttl_seconds: float) -> dict[str, Any]:
        return {
            "status": JobStatus.LEASED.value,
            "leased_by": worker_id,
            "attempts": jobs.c.attempts + 1,
            "leased_at": clock.now(),
            "lease_expires_at": clock.expiry_after(ttl_seconds),
            "updated_at": clock.now(),
        }

    def _lease_skip_locked(self, conn, clock, queues, tenant, worker_id, max_jobs, ttl_seconds, max_bytes):
        params = _ready_params(clock, queues, tenant, max_jobs) | (
            {"max_bytes": max_bytes} if max_bytes is not None else {}
        )
        if clock.fixed is None:  # the hot path: one statement object per shape, built once
            statement = _lease_statement(len(queues), max_bytes is not None)
            params |= {"worker_id": worker_id, "ttl": timedelta(seconds=ttl_seconds)}
            return conn.execute(statement, params).all()
        ready = _lease_ready(len(queues), True, max_bytes is not None)
        values = self._lease_values(clock, worker_id, ttl_seconds) | {"lease_id": func.gen_random_uuid()}
        statement = update(jobs).where(jobs.c.id == ready.c.id).values(values).returning(*jobs.c)
        return conn.execute(statement, params).all()

    def _lease_one_by_one(self, conn, clock, queues, tenant, worker_id, max_jobs, ttl_seconds, max_bytes):
        # SQLite: BEGIN IMMEDIATE already holds the only write lock, so nobody races us.
        values = self._lease_values(clock, worker_id, ttl_seconds)
        rows = []
        ready = self._ready_ids_level_by_level(conn, clock, queues, tenant, max_jobs)
        for job_id in _ids_within_budget(conn, ready, max_bytes):
            statement = update(jobs).where(jobs.c.id == job_id).values(values | {"lease_id": str(uuid.uuid4())})
            rows.append(conn.execute(statement.returning(*jobs.c)).one())
        return rows

    def extend_lease(
        self,
        job_id: str,
        lease_id: str,
        ttl_seconds: float,
        *,
        worker_id: str | None = None,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
    ) -> Job:
        """Heartbeat: push the lease's expiry to now + ttl; a leased job becomes processing.
        Another tenant's job is JobNotFound (ALL_TENANTS: a fleet worker's, any tenant's)."""
        if ttl_seconds <= 0:
            raise InvalidArgument("ttl_seconds must be positive")
        with self._transaction() as conn:
            clock = self._clock(now)
            values = {
                "status": JobStatus.PROCESSING.value,
                "lease_expires_at": clock.expiry_after(ttl_seconds),
                "updated_at": clock.now(),
            }
            job = self._update_held_lease(conn, clock, job_id, lease_id, values, worker_id, tenant=tenant)
        log_transition("lease extended", "lease.extended", job, level=logging.DEBUG)
        return job

    def release(self, job_id: str, lease_id: str, *, tenant: str = DEFAULT_TENANT) -> Job:
        """Hand back a lease that never reached its worker: the job is ready again and the
        attempt is not counted. Another tenant's job is JobNotFound."""
        job_id, lease_id = lease_ids(job_id, lease_id)
        with self._transaction() as conn:
            clock = self._clock(None)
            statement = (
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_id == lease_id, jobs.c.status == JobStatus.LEASED.value)
                .where(*of_tenant(jobs, tenant))
                .values(
                    status=JobStatus.PENDING.value,
                    attempts=jobs.c.attempts - 1,
                    lease_id=None,
                    leased_by=None,
                    leased_at=None,
                    lease_expires_at=None,
                    updated_at=clock.now(),
                )
                .returning(*jobs.c)
            )
            row = conn.execute(statement).one_or_none()
            if row is None:
                raise self._why_not_held(conn, job_id, tenant)
        job = to_job(row)
        log_transition("lease released", "lease.released", job)
        return job


def _with_parents(job: Job, outcomes: dict) -> Job:
    return job if job.pending_parents is None else dataclasses.replace(job, parents=outcomes.get(job.id, ()))


def _payload_bytes(dialect: str) -> ColumnElement:
    """The size of a job's payload as JSON text, in bytes (about what a lease sends)."""
    if dialect == "postgresql":
        return func.octet_length(cast(jobs.c.payload, Text)).label("size")
    return func.length(cast(jobs.c.payload, LargeBinary)).label("size")  # SQLite: its UTF-8 bytes


def _lease_ready(queue_count: int, fixed_now: bool, budget: bool) -> CTE:
    """PostgreSQL: the ready jobs to lease, locked, best first (the CTE form: LIMIT inside
    IN (SELECT ... SKIP LOCKED) may lock more rows than asked), within the byte budget if any."""
    ready = _ready_cte(queue_count, fixed_now)
    return _within_budget(ready) if budget else ready


@functools.lru_cache(maxsize=64)
def _lease_statement(queue_count: int, budget: bool):
    """The lease UPDATE on the database clock, built once per shape: SQLAlchemy then finds
    its compiled form by the statement's memoized cache key instead of walking a new tree
    on every lease. Parameters: the ready CTE's, worker_id and ttl (an interval)."""
    values = {
        "status": JobStatus.LEASED.value,
        "leased_by": bindparam("worker_id", type_=Text),
        "attempts": jobs.c.attempts + 1,
        "leased_at": func.now(),
        "lease_expires_at": func.clock_timestamp() + bindparam("ttl", type_=Interval),
        "updated_at": func.now(),
        "lease_id": func.gen_random_uuid(),
    }
    ready = _lease_ready(queue_count, False, budget)
    return update(jobs).where(jobs.c.id == ready.c.id).values(values).returning(*jobs.c)


@functools.lru_cache(maxsize=64)
def _within_budget(ready: CTE) -> CTE:
    """PostgreSQL: of the ready (locked) rows, best first, those whose payloads fit in
    :max_bytes together; the first always, so one large job is never stuck."""
    sized = (
        select(jobs.c.id, jobs.c.priority, jobs.c.run_at, _payload_bytes("postgresql"))
        .join_from(ready, jobs, jobs.c.id == ready.c.id)
        .subquery("sized")
    )
    order = (sized.c.priority.desc(), sized.c.run_at, sized.c.id)
    ranked = select(
        sized.c.id,
        func.sum(sized.c.size).over(order_by=order).label("running"),
        func.row_number().over(order_by=order).label("position"),
    ).subquery("ranked")
    within = or_(ranked.c.running <= bindparam("max_bytes"), ranked.c.position == 1)
    return select(ranked.c.id).where(within).cte("within_budget")


def _ids_within_budget(conn: Connection, ids: list[str], max_bytes: int | None) -> list[str]:
    """SQLite: the first of `ids` (best first) whose payloads fit in max_bytes together;
    the first always."""
    if max_bytes is None or len(ids) < 2:
        return ids
    sizes = dict(conn.execute(select(jobs.c.id, _payload_bytes("sqlite")).where(jobs.c.id.in_(ids))).all())
    kept, taken = [], 0
    for job_id in ids:
        taken += sizes[job_id]
        if kept and taken > max_bytes:
            break
        kept.append(job_id)
    return kept


def _ready_params(clock: Clock, queues: list[str], tenant: str, max_jobs: int) -> dict[str, Any]:
    params: dict[str, Any] = {f"queue_{n}": queue for n, queue in enumerate(queues)}
    params |= {"lease_tenant": tenant, "max_jobs": max_jobs}
    return params | ({"now": clock.fixed} if clock.fixed is not None else {})


@functools.lru_cache(maxsize=64)
def _ready_cte(queue_count: int, fixed_now: bool) -> CTE:
    """Priority levels are walked from the top (a recursive CTE of index probes, so delayed
    jobs of a higher priority are stepped over, not scanned); at each level every queue
    gives its first ready jobs (an index range scan under SKIP LOCKED, so up to max_jobs
    per queue are locked), merged by run_at, id; the walk stops at max_jobs."""
    levels = _top_level(queue_count, None, paused_probe=True).cte("levels", recursive=True)
    below = select(_top_level(queue_count, levels.c.priority, paused_probe=True).scalar_subquery())
    levels = levels.union_all(below.where(levels.c.priority.is_not(None)))
    now = bindparam("now", type_=UTCDateTime) if fixed_now else func.now()
    at_level = _ready_at_level(queue_count, levels.c.priority, now, lock=True, paused_probe=True)
    at_level = at_level.lateral("at_level")
    ready = select(at_level.c.id).select_from(levels.join(at_level, literal(True))).limit(bindparam("max_jobs"))
    return ready.cte("ready").prefix_with("MATERIALIZED")  # computed once, never re-run per row


@functools.lru_cache(maxsize=64)
def _level_walk(queue_count: int) -> tuple[Select, Select, Select]:
    """SQLite's walk, a statement per step: the top level, the next level below, the ready
    jobs of one level."""
    now = bindparam("now", type_=UTCDateTime)
    at_level = _ready_at_level(queue_count, bindparam("priority"), now, lock=False, paused_probe=False)
    return _top_level(queue_count, None), _top_level(queue_count, bindparam("below")), at_level


def _top_level(queue_count: int, below, *, paused_probe: bool = False) -> Select:
    """The highest priority any queue holds among waiting jobs (ready or delayed), below
    `below` if given: one probe of ix_jobs_ready per queue (per unpaused queue, with
    `paused_probe`)."""
    probes = []
    for n in range(queue_count):
        probe = select(jobs.c.priority).where(_of_queue(n), status_in(LEASABLE))
        if paused_probe:
            probe = probe.where(_not_paused(n))
        if below is not None:
            probe = probe.where(jobs.c.priority < below)
        probe = probe.order_by(jobs.c.priority.desc()).limit(1).correlate_except(jobs)
        probes.append(select(probe.scalar_subquery().label("priority")))
    return select(func.max(union_all(*probes).subquery().c.priority).label("priority"))


def _ready_at_level(queue_count: int, priority, now, *, lock: bool, paused_probe: bool) -> Select:
    """The first ready jobs of one priority, by run_at then id: a range scan of
    ix_jobs_ready per queue, merged."""
    branches = []
    for n in range(queue_count):
        branch = (
            select(jobs.c.id, jobs.c.run_at)
            .where(_of_queue(n), status_in(LEASABLE), jobs.c.priority == priority)
            .where(jobs.c.run_at <= now)
            .order_by(jobs.c.run_at, jobs.c.id)
            .limit(bindparam("max_jobs"))
            .correlate_except(jobs)
        )
        branch = branch.where(_not_paused(n)) if paused_probe else branch
        branch = branch.with_for_update(skip_locked=True) if lock else branch
        branches.append(select(branch.subquery()))
    merged = union_all(*branches).subquery()
    return select(merged.c.id).order_by(merged.c.run_at, merged.c.id).limit(bindparam("max_jobs"))


def _of_queue(n: int) -> ColumnElement:
    """The jobs of the lease's n-th queue, of its tenant: a prefix of ix_jobs_ready."""
    return (jobs.c.queue == bindparam(f"queue_{n}")) & (jobs.c.tenant == bindparam("lease_tenant"))


def _not_paused(n: int) -> ColumnElement:
    """PostgreSQL: the n-th queue of the lease is not paused. A probe of the queues table's
    primary key that does not depend on the job row, so it is a one-time filter of its
    branch, not a test per job."""
    named = (queues.c.tenant == bindparam("lease_tenant")) & (queues.c.name == bindparam(f"queue_{n}"))
    return ~exists().where(named, queues.c.is_paused)


_PAUSED_AMONG = select(queues.c.name).where(
    queues.c.tenant == bindparam("lease_tenant"),
    queues.c.name.in_(bindparam("names", expanding=True)),
    queues.c.is_paused,
)


def _unpaused(conn: Connection, names: list[str], tenant: str) -> list[str]:
    """SQLite: `names` but the paused ones; one primary-key search per name."""
    paused = set(conn.execute(_PAUSED_AMONG, {"names": names, "lease_tenant": tenant}).scalars())
    return [name for name in names if name not in paused] if paused else names
