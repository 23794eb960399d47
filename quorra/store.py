"""The job store: every SQL statement Quorra runs lives here, one public method per
protocol verb (enqueue, lease_jobs, extend_lease, ack, nack, release, cancel, retry,
reap_expired_leases, prune, ...).

Every transition is one guarded UPDATE (``WHERE id = :id AND status IN (...)``, plus the
lease id for a worker's verbs); zero rows raises a distinct error, never a silent
success. The state rules come from ``quorra.jobs``. PostgreSQL leases with
``FOR UPDATE SKIP LOCKED``; SQLite runs the same statements inside ``BEGIN IMMEDIATE``
(see ``quorra.db``).

Time: on PostgreSQL the database clock (``now()``), so every host agrees; on SQLite,
embedded on one host, the process clock. Methods that depend on time take an optional
``now`` so tests move time instead of sleeping.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, literal, select, tuple_, union_all, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE, Select

from quorra.db import make_engine
from quorra.errors import DatabaseUnavailable, IllegalTransition, InvalidArgument, JobNotFound, StaleLease
from quorra.jobs import (
    CANCELLABLE,
    HOLDING_LEASE,
    LEASABLE,
    RETRYABLE,
    Job,
    JobSpec,
    JobStatus,
    backoff_seconds,
    check_portable_json,
    parse_job_id,
    status_after_failure,
)
from quorra.schema import UTCDateTime, jobs

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 8000
MAX_LIST_LIMIT = 500
LEASE_EXPIRED = "lease expired"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class QueueCount:
    queue: str
    status: str
    count: int


class _Clock:
    """'now' for one transaction: the database clock on PostgreSQL, the process clock
    on SQLite, or the fixed time a caller passed."""

    def __init__(self, dialect: str, now: datetime | None):
        self.fixed = now if now is not None else (utcnow() if dialect == "sqlite" else None)

    def now(self) -> ColumnElement:
        return self.after(0)

    def after(self, seconds: float) -> ColumnElement:
        if self.fixed is None:
            return func.now() + timedelta(seconds=seconds) if seconds else func.now()
        return literal(self.fixed + timedelta(seconds=seconds), UTCDateTime)


class Store:
    """Jobs in one SQL database. Thread-safe: each call takes its own connection."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def from_url(cls, url: str, **engine_options: Any) -> Store:
        return cls(make_engine(url, **engine_options))

    def close(self) -> None:
        self.engine.dispose()

    # -- submitting -------------------------------------------------------------------

    def enqueue(self, spec: JobSpec, *, now: datetime | None = None) -> Job:
        return self.enqueue_many([spec], now=now)[0]

    def enqueue_many(self, specs: Sequence[JobSpec], *, now: datetime | None = None) -> list[Job]:
        """Insert all the jobs in one transaction: all are created or none."""
        if not specs:
            return []
        with self._transaction() as conn:
            clock = self._clock(now)
            rows = [self._new_row(spec, clock) for spec in specs]
            created = conn.execute(insert(jobs).values(rows).returning(*jobs.c)).all()
        by_id = {str(uuid.UUID(str(row.id))): row for row in created}
        result = [_to_job(by_id[row["id"]]) for row in rows]
        for job in result:
            _log_transition("job enqueued", "job.enqueued", job)
        return result

    @staticmethod
    def _new_row(spec: JobSpec, clock: _Clock) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "type": spec.type,
            "queue": spec.queue,
            "payload": spec.payload,
            "priority": spec.priority,
            "status": JobStatus.PENDING.value,
            "attempts": 0,
            "max_retries": spec.max_retries,
            "run_at": clock.after(spec.delay_seconds),
            "created_at": clock.now(),
            "updated_at": clock.now(),
        }

    # -- reading ----------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        with self._transaction() as conn:
            return _to_job(self._fetch(conn, job_id))

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | str | None = None,
        type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Newest first, `limit` at a time; pass `next_cursor` back for the next page."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        query = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
        if queue is not None:
            query = query.where(jobs.c.queue == queue)
        if status is not None:
            query = query.where(jobs.c.status == _status(status).value)
        if type is not None:
            query = query.where(jobs.c.type == type)
        if cursor is not None:
            created_at, last_id = _decode_cursor(cursor)
            after = tuple_(literal(created_at, UTCDateTime), literal(last_id, jobs.c.id.type))
            query = query.where(tuple_(jobs.c.created_at, jobs.c.id) < after)
        with self._transaction() as conn:
            rows = conn.execute(query).all()
        page = [_to_job(row) for row in rows[:limit]]
        next_cursor = _encode_cursor(page[-1]) if len(rows) > limit else None
        return JobPage(page, next_cursor)

    def queue_counts(self) -> list[QueueCount]:
        """How many jobs each queue holds in each status (GoQuorra's /v1/queues)."""
        query = (
            select(jobs.c.queue, jobs.c.status, func.count())
            .group_by(jobs.c.queue, jobs.c.status)
            .order_by(jobs.c.queue, jobs.c.status)
        )
        with self._transaction() as conn:
            return [QueueCount(q, s, n) for q, s, n in conn.execute(query)]

    def oldest_ready_at(self, *, now: datetime | None = None) -> dict[str, datetime]:
        """Per queue, the run_at of the job that has waited longest for a worker."""
        clock = self._clock(now)
        query = (
            select(jobs.c.queue, func.min(jobs.c.run_at))
            .where(_status_in(LEASABLE), jobs.c.run_at <= clock.now())
            .group_by(jobs.c.queue)
        )
        with self._transaction() as conn:
            return dict(conn.execute(query).all())

    def queues_due_between(self, after: datetime, *, now: datetime | None = None) -> list[str]:
        """Queues with a waiting job whose run_at fell in (after, now]: the ones to wake."""
        clock = self._clock(now)
        query = (
            select(jobs.c.queue)
            .where(
                _status_in(LEASABLE),
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

    # -- the worker's verbs -------------------------------------------------------------

    def lease_jobs(
        self,
        queues: Sequence[str],
        worker_id: str,
        max_jobs: int,
        ttl_seconds: float,
        *,
        now: datetime | None = None,
    ) -> list[Job]:
        """Lease up to `max_jobs` ready jobs of `queues`, best first; each gets its own
        new lease_id and one more attempt."""
        if not queues or max_jobs < 1 or ttl_seconds <= 0:
            raise InvalidArgument("lease needs at least one queue, max_jobs >= 1 and a positive ttl")
        queues = list(dict.fromkeys(queues))  # each queue once: one index scan each
        with self._transaction() as conn:
            clock = self._clock(now)
            if self.dialect == "postgresql":
                rows = self._lease_skip_locked(conn, clock, queues, worker_id, max_jobs, ttl_seconds)
            else:
                rows = self._lease_one_by_one(conn, clock, queues, worker_id, max_jobs, ttl_seconds)
        leased = sorted((_to_job(row) for row in rows), key=lambda j: (-j.priority, j.run_at, j.id))
        for job in leased:
            _log_transition("job leased", "job.leased", job, worker_id=worker_id)
        return leased

    def _ready_ids(self, clock: _Clock, queues: list[str], max_jobs: int):
        """PostgreSQL: the ready jobs to lease, locked, best first, as one CTE and its
        parameters. See _ready_cte."""
        return _ready_cte(len(queues), clock.fixed is not None), _ready_params(clock, queues, max_jobs)

    def _ready_ids_level_by_level(self, conn, clock: _Clock, queues: list[str], max_jobs: int) -> list[str]:
        """SQLite: the same walk as _ready_cte, one priority level per statement."""
        top, below, at_level = _level_walk(len(queues))
        params = _ready_params(clock, queues, max_jobs)
        ids: list[str] = []
        level = conn.execute(top, params).scalar()
        while level is not None and len(ids) < max_jobs:
            ids += conn.execute(at_level, params | {"priority": level, "max_jobs": max_jobs - len(ids)}).scalars()
            level = conn.execute(below, params | {"below": level}).scalar()
        return ids

    def _lease_values(self, clock: _Clock, worker_id: str, ttl_seconds: float) -> dict[str, Any]:
        return {
            "status": JobStatus.LEASED.value,
            "leased_by": worker_id,
            "attempts": jobs.c.attempts + 1,
            "leased_at": clock.now(),
            "lease_expires_at": clock.after(ttl_seconds),
            "updated_at": clock.now(),
        }

    def _lease_skip_locked(self, conn, clock, queues, worker_id, max_jobs, ttl_seconds):
        # The CTE form: LIMIT inside IN (SELECT ... SKIP LOCKED) may lock more rows than asked.
        ready, params = self._ready_ids(clock, queues, max_jobs)
        values = self._lease_values(clock, worker_id, ttl_seconds) | {"lease_id": func.gen_random_uuid()}
        statement = update(jobs).where(jobs.c.id == ready.c.id).values(values).returning(*jobs.c)
        return conn.execute(statement, params).all()

    def _lease_one_by_one(self, conn, clock, queues, worker_id, max_jobs, ttl_seconds):
        # SQLite: BEGIN IMMEDIATE already holds the only write lock, so nobody races us.
        values = self._lease_values(clock, worker_id, ttl_seconds)
        rows = []
        for job_id in self._ready_ids_level_by_level(conn, clock, queues, max_jobs):
            statement = update(jobs).where(jobs.c.id == job_id).values(values | {"lease_id": str(uuid.uuid4())})
            rows.append(conn.execute(statement.returning(*jobs.c)).one())
        return rows

    def extend_lease(self, job_id: str, lease_id: str, ttl_seconds: float, *, now: datetime | None = None) -> Job:
        """Heartbeat: push the lease's expiry to now + ttl; a leased job becomes processing."""
        if ttl_seconds <= 0:
            raise InvalidArgument("ttl_seconds must be positive")
        with self._transaction() as conn:
            clock = self._clock(now)
            values = {
                "status": JobStatus.PROCESSING.value,
                "lease_expires_at": clock.after(ttl_seconds),
                "updated_at": clock.now(),
            }
            job = self._update_held_lease(conn, clock, job_id, lease_id, values)
        _log_transition("lease extended", "lease.extended", job, level=logging.DEBUG)
        return job

    def ack(self, job_id: str, lease_id: str, result: Any = None, *, now: datetime | None = None) -> Job:
        """The attempt succeeded: the job is done, with the handler's result if any."""
        _check_result(result)
        with self._transaction() as conn:
            clock = self._clock(now)
            values = {
                "status": JobStatus.SUCCEEDED.value,
                "result": result,
                "lease_expires_at": None,
                "finished_at": clock.now(),
                "updated_at": clock.now(),
            }
            job = self._update_held_lease(conn, clock, job_id, lease_id, values)
        _log_transition("job succeeded", "job.succeeded", job)
        return job

    def nack(self, job_id: str, lease_id: str, error: str, *, now: datetime | None = None) -> Job:
        """The attempt failed: retry after the backoff, or dead when out of retries."""
        with self._transaction() as conn:
            clock = self._clock(now)
            held = self._held_lease(conn, clock, job_id, lease_id)
            job = self._fail_attempt(conn, clock, held, error)
        _log_failed_attempt(job)
        return job

    def release(self, job_id: str, lease_id: str) -> Job:
        """Hand back a lease that never reached its worker: the job is ready again and the
        attempt is not counted."""
        job_id, lease_id = _lease_ids(job_id, lease_id)
        with self._transaction() as conn:
            clock = self._clock(None)
            statement = (
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_id == lease_id, jobs.c.status == JobStatus.LEASED.value)
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
                raise self._why_not_held(conn, job_id)
        job = _to_job(row)
        _log_transition("lease released", "lease.released", job)
        return job

    # -- a person's verbs -----------------------------------------------------------------

    def cancel(self, job_id: str, *, now: datetime | None = None) -> Job:
        """Cancel a job that has not finished; a worker holding it can no longer ack."""
        with self._transaction() as conn:
            clock = self._clock(now)
            values = {
                "status": JobStatus.CANCELLED.value,
                "lease_expires_at": None,
                "finished_at": clock.now(),
                "updated_at": clock.now(),
            }
            job = self._transition(conn, job_id, CANCELLABLE, values, verb="cancel")
        _log_transition("job cancelled", "job.cancelled", job)
        return job

    def retry(self, job_id: str, *, now: datetime | None = None) -> Job:
        """Put a dead, failed or cancelled job back in line now, with its retries renewed."""
        with self._transaction() as conn:
            clock = self._clock(now)
            values = {
                "status": JobStatus.PENDING.value,
                "attempts": 0,
                "run_at": clock.now(),
                "lease_id": None,
                "leased_by": None,
                "leased_at": None,
                "lease_expires_at": None,
                "finished_at": None,
                "updated_at": clock.now(),
            }
            job = self._transition(conn, job_id, RETRYABLE, values, verb="retry")
        _log_transition("job retried", "job.retried", job)
        return job

    # -- the scheduler's verbs --------------------------------------------------------------

    def reap_expired_leases(self, *, now: datetime | None = None, limit: int = 500) -> list[Job]:
        """Leases past their expiry count as failed attempts ('lease expired'): the job is
        retried with backoff or dead, exactly as a nack would do."""
        with self._transaction() as conn:
            clock = self._clock(now)
            query = (
                select(jobs)
                .where(_status_in(HOLDING_LEASE), jobs.c.lease_expires_at <= clock.now())
                .order_by(jobs.c.lease_expires_at)
                .limit(limit)
            )
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            expired = conn.execute(query).all()
            reaped = [self._fail_attempt(conn, clock, row, LEASE_EXPIRED) for row in expired]
        for job in reaped:
            _log_failed_attempt(job)
        return reaped

    def prune(self, finished_before: datetime, *, limit: int = 500) -> int:
        """Delete up to `limit` succeeded or cancelled jobs that finished before the given
        time; dead jobs stay until a person retries them. Small batches, short locks."""
        doomed = (
            select(jobs.c.id)
            .where(
                jobs.c.status.in_([JobStatus.SUCCEEDED.value, JobStatus.CANCELLED.value]),
                jobs.c.finished_at < literal(finished_before, UTCDateTime),
            )
            .limit(limit)
        )
        if self.dialect == "postgresql":
            doomed = doomed.with_for_update(skip_locked=True)
        with self._transaction() as conn:
            deleted = conn.execute(delete(jobs).where(jobs.c.id.in_(doomed.scalar_subquery()))).rowcount
        if deleted:
            logger.info("jobs pruned", extra={"event": "jobs.pruned", "count": deleted})
        return deleted

    # -- helpers -----------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction; driver errors that mean 'database unreachable' become
        DatabaseUnavailable, so the edges answer 503/UNAVAILABLE, not a traceback."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            reason = str(getattr(exc, "orig", exc))[:500]
            logger.warning("database unavailable", extra={"event": "database.unavailable", "error": reason})
            raise DatabaseUnavailable() from exc

    def _clock(self, now: datetime | None) -> _Clock:
        return _Clock(self.dialect, now)

    def _fetch(self, conn: Connection, job_id: str, *, for_update: bool = False):
        canonical = parse_job_id(job_id)
        if canonical is None:
            raise JobNotFound(f"no job has the id {job_id!r}")
        query = select(jobs).where(jobs.c.id == canonical)
        if for_update and self.dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).one_or_none()
        if row is None:
            raise JobNotFound(f"no job has the id {job_id!r}")
        return row

    def _lease_guard(self, clock: _Clock, job_id: str, lease_id: str) -> list[ColumnElement]:
        return [
            jobs.c.id == job_id,
            jobs.c.lease_id == lease_id,
            _status_in(HOLDING_LEASE),
            jobs.c.lease_expires_at > clock.now(),
        ]

    def _update_held_lease(self, conn, clock, job_id, lease_id, values) -> Job:
        job_id, lease_id = _lease_ids(job_id, lease_id)
        statement = update(jobs).where(*self._lease_guard(clock, job_id, lease_id)).values(values)
        row = conn.execute(statement.returning(*jobs.c)).one_or_none()
        if row is None:
            raise self._why_not_held(conn, job_id)
        return _to_job(row)

    def _held_lease(self, conn, clock, job_id, lease_id):
        job_id, lease_id = _lease_ids(job_id, lease_id)
        query = select(jobs).where(*self._lease_guard(clock, job_id, lease_id))
        if self.dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).one_or_none()
        if row is None:
            raise self._why_not_held(conn, job_id)
        return row

    def _why_not_held(self, conn, job_id: str) -> Exception:
        row = self._fetch(conn, job_id)  # raises JobNotFound
        if row.status in _values(HOLDING_LEASE):
            return StaleLease(f"job {job_id} is held under another lease, or this one expired")
        return StaleLease(f"job {job_id} is {row.status}; its lease is no longer held")

    def _fail_attempt(self, conn, clock: _Clock, row, error: str) -> Job:
        """Settle a held lease as a failed attempt, under the same guard as ack."""
        status = status_after_failure(row.attempts, row.max_retries)
        values: dict[str, Any] = {
            "status": status.value,
            # PostgreSQL text cannot hold NUL; SQLite can: store the same on both.
            "last_error": (error or "failed").replace("\x00", "\ufffd")[:MAX_ERROR_CHARS],
            "lease_expires_at": None,
            "updated_at": clock.now(),
        }
        if status is JobStatus.FAILED:
            values["run_at"] = clock.after(backoff_seconds(row.attempts))
        else:
            values["finished_at"] = clock.now()
        guard = [jobs.c.id == row.id, jobs.c.lease_id == row.lease_id, _status_in(HOLDING_LEASE)]
        updated = conn.execute(update(jobs).where(*guard).values(values).returning(*jobs.c)).one_or_none()
        if updated is None:  # cannot happen while we hold the row lock / write lock
            raise StaleLease(f"job {row.id} changed while it was being failed")
        return _to_job(updated)

    def _transition(self, conn, job_id: str, allowed, values: dict[str, Any], *, verb: str) -> Job:
        canonical = parse_job_id(job_id)
        if canonical is None:
            raise JobNotFound(f"no job has the id {job_id!r}")
        statement = update(jobs).where(jobs.c.id == canonical, _status_in(allowed)).values(values)
        row = conn.execute(statement.returning(*jobs.c)).one_or_none()
        if row is None:
            current = self._fetch(conn, canonical)
            raise IllegalTransition(f"cannot {verb} a job that is {current.status}")
        return _to_job(row)


