"""Reads: a job, keyset pages of jobs (bounded in bytes), counts per queue and status."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    LargeBinary,
    Text,
    cast,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.sql.elements import ColumnElement

from quorra.access import ALL_TENANTS, DEFAULT_TENANT
from quorra.errors import InvalidArgument, JobNotFound, WorkflowNotFound
from quorra.jobs import (
    LEASABLE,
    Job,
    JobStatus,
    parse_job_id,
)
from quorra.schema import UTCDateTime, jobs, workflows
from quorra.store.base import (
    MAX_LIST_LIMIT,
    SELECT_JOB,
    WAITING_STATES,
    JobPage,
    ListPosition,
    QueueCount,
    StoreBase,
    is_tenants,
    job_filters,
    job_from_columns,
    of_tenant,
    status_in,
    to_job,
    utcnow,
)
from quorra.store.base import payload_contains as payload_contains_term
from quorra.store.dependencies import links_of, to_workflow
from quorra.store.direct import DirectStatement
from quorra.workflows import Workflow, WorkflowStatus, workflow_status

_GET_JOB = DirectStatement(SELECT_JOB)


class Reading(StoreBase):
    """Reads: one job, pages of jobs, counts, and the clock."""

    def get_job(self, job_id: str, *, tenant: str = DEFAULT_TENANT) -> Job:
        """`tenant`'s job (another tenant's is JobNotFound, as a missing one): GET
        /v1/jobs/{id}, the REST API's most frequent read (see quorra.store.direct)."""
        canonical = parse_job_id(job_id)
        if canonical is None:
            raise JobNotFound(f"no job has the id {job_id!r}")
        with self._translated_errors():
            rows = _GET_JOB.rows(self.engine, {"job_id": canonical})
        job = job_from_columns(_GET_JOB.named(rows[0])) if rows else None
        if job is None or not is_tenants(job.tenant, tenant):
            raise JobNotFound(f"no job has the id {job_id!r}")
        return job

    def links(self, job_id: str) -> tuple[list[str], list[str]]:
        """The ids of a job's parents and of its dependants (all of its own tenant: a job
        depends only on its tenant's jobs)."""
        with self._transaction() as conn:
            return links_of(conn, job_id)

    def get_workflow(self, workflow_id: str, *, tenant: str = DEFAULT_TENANT) -> WorkflowView:
        """`tenant`'s workflow, the count of its jobs by status and its jobs (without
        bodies), by ref. Another tenant's is WorkflowNotFound, as a missing one."""
        canonical = parse_job_id(workflow_id)
        with self._transaction() as conn:
            row = (
                None
                if canonical is None
                else conn.execute(select(workflows).where(workflows.c.id == canonical)).one_or_none()
            )
            if row is None or not is_tenants(row.tenant, tenant):
                raise WorkflowNotFound(f"no workflow has the id {workflow_id!r}")
            columns = [_no_body(c) if c.name in _BODIES else c for c in jobs.c]
            members = conn.execute(
                select(*columns)
                .where(jobs.c.workflow_id == canonical)
                .order_by(jobs.c.created_at, jobs.c.ref, jobs.c.id)
            ).all()
        found = [to_job(member) for member in members]
        return WorkflowView(to_workflow(row), dict(Counter(job.status.value for job in found)), found)

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | str | None = None,
        type: str | None = None,
        limit: int = 50,
        cursor: ListPosition | None = None,
        bodies: bool = True,
        max_bytes: int | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        job_id: str | None = None,
        payload_contains: str | None = None,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
    ) -> JobPage:
        """`tenant`'s jobs newest first, `limit` at a time; pass `next_cursor` back for the
        next page (ix_jobs_tenant_created, or ix_jobs_tenant_queue_status for a queue).

        Filters: queue, type, status (a JobStatus, or SCHEDULED: pending with run_at to come,
        or READY: pending and due), created in [created_from, created_to), the job's id, and
        a substring of the payload's JSON text (case-insensitive; it reads every payload the
        other filters leave, so pair it with a queue or a time range on big tables).

        Without `bodies`, payload and result are left out (None), and never read. With them,
        `max_bytes` bounds their total JSON size: the page ends early, after at least one job,
        before the job that would pass it (sizes are measured in the database first, so no
        more than a page's worth of bodies is ever read)."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        where = (
            of_tenant(jobs, tenant)
            + _list_filters(queue, status, type, cursor)
            + job_filters(self._clock(now), status=status, created_from=created_from, created_to=created_to)
        )
        if job_id is not None:
            where.append(jobs.c.id == _job_id(job_id))
        if payload_contains:
            where.append(payload_contains_term(jobs, payload_contains, self.dialect))
        with self._transaction() as conn:
            if bodies and max_bytes is not None:
                rows, next_cursor = self._list_within_bytes(conn, where, limit, max_bytes)
            else:
                rows, next_cursor = self._list_rows(conn, where, limit, bodies)
        return JobPage([to_job(row) for row in rows], next_cursor)

    def _list_rows(self, conn, where, limit: int, bodies: bool):
        columns = list(jobs.c) if bodies else [_no_body(c) if c.name in _BODIES else c for c in jobs.c]
        rows = conn.execute(select(*columns).where(*where).order_by(*_NEWEST_FIRST).limit(limit + 1)).all()
        return rows[:limit], _position(rows[limit - 1]) if len(rows) > limit else None

    def _list_within_bytes(self, conn, where, limit: int, max_bytes: int):
        keys_and_sizes = select(jobs.c.created_at, jobs.c.id, self._bodies_bytes())
        candidates = conn.execute(keys_and_sizes.where(*where).order_by(*_NEWEST_FIRST).limit(limit + 1)).all()
        chosen = _leading_within(candidates[:limit], max_bytes)
        ids = [candidate.id for candidate in chosen]
        rows = conn.execute(select(jobs).where(jobs.c.id.in_(ids)).order_by(*_NEWEST_FIRST)).all()
        # The cursor comes from the candidates: a chosen job pruned meanwhile cannot end the list early.
        return rows, _position(chosen[-1]) if len(chosen) < len(candidates) else None

    def _bodies_bytes(self) -> ColumnElement:
        """The JSON size of a job's payload plus its result, computed by the database."""
        if self.dialect == "postgresql":
            size = [func.octet_length(cast(jobs.c[name], Text)) for name in _BODIES]
        else:
            size = [func.length(cast(jobs.c[name], LargeBinary)) for name in _BODIES]
        return func.coalesce(size[0], 0) + func.coalesce(size[1], 0)

    def queue_counts(self, *, tenant: str = DEFAULT_TENANT) -> list[QueueCount]:
        """How many jobs each of `tenant`'s queues holds in each status (GoQuorra's
        /v1/queues); with ALL_TENANTS, of every tenant (the metrics' scrape)."""
        grouped = (jobs.c.tenant, jobs.c.queue, jobs.c.status)
        query = select(*grouped, func.count()).where(*of_tenant(jobs, tenant)).group_by(*grouped).order_by(*grouped)
        with self._transaction() as conn:
            return [QueueCount(q, s, n, t) for t, q, s, n in conn.execute(query)]

    def oldest_ready_at(self, *, tenant: str = DEFAULT_TENANT, now: datetime | None = None) -> dict[str, datetime]:
        """Per queue of `tenant`, the run_at of the job that has waited longest for a worker."""
        return {queue: ready_at for (_, queue), ready_at in self._oldest_ready(tenant, now).items()}

    def oldest_ready_by_tenant(self, *, now: datetime | None = None) -> dict[tuple[str, str], datetime]:
        """oldest_ready_at of every tenant's queues, by (tenant, queue) (the metrics' scrape)."""
        return self._oldest_ready(ALL_TENANTS, now)

    def _oldest_ready(self, tenant: str, now: datetime | None) -> dict[tuple[str, str], datetime]:
        clock = self._clock(now)
        query = (
            select(jobs.c.tenant, jobs.c.queue, func.min(jobs.c.run_at))
            .where(status_in(LEASABLE), jobs.c.run_at <= clock.now(), *of_tenant(jobs, tenant))
            .group_by(jobs.c.tenant, jobs.c.queue)
        )
        with self._transaction() as conn:
            return {(owner, queue): ready_at for owner, queue, ready_at in conn.execute(query)}

    def queues_due_between(self, after: datetime, *, now: datetime | None = None) -> list[str]:
        """Queues with a waiting job whose run_at fell in (after, now]: the ones to wake."""
        clock = self._clock(now)
        query = (
            select(jobs.c.queue)
            .where(
                status_in(LEASABLE),
                jobs.c.run_at > literal(after, UTCDateTime),
                jobs.c.run_at <= clock.now(),
            )
            .distinct()
        )
        with self._transaction() as conn:
            return list(conn.execute(query).scalars())

    def database_now(self) -> datetime:
        """The clock the store decides by (the database's on PostgreSQL)."""
        if self.dialect == "sqlite":
            return utcnow()
        with self._transaction() as conn:
            return conn.execute(select(func.now())).scalar_one()

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers."""
        with self._transaction() as conn:
            conn.execute(select(literal(1)))


@dataclass(frozen=True)
class WorkflowView:
    workflow: Workflow
    counts: dict[str, int]  # jobs by status
    jobs: list[Job]

    @property
    def status(self) -> WorkflowStatus:
        """The live status, from the jobs (the row's is the one recorded at completion)."""
        return workflow_status(self.counts)


def _status(status: JobStatus | str) -> JobStatus:
    try:
        return JobStatus(status)
    except ValueError:
        raise InvalidArgument(f"unknown status {status!r}") from None


def _job_id(text: str) -> str:
    canonical = parse_job_id(text)
    if canonical is None:
        raise InvalidArgument(f"{text!r} is not a job id")
    return canonical


_NEWEST_FIRST = (jobs.c.created_at.desc(), jobs.c.id.desc())


_BODIES = ("payload", "result")


def _list_filters(queue, status, type, cursor: ListPosition | None) -> list[ColumnElement]:
    where = []
    if queue is not None:
        where.append(jobs.c.queue == queue)
    if status is not None and status not in WAITING_STATES:
        where.append(jobs.c.status == _status(status).value)
    if type is not None:
        where.append(jobs.c.type == type)
    if cursor is not None:
        after = tuple_(literal(cursor.created_at, UTCDateTime), literal(cursor.id, jobs.c.id.type))
        where.append(tuple_(jobs.c.created_at, jobs.c.id) < after)
    return where


def _no_body(column) -> ColumnElement:
    return literal(None, column.type).label(column.name)


def _leading_within(candidates, max_bytes: int) -> list:
    """The leading (created_at, id, size) rows whose sizes fit in max_bytes together; the
    first one always does, so every page makes progress."""
    chosen, total = [], 0
    for candidate in candidates:
        total += candidate[2]
        if chosen and total > max_bytes:
            break
        chosen.append(candidate)
    return chosen


def _position(row) -> ListPosition:
    return ListPosition(row.created_at, str(uuid.UUID(str(row.id))))
