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

import enum
import functools
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    LargeBinary,
    Text,
    Uuid,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE, Select

from quorra.db import make_engine
from quorra.errors import DatabaseUnavailable, IllegalTransition, InvalidArgument, JobNotFound, StaleLease
from quorra.jobs import (
    BACKOFF_CAPPED_FROM,
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
    retries_remain,
    status_after_failure,
)
from quorra.schema import UTCDateTime, jobs

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 8000
MAX_LIST_LIMIT = 500
LEASE_EXPIRED = "lease expired"


def utcnow() -> datetime:
    return datetime.now(UTC)


class ListPosition(NamedTuple):
    """Where a page of the newest-first list ended: the keyset (created_at, id) of its last job."""

    created_at: datetime
    id: str


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: ListPosition | None  # None on the last page


@dataclass(frozen=True)
class QueueCount:
    queue: str
    status: str
    count: int


@dataclass(frozen=True)
class Settlement:
    """One settle of a held lease in a batch: an ack (`success`, with its result) or a nack
    (with its error)."""

    job_id: str
    lease_id: str
    success: bool
    result: Any = None
    error: str = "failed"


class SettleOutcome(str, enum.Enum):
    SETTLED = "settled"  # the job is succeeded, failed (retry scheduled) or dead
    STALE_LEASE = "stale_lease"  # the lease is no longer held by this worker
    NOT_FOUND = "not_found"  # no job has this id
    INVALID = "invalid"  # this settlement cannot be applied as given (e.g. its result)


