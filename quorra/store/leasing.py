"""Leasing: the lease statement over the ready walk (quorra.store.ready: partitions, priority
levels, fair turns), the lease byte budget, heartbeats and the hand-back of a lease that
never reached its worker."""

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
    func,
    or_,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE

from quorra.access import ALL_TENANTS, DEFAULT_TENANT
from quorra.db import INDEX_ORDER_OPTION
from quorra.errors import InvalidArgument
from quorra.jobs import (
    Job,
    JobStatus,
)
from quorra.schema import jobs
from quorra.store import ready
from quorra.store.base import (
    Clock,
    StoreBase,
    job_from_columns,
    lease_ids,
    log_transition,
    of_tenant,
    to_job,
)
from quorra.store.dependencies import parent_outcomes
from quorra.store.direct import DirectStatement
from quorra.store.limits import grant, limits_apply, spend


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
        """Lease up to `max_jobs` ready jobs of `tenant`'s `queues` (every tenant's with
        ALL_TENANTS), taken in turns across tenants and queues (quorra.store.ready) and
        returned in that order; each gets its own new lease_id and one more attempt. With
        `max_bytes`, the batch stops before the job whose payload would take it past that many
        bytes (the first job always comes)."""
        if not queues or max_jobs < 1 or ttl_seconds <= 0:
            raise InvalidArgument("lease needs at least one queue, max_jobs >= 1 and a positive ttl")
        queues = list(dict.fromkeys(queues))  # each queue once: one index scan each
        limited_turn: list[Job] = []
        if tenant == ALL_TENANTS:  # the fleet's statement skips limited partitions: their tenants go first
            limited_turn = self._lease_limited_tenants(queues, worker_id, max_jobs, ttl_seconds, max_bytes, now)
            if len(limited_turn) >= max_jobs:
                return limited_turn
        leased = self._lease_of(queues, tenant, worker_id, max_jobs - len(limited_turn), ttl_seconds, max_bytes, now)
        return limited_turn + leased

    def _lease_of(self, queues, tenant, worker_id, max_jobs, ttl_seconds, max_bytes, now) -> list[Job]:
        """One lease: the prepared statement, or the limited path when limits apply to it."""
        ask = (queues, tenant, worker_id, max_jobs, ttl_seconds, max_bytes)
        limited = self.dialect == "postgresql" and self.known_limits().apply_to(tenant, queues)  # LimitSettings
        if self.dialect == "postgresql" and not limited and now is None:
            leased = self._lease_prepared(*ask)
        else:
            with self._transaction() if limited else self._one_statement_verb() as conn:
                clock = self._clock(now)
                if limited or (self.dialect == "sqlite" and limits_apply(conn, tenant, queues)):
                    leased = self._lease_limited(conn, clock, *ask)
                elif self.dialect == "postgresql":
                    leased = self._lease_skip_locked(conn, clock, *ask)
                else:
                    leased = self._lease_one_by_one(conn, clock, *ask)
        if any(job.pending_parents is not None for job in leased):  # dependants: their parents' outcomes
            with self._one_statement() as conn:  # settled parents: their outcomes no longer change
                outcomes = parent_outcomes(conn, leased)
            leased = [_with_parents(job, outcomes) for job in leased]
        for job in leased:
            log_transition("job leased", "job.leased", job, worker_id=worker_id)
        return leased

    def _lease_prepared(self, queues, tenant, worker_id, max_jobs, ttl_seconds, max_bytes) -> list[Job]:
        """PostgreSQL's hot path: the lease statement of this shape on the database clock, one
        statement in autocommit, prepared with a generic plan (quorra.store.direct); see
        _one_statement_verb for its commit."""
        statement, params = prepared_lease(queues, tenant, worker_id, max_jobs, ttl_seconds, max_bytes)
        with self._translated_errors():
            rows = statement.rows(self.engine, params, durable=self.durable_leases)
        return _in_lease_order([statement.named(row) for row in rows])

    def _lease_limited_tenants(self, queues, worker_id, max_jobs, ttl_seconds, max_bytes, now) -> list[Job]:
        """A fleet lease's turn for the tenants whose limits apply to `queues` (as this
        process knows them, at most REFRESH_SECONDS old: a limit it does not know of yet
        only waits, as the fleet's statement skips every limited partition). Each such
        tenant, in turns that move on from lease to lease, leases its share of the batch by
        the limited path, in a transaction of its own (one tenant's rows locked at a time,
        so two leases never wait on each other in opposite orders)."""
        limited = self.known_limits().tenants_limited_on(queues)
        if not limited:
            return []
        share = -(-max_jobs // (len(limited) + 1))  # as if each were one more tenant of the lease
        start = ready.next_rotation(1) % len(limited)
        leased: list[Job] = []
        for tenant in limited[start:] + limited[:start]:
            wanted = min(share, max_jobs - len(leased))
            if wanted < 1:
                break
            leased += self._lease_of(queues, tenant, worker_id, wanted, ttl_seconds, max_bytes, now)
        return leased

    def _lease_limited(self, conn, clock, queues, tenant, worker_id, max_jobs, ttl_seconds, max_bytes):
        """Queues with limits, or a tenant with limits (see quorra.store.limits), inside a
        transaction: lock their rows, lease what they allow now, queue by queue (then the
        unlimited ones together), and spend the tokens taken."""
        granted = grant(conn, clock, tenant, queues)
        clock = self._clock(granted.now)  # the leases start when the grant was counted
        leased: list[Job] = []
        for group in granted.groups(queues):
            allowed = granted.allows(group, max_jobs - len(leased))
            if allowed:
                ask = (group, tenant, worker_id, allowed, ttl_seconds, max_bytes)
                if self.dialect == "postgresql":
                    taken = self._lease_skip_locked(conn, clock, *ask, within_limits=True)
                else:
                    taken = self._lease_one_by_one(conn, clock, *ask, within_limits=True)
                granted.took(group, len(taken))
                leased += taken
        spend(conn, tenant, granted)
        return leased

    def _ready_ids_level_by_level(
        self, conn, clock: Clock, queues: list[str], tenant: str, max_jobs: int, within_limits: bool = False
    ) -> list[str]:
        """SQLite: the lease's leasable partitions (one statement), each walked one priority
        level per statement, then ranked by the fair rule (quorra.store.ready)."""
        params = _ready_params(clock, queues, tenant, max_jobs)
        found = conn.execute(ready.partitions(len(queues), tenant == ALL_TENANTS, within_limits), params).all()
        quota = -(-max_jobs // max(1, len({part.tenant for part in found})))  # as ready._quota
        offered = {part: _partition_ready(conn, part, params, quota) for part in found}
        if sum(map(len, offered.values())) < max_jobs:  # as ready._topped_up
            offered |= {
                part: _partition_ready(conn, part, params, max_jobs) for part in found if len(offered[part]) == quota
            }
        candidates = [job for jobs_offered in offered.values() for job in jobs_offered]
        return ready.fair_order(candidates, ready.next_rotation(max_jobs), len(queues))[:max_jobs]

    def _lease_values(self, clock: Clock, worker_id: str, ttl_seconds: float) -> dict[str, Any]:
        return {
            "status": JobStatus.LEASED.value,
            "leased_by": worker_id,
            "attempts": jobs.c.attempts + 1,
            "leased_at": clock.now(),
            "lease_expires_at": clock.expiry_after(ttl_seconds),
            "updated_at": clock.now(),
        }

    def _lease_skip_locked(
        self, conn, clock, queues, tenant, worker_id, max_jobs, ttl_seconds, max_bytes, *, within_limits=False
    ):
        """PostgreSQL, in `conn` at the clock's fixed time (the limited path's grant, or a
        test's): one statement. `within_limits`: the limited path's, which has counted what
        the limits allow (the others skip limited queues)."""
        params = _ready_params(clock, queues, tenant, max_jobs) | {"rotation": ready.next_rotation(max_jobs)}
        params |= {"max_bytes": max_bytes} if max_bytes is not None else {}
        fleet, budget = tenant == ALL_TENANTS, max_bytes is not None
        values = self._lease_values(clock, worker_id, ttl_seconds) | {"lease_id": func.gen_random_uuid()}
        statement = _lease_update(_lease_ready(len(queues), fleet, True, budget, within_limits), values)
        return _in_lease_order([row._asdict() for row in conn.execute(statement, params)])

    def _lease_one_by_one(
        self, conn, clock, queues, tenant, worker_id, max_jobs, ttl_seconds, max_bytes, *, within_limits=False
    ):
        # SQLite: BEGIN IMMEDIATE already holds the only write lock, so nobody races us.
        values = self._lease_values(clock, worker_id, ttl_seconds)
        leased = []
        ready_ids = self._ready_ids_level_by_level(conn, clock, queues, tenant, max_jobs, within_limits)
        for job_id in _ids_within_budget(conn, ready_ids, max_bytes):
            statement = update(jobs).where(jobs.c.id == job_id).values(values | {"lease_id": str(uuid.uuid4())})
            leased.append(to_job(conn.execute(statement.returning(*jobs.c)).one()))
        return leased

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


def _lease_ready(queue_count: int, fleet: bool, fixed_now: bool, budget: bool, within_limits: bool = False) -> CTE:
    """PostgreSQL: the ready jobs to lease, locked, with their position in the lease, within
    the byte budget if any."""
    if queue_count == 1 and not fleet:
        ready_jobs = ready.one_partition_cte(fixed_now, within_limits)
    else:
        ready_jobs = ready.ready_cte(queue_count, fleet, fixed_now, within_limits)
    return _within_budget(ready_jobs) if budget else ready_jobs


def prepared_lease(
    queues: Sequence[str], tenant: str, worker_id: str, max_jobs: int, ttl_seconds: float, max_bytes: int | None
) -> tuple[DirectStatement, dict[str, Any]]:
    """PostgreSQL: the prepared lease statement of this lease's shape, and its parameters."""
    params = _ready_params(Clock("postgresql", None), queues, tenant, max_jobs)
    params |= {"rotation": ready.next_rotation(max_jobs), "worker_id": worker_id}
    params |= {"ttl": timedelta(seconds=ttl_seconds)} | ({"max_bytes": max_bytes} if max_bytes is not None else {})
    return _prepared_lease(len(queues), tenant == ALL_TENANTS, max_bytes is not None), params


@functools.lru_cache(maxsize=64)
def _prepared_lease(queue_count: int, fleet: bool, budget: bool) -> DirectStatement:
    """The lease UPDATE on the database clock, built once per shape and prepared per
    session. Parameters: the ready CTE's, worker_id and ttl (an interval)."""
    values = {
        "status": JobStatus.LEASED.value,
        "leased_by": bindparam("worker_id", type_=Text),
        "attempts": jobs.c.attempts + 1,
        "leased_at": func.now(),
        "lease_expires_at": func.clock_timestamp() + bindparam("ttl", type_=Interval),
        "updated_at": func.now(),
        "lease_id": func.gen_random_uuid(),
    }
    return DirectStatement(_lease_update(_lease_ready(queue_count, fleet, False, budget), values), plans="generic")


def _lease_update(ready_jobs: CTE, values: dict[str, Any]):
    returned = (*jobs.c, ready_jobs.c.position.label(_POSITION))
    statement = update(jobs).where(jobs.c.id == ready_jobs.c.id).values(values).returning(*returned)
    return statement.execution_options(**{INDEX_ORDER_OPTION: True})


_POSITION = "lease_position"


def _in_lease_order(rows: list[dict[str, Any]]) -> list[Job]:
    """PostgreSQL: the leased jobs (rows' columns by name) by their position in the lease."""
    leased = []
    for columns in sorted(rows, key=lambda columns: columns[_POSITION]):
        del columns[_POSITION]
        leased.append(job_from_columns(columns))
    return leased


@functools.lru_cache(maxsize=64)
def _within_budget(ready_jobs: CTE) -> CTE:
    """PostgreSQL: of the ready (locked) rows, in lease order, those whose payloads fit in
    :max_bytes together; the first always, so one large job is never stuck."""
    sized = (
        select(jobs.c.id, ready_jobs.c.position, _payload_bytes("postgresql"))
        .join_from(ready_jobs, jobs, jobs.c.id == ready_jobs.c.id)
        .subquery("sized")
    )
    ranked = select(
        sized.c.id,
        sized.c.position,
        func.sum(sized.c.size).over(order_by=sized.c.position).label("running"),
    ).subquery("ranked_by_size")
    within = or_(ranked.c.running <= bindparam("max_bytes"), ranked.c.position == 1)
    return select(ranked.c.id, ranked.c.position).where(within).cte("within_budget")


def _ids_within_budget(conn: Connection, ids: list[str], max_bytes: int | None) -> list[str]:
    """SQLite: the first of `ids` (in lease order) whose payloads fit in max_bytes together;
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


def _partition_ready(conn: Connection, partition, params: dict[str, Any], limit: int) -> list[ready.Candidate]:
    """SQLite: one partition's best ready jobs, up to `limit`, one priority level per
    statement from its top (delayed jobs of a higher priority are stepped over)."""
    top, below, at_level = ready.level_walk()
    params = params | {"walk_tenant": partition.tenant, "walk_queue": partition.queue}
    offered: list[ready.Candidate] = []
    level = conn.execute(top, params).scalar()
    while level is not None:
        rows = conn.execute(at_level, params | {"priority": level, "max_jobs": limit - len(offered)})
        offered += [ready.Candidate(partition.tenant, partition.position, *row) for row in rows]
        if len(offered) >= limit:
            break  # no probe for the next level
        level = conn.execute(below, params | {"below": level}).scalar()
    return offered
