"""What every part of the store shares: the value types its verbs return, the clock a
transaction decides by, the engine and its transactions, the lease guard, and the SQL
form of a failed attempt (quorra.jobs' rule)."""

from __future__ import annotations

import enum
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Self

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE, Select

from quorra.access import ALL_TENANTS, DEFAULT_TENANT
from quorra.db import autocommitted, make_engine
from quorra.errors import DatabaseUnavailable, InvalidArgument, JobNotFound, StaleLease
from quorra.jobs import (
    BACKOFF_CAPPED_FROM,
    CANONICAL_UUID,
    HOLDING_LEASE,
    STATUS_BITS,
    Job,
    JobStatus,
    backoff_seconds,
    parse_job_id,
    retries_remain,
)
from quorra.schema import UTCDateTime, jobs
from quorra.workflows import Workflow

logger = logging.getLogger("quorra.store")  # one logger for the whole store

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
    tenant: str = DEFAULT_TENANT


@dataclass
class Effects:
    """What a verb changed besides the jobs it was given, filled in by the store when the
    caller passes one: dependants released (pending), cancelled with a failed parent or
    revived (blocked again), and workflows whose last job just finished. The manager reads
    it for their metrics, wake-ups and events."""

    dependants: list[Job] = field(default_factory=list)
    workflows: list[Workflow] = field(default_factory=list)

    def add(self, dependants: list[Job], workflows: list[Workflow]) -> None:
        self.dependants += dependants
        self.workflows += workflows


@dataclass(frozen=True)
class Settlement:
    """One settle of a held lease in a batch: an ack (`success`, with its result) or a nack
    (with its error)."""

    job_id: str
    lease_id: str
    success: bool
    result: Any = None
    error: str = "failed"


class Outcome(str, enum.Enum):
    """What a submission did."""

    CREATED = "created"  # a new job
    REPLAYED = "replayed"  # its idempotency key was seen with the same job: that job
    DUPLICATE = "duplicate"  # a job with its unique key holds the slot: that job


@dataclass(frozen=True)
class Submitted:
    """One submitted job and what the submission did."""

    job: Job
    outcome: Outcome

    @property
    def created(self) -> bool:
        return self.outcome is Outcome.CREATED


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


class Clock:
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