def _values(statuses) -> list[str]:
    return sorted(s.value for s in statuses)


def _status_in(statuses) -> ColumnElement:
    """`status IN ('failed', 'pending')` with the values inline: SQLite uses a partial index
    only when the query's terms match its WHERE, and a bound parameter never does."""
    return jobs.c.status.in_(bindparam(None, _values(statuses), literal_execute=True))


# The lease's ready-jobs query, built once per number of queues (and per kind of clock):
# the queue names, the level, the batch size and a fixed `now` are bound parameters.


def _ready_params(clock: _Clock, queues: list[str], max_jobs: int) -> dict[str, Any]:
    params: dict[str, Any] = {f"queue_{n}": queue for n, queue in enumerate(queues)} | {"max_jobs": max_jobs}
    return params | ({"now": clock.fixed} if clock.fixed is not None else {})


@functools.lru_cache(maxsize=64)
def _ready_cte(queue_count: int, fixed_now: bool) -> CTE:
    """Priority levels are walked from the top (a recursive CTE of index probes, so delayed
    jobs of a higher priority are stepped over, not scanned); at each level every queue
    gives its first ready jobs (an index range scan under SKIP LOCKED, so up to max_jobs
    per queue are locked), merged by run_at, id; the walk stops at max_jobs."""
    levels = _top_level(queue_count, None).cte("levels", recursive=True)
    below = select(_top_level(queue_count, levels.c.priority).scalar_subquery())
    levels = levels.union_all(below.where(levels.c.priority.is_not(None)))
    now = bindparam("now", type_=UTCDateTime) if fixed_now else func.now()
    at_level = _ready_at_level(queue_count, levels.c.priority, now, lock=True).lateral("at_level")
    ready = select(at_level.c.id).select_from(levels.join(at_level, literal(True))).limit(bindparam("max_jobs"))
    return ready.cte("ready").prefix_with("MATERIALIZED")  # computed once, never re-run per row