@dataclass(frozen=True)
class SettleResult:
    """What became of one settlement; `job` is the settled job when SETTLED."""

    job_id: str
    outcome: SettleOutcome
    job: Job | None = None
    error: str | None = None

    def job_or_raise(self) -> Job:
        """The settled job, or the error a single ack/nack raises for this outcome."""
        if self.job is not None:
            return self.job
        error = {
            SettleOutcome.NOT_FOUND: JobNotFound,
            SettleOutcome.INVALID: InvalidArgument,
        }
        raise error.get(self.outcome, StaleLease)(self.error)


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

    def expiry_after(self, seconds: float) -> ColumnElement:
        """A lease expiry: from the clock as the statement runs (clock_timestamp()), not the
        transaction's start (now()), so time spent before the UPDATE is not lost from it."""
        if self.fixed is None:
            return func.clock_timestamp() + timedelta(seconds=seconds)
        return self.after(seconds)


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
            rows = [_new_row(spec, clock) for spec in specs]
            # executemany of one prebuilt INSERT: SQLAlchemy's insertmanyvalues batches the rows
            # into multi-row INSERTs and compiles once per shape (insert().values(list) never caches).
            created = conn.execute(_INSERT_AT_DB_TIME if clock.fixed is None else _INSERT, rows).all()
        by_id = {str(uuid.UUID(str(row.id))): row for row in created}
        result = [_to_job(by_id[row["id"]]) for row in rows]
        for job in result:
            _log_transition("job enqueued", "job.enqueued", job)
        return result

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
        cursor: ListPosition | None = None,
        bodies: bool = True,
        max_bytes: int | None = None,
    ) -> JobPage:
        """Newest first, `limit` at a time; pass `next_cursor` back for the next page.

        Without `bodies`, payload and result are left out (None), and never read. With them,
        `max_bytes` bounds their total JSON size: the page ends early, after at least one job,
        before the job that would pass it (sizes are measured in the database first, so no
        more than a page's worth of bodies is ever read)."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        where = _list_filters(queue, status, type, cursor)
        with self._transaction() as conn:
            if bodies and max_bytes is not None:
                rows, next_cursor = self._list_within_bytes(conn, where, limit, max_bytes)
            else:
                rows, next_cursor = self._list_rows(conn, where, limit, bodies)
        return JobPage([_to_job(row) for row in rows], next_cursor)

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
        max_bytes: int | None = None,
        now: datetime | None = None,
    ) -> list[Job]:
        """Lease up to `max_jobs` ready jobs of `queues`, best first; each gets its own
        new lease_id and one more attempt. With `max_bytes`, the batch stops before the job
        whose payload would take it past that many bytes (the first job always comes)."""
        if not queues or max_jobs < 1 or ttl_seconds <= 0:
            raise InvalidArgument("lease needs at least one queue, max_jobs >= 1 and a positive ttl")
        queues = list(dict.fromkeys(queues))  # each queue once: one index scan each
        ask = (queues, worker_id, max_jobs, ttl_seconds, max_bytes)
        with self._transaction() as conn:
            clock = self._clock(now)
            if self.dialect == "postgresql":
                rows = self._lease_skip_locked(conn, clock, *ask)
            else:
                rows = self._lease_one_by_one(conn, clock, *ask)
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
            "lease_expires_at": clock.expiry_after(ttl_seconds),
            "updated_at": clock.now(),
        }

    def _lease_skip_locked(self, conn, clock, queues, worker_id, max_jobs, ttl_seconds, max_bytes):
        # The CTE form: LIMIT inside IN (SELECT ... SKIP LOCKED) may lock more rows than asked.
        ready, params = self._ready_ids(clock, queues, max_jobs)
        if max_bytes is not None:
            ready, params = _within_budget(ready), params | {"max_bytes": max_bytes}
        values = self._lease_values(clock, worker_id, ttl_seconds) | {"lease_id": func.gen_random_uuid()}
        statement = update(jobs).where(jobs.c.id == ready.c.id).values(values).returning(*jobs.c)
        return conn.execute(statement, params).all()

    def _lease_one_by_one(self, conn, clock, queues, worker_id, max_jobs, ttl_seconds, max_bytes):
        # SQLite: BEGIN IMMEDIATE already holds the only write lock, so nobody races us.
        values = self._lease_values(clock, worker_id, ttl_seconds)
        rows = []
        ready = self._ready_ids_level_by_level(conn, clock, queues, max_jobs)
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
        now: datetime | None = None,
    ) -> Job:
        """Heartbeat: push the lease's expiry to now + ttl; a leased job becomes processing."""
        if ttl_seconds <= 0:
            raise InvalidArgument("ttl_seconds must be positive")
        with self._transaction() as conn:
            clock = self._clock(now)
            values = {
                "status": JobStatus.PROCESSING.value,
                "lease_expires_at": clock.expiry_after(ttl_seconds),
                "updated_at": clock.now(),
            }
            job = self._update_held_lease(conn, clock, job_id, lease_id, values, worker_id)
        _log_transition("lease extended", "lease.extended", job, level=logging.DEBUG)
        return job

    def ack(
        self,
        job_id: str,
        lease_id: str,
        result: Any = None,
        *,
        worker_id: str | None = None,
        now: datetime | None = None,
    ) -> Job:
        """The attempt succeeded: the job is done, with the handler's result if any."""
        _check_result(result)
        settlement = Settlement(job_id, lease_id, success=True, result=result)
        return self.settle_many([settlement], worker_id=worker_id, now=now)[0].job_or_raise()

    def nack(
        self,
        job_id: str,
        lease_id: str,
        error: str,
        *,
        worker_id: str | None = None,
        now: datetime | None = None,
    ) -> Job:
        """The attempt failed: retry after the backoff, or dead when out of retries."""
        settlement = Settlement(job_id, lease_id, success=False, error=error)
        return self.settle_many([settlement], worker_id=worker_id, now=now)[0].job_or_raise()

    def settle_many(
        self,
        settlements: Sequence[Settlement],
        *,
        worker_id: str | None = None,
        now: datetime | None = None,
    ) -> list[SettleResult]:
        """Acks and nacks of held leases in one transaction (one UPDATE on PostgreSQL), with
        one result per settlement, in order: a stale or unknown lease never fails its
        neighbours. With `worker_id`, a lease counts as held only by the worker it went to."""
        checked = _check_settlements(settlements)
        valid = [item for item in checked if isinstance(item, Settlement)]
        with self._transaction() as conn:
            clock = self._clock(now)
            settled = self._settle(conn, clock, valid, worker_id) if valid else {}
            unsettled = self._statuses(conn, [item.job_id for item in valid if item.job_id not in settled])
        results = [_settle_result(item, settled, unsettled) for item in checked]
        for result in results:
            if result.job is not None:
                _log_settled(result.job)
        return results

    def _settle(self, conn, clock, settlements: list[Settlement], worker_id: str | None) -> dict[str, Job]:
        if self.dialect == "postgresql":
            check_worker = worker_id is not None
            statement = (
                _SETTLE_AT_DB_TIME[check_worker] if clock.fixed is None else _settle_statement(clock, check_worker)
            )
            rows = conn.execute(statement, _settle_arrays(settlements) | {"worker_id": worker_id}).all()
            return {job.id: job for job in map(_to_job, rows)}
        settled = {}
        for item in settlements:  # SQLite: BEGIN IMMEDIATE holds the only write lock
            row = conn.execute(select(jobs).where(*self._lease_guard(clock, item.job_id, item.lease_id, worker_id)))
            held = row.one_or_none()
            if held is not None:
                settled[item.job_id] = self._settle_row(conn, clock, held, item)
        return settled

    def _settle_row(self, conn, clock: _Clock, row, item: Settlement) -> Job:
        if not item.success:
            return self._fail_attempt(conn, clock, row, item.error)
        values = {
            "status": JobStatus.SUCCEEDED.value,
            "result": item.result,
            "lease_expires_at": None,
            "finished_at": clock.now(),
            "updated_at": clock.now(),
        }
        guard = [
            jobs.c.id == row.id,
            jobs.c.lease_id == row.lease_id,
            _status_in(HOLDING_LEASE),
        ]
        return _to_job(conn.execute(update(jobs).where(*guard).values(values).returning(*jobs.c)).one())

    def _statuses(self, conn, job_ids: list[str]) -> dict[str, str]:
        """The status of each of these jobs that exists."""
        if not job_ids:
            return {}
        rows = conn.execute(select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_(job_ids))).all()
        return {str(uuid.UUID(str(job_id))): status for job_id, status in rows}

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
            rows = conn.execute(self._reap_statement(clock, limit)).all()
        reaped = sorted(map(_to_job, rows), key=lambda job: (job.updated_at, job.id))
        for job in reaped:
            _log_failed_attempt(job)
        return reaped

    def _reap_statement(self, clock: _Clock, limit: int):
        """One set-based UPDATE per batch: the oldest expired leases, failed as a nack would."""
        expired = (
            select(jobs.c.id)
            .where(_status_in(HOLDING_LEASE), jobs.c.lease_expires_at <= clock.now())
            .order_by(jobs.c.lease_expires_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":  # the CTE form, so LIMIT bounds the rows locked
            expired = expired.with_for_update(skip_locked=True).cte("expired")
            statement = update(jobs).where(jobs.c.id == expired.c.id)
        else:
            statement = update(jobs).where(jobs.c.id.in_(expired.scalar_subquery()))
        values = _failure_values(clock) | {"last_error": LEASE_EXPIRED}
        return statement.where(_status_in(HOLDING_LEASE)).values(values).returning(*jobs.c)

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

    def _lease_guard(
        self, clock: _Clock, job_id: str, lease_id: str, worker_id: str | None = None
    ) -> list[ColumnElement]:
        guard = [
            jobs.c.id == job_id,
            jobs.c.lease_id == lease_id,
            _status_in(HOLDING_LEASE),
            jobs.c.lease_expires_at > clock.now(),
        ]
        if worker_id is not None:
            guard.append(jobs.c.leased_by == worker_id)
        return guard

    def _update_held_lease(self, conn, clock, job_id, lease_id, values, worker_id: str | None = None) -> Job:
        job_id, lease_id = _lease_ids(job_id, lease_id)
        statement = update(jobs).where(*self._lease_guard(clock, job_id, lease_id, worker_id)).values(values)
        row = conn.execute(statement.returning(*jobs.c)).one_or_none()
        if row is None:
            raise self._why_not_held(conn, job_id)
        return _to_job(row)

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
            "last_error": _error_text(error),
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


# -- prebuilt statements ------------------------------------------------------------------------
# Built once: SQLAlchemy memoizes a statement object's cache key, so the hot verbs neither
# rebuild their statement nor recompute its key per call (issue #9: 8.7 % of the gRPC profile).

_INSERT = insert(jobs).returning(*jobs.c)
_INSERT_AT_DB_TIME = (
    insert(jobs)
    .values(
        run_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("delay_seconds")),
        created_at=func.now(),
        updated_at=func.now(),
    )
    .returning(*jobs.c)
)


def _new_row(spec: JobSpec, clock: _Clock) -> dict[str, Any]:
    row = {
        "id": str(uuid.uuid4()),
        "type": spec.type,
        "queue": spec.queue,
        "payload": spec.payload,
        "priority": spec.priority,
        "status": JobStatus.PENDING.value,
        "attempts": 0,
        "max_retries": spec.max_retries,
    }
    if clock.fixed is None:  # PostgreSQL time: now() + delay, computed by the database
        return row | {"delay_seconds": spec.delay_seconds}
    created_at = clock.fixed
    return row | {
        "run_at": created_at + timedelta(seconds=spec.delay_seconds),
        "created_at": created_at,
        "updated_at": created_at,
    }


# -- settling many leases ------------------------------------------------------------------------

_SETTLE_COLUMNS = (
    ("job_id", Uuid(as_uuid=False)),
    ("lease_id", Uuid(as_uuid=False)),
    ("success", Boolean),
)


def _error_text(error: str | None) -> str:
    # PostgreSQL text cannot hold NUL; SQLite can: store the same on both.
    return (error or "failed").replace("\x00", "\ufffd")[:MAX_ERROR_CHARS]


def _check_settlements(
    settlements: Sequence[Settlement],
) -> list[Settlement | SettleResult]:
    """Each settlement in canonical form, or its result when it can be decided without the
    database (a malformed id, a result no backend can store, a job named twice)."""
    seen: set[str] = set()
    checked: list[Settlement | SettleResult] = []
    for item in settlements:
        checked.append(_check_settlement(item, seen))
    return checked


def _check_settlement(item: Settlement, seen: set[str]) -> Settlement | SettleResult:
    job_id, lease_id = parse_job_id(item.job_id), parse_job_id(item.lease_id)
    if job_id is None:
        return SettleResult(
            item.job_id,
            SettleOutcome.NOT_FOUND,
            error=f"no job has the id {item.job_id!r}",
        )
    if lease_id is None:
        return SettleResult(
            job_id,
            SettleOutcome.STALE_LEASE,
            error=f"{item.lease_id!r} is not a lease id",
        )
    if job_id in seen:
        return SettleResult(
            job_id,
            SettleOutcome.INVALID,
            error="this job is settled more than once in the batch",
        )
    seen.add(job_id)
    if item.success:
        try:
            _check_result(item.result)
        except InvalidArgument as exc:
            return SettleResult(job_id, SettleOutcome.INVALID, error=exc.message)
    return Settlement(
        job_id,
        lease_id,
        item.success,
        item.result if item.success else None,
        _error_text(item.error),
    )


def _settle_result(item: Settlement | SettleResult, settled: dict[str, Job], statuses: dict[str, str]) -> SettleResult:
    if isinstance(item, SettleResult):
        return item
    if item.job_id in settled:
        return SettleResult(item.job_id, SettleOutcome.SETTLED, job=settled[item.job_id])
    if item.job_id not in statuses:
        return SettleResult(
            item.job_id,
            SettleOutcome.NOT_FOUND,
            error=f"no job has the id {item.job_id!r}",
        )
    return SettleResult(
        item.job_id,
        SettleOutcome.STALE_LEASE,
        error=_stale_message(item.job_id, statuses[item.job_id]),
    )


def _stale_message(job_id: str, status: str) -> str:
    if status in _values(HOLDING_LEASE):
        return f"job {job_id} is held under another lease or by another worker, or this lease expired"
    return f"job {job_id} is {status}; its lease is no longer held"


def _settle_arrays(settlements: list[Settlement]) -> dict[str, list[Any]]:
    """The batch as one array per column, unnested by the statement: one statement shape
    whatever the batch size, so SQLAlchemy and PostgreSQL compile and plan it once."""
    return {
        "job_ids": [item.job_id for item in settlements],
        "lease_ids": [item.lease_id for item in settlements],
        "successes": [item.success for item in settlements],
        "results": [json.dumps(item.result) if item.success else None for item in settlements],
        "errors": [None if item.success else item.error for item in settlements],
    }


def _settle_statement(clock: _Clock, check_worker: bool):
    """UPDATE jobs ... FROM unnest(:job_ids, :lease_ids, ...) under the lease guard per row.
    A nack's next status and backoff follow quorra.jobs (retries_remain, backoff_seconds)."""
    given = (
        func.unnest(
            bindparam("job_ids", type_=ARRAY(Text)),
            bindparam("lease_ids", type_=ARRAY(Text)),
            bindparam("successes", type_=ARRAY(Boolean)),
            bindparam("results", type_=ARRAY(Text)),
            bindparam("errors", type_=ARRAY(Text)),
        )
        .table_valued("job_id", "lease_id", "success", "result", "error")
        .render_derived(name="given")
    )
    success = given.c.success.is_(True)
    failure = _failure_values(clock)
    values = {
        "status": case((success, JobStatus.SUCCEEDED.value), else_=failure["status"]),
        "run_at": case((success, jobs.c.run_at), else_=failure["run_at"]),
        "result": case((success, cast(given.c.result, JSONB)), else_=jobs.c.result),
        "last_error": case((success, jobs.c.last_error), else_=given.c.error),
        "finished_at": case((success, clock.now()), else_=failure["finished_at"]),
        "lease_expires_at": None,
        "updated_at": clock.now(),
    }
    now = clock.now()
    guard = [
        jobs.c.id == cast(given.c.job_id, Uuid(as_uuid=False)),
        jobs.c.lease_id == cast(given.c.lease_id, Uuid(as_uuid=False)),
        _status_in(HOLDING_LEASE),
        jobs.c.lease_expires_at > now,
    ]
    if check_worker:
        guard.append(jobs.c.leased_by == bindparam("worker_id", type_=Text))
    return update(jobs).where(*guard).values(values).returning(*jobs.c)


def _payload_bytes(dialect: str) -> ColumnElement:
    """The size of a job's payload as JSON text, in bytes (about what a lease sends)."""
    if dialect == "postgresql":
        return func.octet_length(cast(jobs.c.payload, Text)).label("size")
    return func.length(cast(jobs.c.payload, LargeBinary)).label("size")  # SQLite: its UTF-8 bytes


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


def _failure_values(clock: _Clock) -> dict[str, Any]:
    """A failed attempt (nack or expiry) as SQL over the row's own attempts: failed with a
    retry after the backoff while retries remain, else dead. The rule is quorra.jobs'."""
    retry = retries_remain(jobs.c.attempts, jobs.c.max_retries)
    return {
        "status": case((retry, JobStatus.FAILED.value), else_=JobStatus.DEAD.value),
        "run_at": case((retry, _retry_at(clock)), else_=jobs.c.run_at),
        "finished_at": case((retry, jobs.c.finished_at), else_=clock.now()),
        "lease_expires_at": None,
        "updated_at": clock.now(),
    }


def _retry_at(clock: _Clock) -> ColumnElement:
    """now + backoff_seconds(attempts), tabulated from the Python rule itself."""
    if clock.fixed is None:
        return func.now() + _backoff_interval(jobs.c.attempts)
    times = {n: clock.after(backoff_seconds(n)) for n in range(BACKOFF_CAPPED_FROM)}
    return case(times, value=jobs.c.attempts, else_=clock.after(backoff_seconds(BACKOFF_CAPPED_FROM)))


def _backoff_interval(attempts) -> ColumnElement:
    """backoff_seconds(attempts) as SQL, tabulated from the Python rule itself."""
    seconds = case(
        {n: backoff_seconds(n) for n in range(BACKOFF_CAPPED_FROM)},
        value=attempts,
        else_=backoff_seconds(BACKOFF_CAPPED_FROM),
    )
    return func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def _log_settled(job: Job) -> None:
    if job.status is JobStatus.SUCCEEDED:
        _log_transition("job succeeded", "job.succeeded", job)
    else:
        _log_failed_attempt(job)


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


_NEWEST_FIRST = (jobs.c.created_at.desc(), jobs.c.id.desc())
_BODIES = ("payload", "result")


def _list_filters(queue, status, type, cursor: ListPosition | None) -> list[ColumnElement]:
    where = []
    if queue is not None:
        where.append(jobs.c.queue == queue)
    if status is not None:
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


# Built last: they use the helpers above.
_SETTLE_AT_DB_TIME = {check: _settle_statement(_Clock("postgresql", None), check) for check in (False, True)}