class StoreBase:
    """Jobs in one SQL database: the engine, transactions and the guards every verb shares.
    Thread-safe: each call takes its own connection."""

    # False: a lease commits without waiting for the WAL flush (QUORRA_DURABLE_LEASES; see
    # _one_statement_verb). Set by from_url, or on the instance.
    durable_leases = False

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def from_url(cls, url: str, *, durable_leases: bool = False, **engine_options: Any) -> Self:
        store = cls(make_engine(url, **engine_options))
        store.durable_leases = durable_leases
        return store

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction; driver errors that mean 'database unreachable' become
        DatabaseUnavailable, so the edges answer 503/UNAVAILABLE, not a traceback."""
        with self._translated_errors(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _one_statement(self, *, durable: bool = True) -> Iterator[Connection]:
        """A connection for exactly one statement, run outside any transaction (see
        quorra.db.autocommitted): one round trip instead of three on PostgreSQL."""
        with self._translated_errors(), autocommitted(self.engine, durable=durable) as conn:
            yield conn

    def _one_statement_verb(self) -> AbstractContextManager[Connection]:
        """For a verb whose only write is one statement on PostgreSQL (lease): that statement
        in autocommit, 1 round trip instead of 3 (BEGIN, it, COMMIT), which the worker waits
        for; on SQLite a transaction, whose BEGIN IMMEDIATE serialises the writers. Reads
        after it (a dependant's parents' outcomes) see their own snapshot. Not for settle,
        whose dependants are released in the same transaction.

        Unless `durable_leases`, the lease does not wait for its WAL flush: the fsync was most
        of a lease's time on a busy disk, and the worker waits for it. Losing a lease in a
        database crash is what the queue survives anyway (at-least-once): the job is back
        to what it was before the lease and runs again, and the worker's settle of the lost
        lease is refused as stale. A durable commit after it (a settle, an extend) flushes it
        too, since the WAL is written in order. (A lease under limits runs in a transaction of
        several statements, and commits durably.)"""
        if self.dialect == "postgresql":
            return self._one_statement(durable=self.durable_leases)
        return self._transaction()

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            reason = str(getattr(exc, "orig", exc))[:500]
            logger.warning("database unavailable", extra={"event": "database.unavailable", "error": reason})
            raise DatabaseUnavailable() from exc

    def _clock(self, now: datetime | None) -> Clock:
        return Clock(self.dialect, now)

    def _fetch(self, conn: Connection, job_id: str, *, tenant: str, for_update: bool = False):
        """The job's row, if it is `tenant`'s: another tenant's job is not found, exactly as
        a missing one (no existence leak)."""
        canonical = parse_job_id(job_id)
        if canonical is None:
            raise JobNotFound(f"no job has the id {job_id!r}")
        query = _SELECT_JOB_FOR_UPDATE if for_update and self.dialect == "postgresql" else SELECT_JOB
        row = conn.execute(query, {"job_id": canonical}).one_or_none()
        if row is None or not is_tenants(row.tenant, tenant):
            raise JobNotFound(f"no job has the id {job_id!r}")
        return row

    def _lease_guard(
        self, clock: Clock, job_id: str, lease_id: str, worker_id: str | None = None, tenant: str = DEFAULT_TENANT
    ) -> list[ColumnElement]:
        guard = [
            jobs.c.id == job_id,
            jobs.c.lease_id == lease_id,
            status_in(HOLDING_LEASE),
            jobs.c.lease_expires_at > clock.now(),
            *of_tenant(jobs, tenant),
        ]
        if worker_id is not None:
            guard.append(jobs.c.leased_by == worker_id)
        return guard

    def _update_held_lease(
        self, conn, clock, job_id, lease_id, values, worker_id: str | None = None, *, tenant: str
    ) -> Job:
        job_id, lease_id = lease_ids(job_id, lease_id)
        statement = update(jobs).where(*self._lease_guard(clock, job_id, lease_id, worker_id, tenant)).values(values)
        row = conn.execute(statement.returning(*jobs.c)).one_or_none()
        if row is None:
            raise self._why_not_held(conn, job_id, tenant)
        return to_job(row)

    def _why_not_held(self, conn, job_id: str, tenant: str) -> Exception:
        row = self._fetch(conn, job_id, tenant=tenant)  # raises JobNotFound
        if row.status in status_values(HOLDING_LEASE):
            return StaleLease(f"job {job_id} is held under another lease, or this one expired")
        return StaleLease(f"job {job_id} is {row.status}; its lease is no longer held")


# Built once: a statement object is compiled once and its cache key computed once.
SELECT_JOB = select(jobs).where(jobs.c.id == bindparam("job_id"))
_SELECT_JOB_FOR_UPDATE = SELECT_JOB.with_for_update()


def of_tenant(table, tenant: str) -> list[ColumnElement]:
    """The terms choosing `tenant`'s rows of `table`: none for ALL_TENANTS (a fleet worker
    settling what it holds, whatever the tenant)."""
    return [] if tenant == ALL_TENANTS else [table.c.tenant == tenant]


def is_tenants(owner: str, tenant: str) -> bool:
    """A row of `owner` is visible to `tenant` (ALL_TENANTS sees every tenant's)."""
    return tenant in (owner, ALL_TENANTS)


def failure_values(clock: Clock) -> dict[str, Any]:
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


def _retry_at(clock: Clock) -> ColumnElement:
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


def unique_slot_held(table) -> ColumnElement:
    """schema.UNIQUE_SLOT_HELD over `table` (an alias of jobs): the job holds its unique slot."""
    bit = case({status.value: bit for status, bit in STATUS_BITS.items()}, value=table.c.status, else_=0)
    return and_(table.c.unique_key.is_not(None), table.c.unique_states.op("&")(bit) != 0)


@dataclass(frozen=True)
class JobFilter:
    """The jobs a bulk action (retry, delete) applies to: one tenant's queue, one status, and
    optionally a type, a created_at range [created_from, created_to) and a text the payload
    contains (as the job list's search finds it)."""

    queue: str
    status: JobStatus
    type: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    payload_contains: str | None = None
    tenant: str = DEFAULT_TENANT  # whose queue (a queue is named within its tenant)


# List filters beyond the stored statuses: a pending job is SCHEDULED until its run_at, READY after.
SCHEDULED, READY = "scheduled", "ready"
WAITING_STATES = (SCHEDULED, READY)


def job_filters(
    clock: Clock,
    *,
    status: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> list[ColumnElement]:
    """The terms shared by listing and bulk actions that need more than an equality: the
    scheduled and ready views of pending, and a created_at range [from, to)."""
    where: list[ColumnElement] = []
    if status == SCHEDULED:
        where += [jobs.c.status == JobStatus.PENDING.value, jobs.c.run_at > clock.now()]
    elif status == READY:
        where += [jobs.c.status == JobStatus.PENDING.value, jobs.c.run_at <= clock.now()]
    if created_from is not None:
        where.append(jobs.c.created_at >= literal(created_from, UTCDateTime))
    if created_to is not None:
        where.append(jobs.c.created_at < literal(created_to, UTCDateTime))
    return where


def payload_contains(table, text: str, dialect: str) -> ColumnElement:
    """`table`'s payload holds `text`, as it appears inside a JSON string of the stored
    payload: quotes and backslashes escaped, and on SQLite (stored by json.dumps) non-ASCII
    as \\uXXXX. Case-insensitive; % and _ are literal."""
    text = json.dumps(text, ensure_ascii=dialect == "sqlite")[1:-1]
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    payload = cast(table.c.payload, Text)
    if dialect == "postgresql":
        return payload.ilike(pattern, escape="\\")
    return payload.like(pattern, escape="\\")  # SQLite's LIKE ignores ASCII case


def with_effects(statement, *effects: Callable[[CTE], Insert]) -> Select:
    """PostgreSQL: `statement` (an UPDATE of jobs RETURNING every column) as one statement
    that also runs each effect's INSERT on the rows it changed (attempts ended, webhook
    deliveries: data-modifying CTEs must sit at the top level, so they are composed here, not
    nested); its rows are the UPDATE's."""
    changed = statement.cte("changed")
    inserts = [effect(changed).cte(f"effect_{n}") for n, effect in enumerate(effects)]
    return select(*(changed.c[column.name] for column in jobs.c)).add_cte(*inserts)


def status_values(statuses) -> list[str]:
    return sorted(s.value for s in statuses)


def status_in(statuses) -> ColumnElement:
    """`status IN ('failed', 'pending')` with the values inline: SQLite uses a partial index
    only when the query's terms match its WHERE, and a bound parameter never does."""
    return jobs.c.status.in_(bindparam(None, status_values(statuses), literal_execute=True))


def lease_ids(job_id: str, lease_id: str) -> tuple[str, str]:
    canonical_job = parse_job_id(job_id)
    if canonical_job is None:
        raise JobNotFound(f"no job has the id {job_id!r}")
    canonical_lease = parse_job_id(lease_id)
    if canonical_lease is None:
        raise StaleLease(f"{lease_id!r} is not a lease id")
    return canonical_job, canonical_lease


def _canonical_uuid(value: Any) -> str:
    """A UUID column's value as canonical text. PostgreSQL's already is: a match is 5 times
    cheaper than a parse (to_job runs per job on every lease and settle)."""
    text = str(value)
    return text if CANONICAL_UUID.fullmatch(text) else str(uuid.UUID(text))


def to_job(row) -> Job:
    return job_from_columns(row._asdict())


def job_from_columns(data: dict[str, Any]) -> Job:
    """A Job from a row's columns (a dict this takes over)."""
    data["id"] = _canonical_uuid(data["id"])
    for name in ("lease_id", "schedule_id"):
        if data[name] is not None:
            data[name] = _canonical_uuid(data[name])
    data["status"] = JobStatus(data["status"])
    return Job.from_columns(data)


def log_failed_attempt(job: Job) -> None:
    """Logged once the transaction committed: a process killed before its commit must not
    leave a 'lease.expired' line for a reap that was rolled back (and redone by another)."""
    event = "lease.expired" if job.last_error == LEASE_EXPIRED else f"job.{job.status.value}"
    log_transition("job attempt failed", event, job, error=job.last_error)


def log_transition(message: str, event: str, job: Job, *, level: int = logging.INFO, **extra: Any) -> None:
    if not logger.isEnabledFor(level):  # per job on the hot path: skip building the fields
        return
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