@functools.lru_cache(maxsize=64)
def _level_walk(queue_count: int) -> tuple[Select, Select, Select]:
    """SQLite's walk, a statement per step: the top level, the next level below, the ready
    jobs of one level."""
    now = bindparam("now", type_=UTCDateTime)
    at_level = _ready_at_level(queue_count, bindparam("priority"), now, lock=False)
    return _top_level(queue_count, None), _top_level(queue_count, bindparam("below")), at_level


def _top_level(queue_count: int, below) -> Select:
    """The highest priority any queue holds among waiting jobs (ready or delayed), below
    `below` if given: one probe of ix_jobs_ready per queue."""
    probes = []
    for n in range(queue_count):
        probe = select(jobs.c.priority).where(jobs.c.queue == bindparam(f"queue_{n}"), _status_in(LEASABLE))
        if below is not None:
            probe = probe.where(jobs.c.priority < below)
        probe = probe.order_by(jobs.c.priority.desc()).limit(1).correlate_except(jobs)
        probes.append(select(probe.scalar_subquery().label("priority")))
    return select(func.max(union_all(*probes).subquery().c.priority).label("priority"))


def _ready_at_level(queue_count: int, priority, now, *, lock: bool) -> Select:
    """The first ready jobs of one priority, by run_at then id: a range scan of
    ix_jobs_ready per queue, merged."""
    branches = []
    for n in range(queue_count):
        branch = (
            select(jobs.c.id, jobs.c.run_at)
            .where(jobs.c.queue == bindparam(f"queue_{n}"), _status_in(LEASABLE), jobs.c.priority == priority)
            .where(jobs.c.run_at <= now)
            .order_by(jobs.c.run_at, jobs.c.id)
            .limit(bindparam("max_jobs"))
            .correlate_except(jobs)
        )
        branch = branch.with_for_update(skip_locked=True) if lock else branch
        branches.append(select(branch.subquery()))
    merged = union_all(*branches).subquery()
    return select(merged.c.id).order_by(merged.c.run_at, merged.c.id).limit(bindparam("max_jobs"))


def _status(status: JobStatus | str) -> JobStatus:
    try:
        return JobStatus(status)
    except ValueError:
        raise InvalidArgument(f"unknown status {status!r}") from None


def _check_result(result: Any) -> None:
    """Refuse a result one backend would store differently (see jobs.check_portable_json)."""
    try:
        check_portable_json(result)
    except ValueError as exc:
        raise InvalidArgument(f"the result cannot be stored: {exc}") from None


def _lease_ids(job_id: str, lease_id: str) -> tuple[str, str]:
    canonical_job = parse_job_id(job_id)
    if canonical_job is None:
        raise JobNotFound(f"no job has the id {job_id!r}")
    canonical_lease = parse_job_id(lease_id)
    if canonical_lease is None:
        raise StaleLease(f"{lease_id!r} is not a lease id")
    return canonical_job, canonical_lease


def _to_job(row) -> Job:
    data = row._asdict()
    data["id"] = str(uuid.UUID(str(data["id"])))
    if data["lease_id"] is not None:
        data["lease_id"] = str(uuid.UUID(str(data["lease_id"])))
    data["status"] = JobStatus(data["status"])
    return Job(**data)


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, job_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        when = datetime.fromisoformat(created_at)
        canonical = parse_job_id(job_id)
        if canonical is None or when.tzinfo is None:
            raise ValueError
        return when, canonical
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("cursor is not one this server returned") from None


def _log_failed_attempt(job: Job) -> None:
    """Logged once the transaction committed: a process killed before its commit must not
    leave a 'lease.expired' line for a reap that was rolled back (and redone by another)."""
    event = "lease.expired" if job.last_error == LEASE_EXPIRED else f"job.{job.status.value}"
    _log_transition("job attempt failed", event, job, error=job.last_error)


def _log_transition(message: str, event: str, job: Job, *, level: int = logging.INFO, **extra: Any) -> None:
    logger.log(
        level,
        message,
        extra={
            "event": event,
            "job_id": job.id,
            "queue": job.queue,
            "job_type": job.type,
            "status": job.status.value,
            "attempt": job.attempts,
            **({"worker_id": job.leased_by} if job.leased_by else {}),  # the worker that holds or held it
            **extra,
        },
    )
