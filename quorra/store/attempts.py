"""Attempt history: a row per attempt that ended, written in the statement or transaction
that ended it (settle, reap, cancel), and read back per job.

On PostgreSQL the row is written by the ending UPDATE itself (a data-modifying CTE: no
extra round trip); on SQLite by one INSERT of the batch in the same BEGIN IMMEDIATE
transaction. The attempt in flight is not in the table: it is the job row (lease_id,
leased_by, leased_at), so leasing writes nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, insert, literal, select
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE, Select

from quorra.access import DEFAULT_TENANT
from quorra.jobs import AttemptOutcome, Job, JobStatus
from quorra.schema import job_attempts
from quorra.store.base import StoreBase, to_job


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job. `outcome` and `finished_at` are None while it runs."""

    attempt: int
    worker_id: str | None
    leased_at: datetime
    finished_at: datetime | None
    outcome: AttemptOutcome | None
    error: str | None
    lease_expires_at: datetime | None = None  # the attempt in flight only


class Attempts(StoreBase):
    """Read a job's attempts."""

    def job_attempts(self, job_id: str, *, tenant: str = DEFAULT_TENANT) -> tuple[Job, list[Attempt]]:
        """`tenant`'s job and every attempt it made, oldest first, the one in flight last."""
        with self._transaction() as conn:
            job = to_job(self._fetch(conn, job_id, tenant=tenant))
            rows = conn.execute(_ATTEMPTS_OF, {"job_id": job.id}).all()
        attempts = [_attempt(row) for row in rows]
        return job, attempts + in_flight(job)


_ATTEMPTS_OF = (
    select(job_attempts)
    .where(job_attempts.c.job_id == bindparam("job_id", type_=job_attempts.c.job_id.type))
    .order_by(job_attempts.c.leased_at, job_attempts.c.attempt)
)


def in_flight(job: Job) -> list[Attempt]:
    if job.status not in (JobStatus.LEASED, JobStatus.PROCESSING) or job.leased_at is None:
        return []
    return [Attempt(job.attempts, job.leased_by, job.leased_at, None, None, None, job.lease_expires_at)]


def _attempt(row) -> Attempt:
    return Attempt(row.attempt, row.worker_id, row.leased_at, row.finished_at, AttemptOutcome(row.outcome), row.error)


# -- writing -------------------------------------------------------------------------------------


def settled_outcome(status) -> ColumnElement:
    """An ack or nack as SQL over the settled row: succeeded, else failed."""
    return case(
        (status == JobStatus.SUCCEEDED.value, AttemptOutcome.SUCCEEDED.value), else_=AttemptOutcome.FAILED.value
    )


def insert_attempts(ended: CTE, outcome: AttemptOutcome | None = None) -> Insert:
    """PostgreSQL: the INSERT recording each attempt that `ended` (the rows of an UPDATE ...
    RETURNING every job column, ending held leases) ended, for one statement with that UPDATE
    (store.base.with_effects). With no `outcome`, each is the settle's (succeeded or failed,
    by the new status)."""
    return insert(job_attempts).from_select(list(_ATTEMPT_COLUMNS), _attempt_select(ended, outcome))


_ATTEMPT_COLUMNS = (
    "lease_id",
    "job_id",
    "attempt",
    "tenant",
    "queue",
    "worker_id",
    "leased_at",
    "finished_at",
    "outcome",
    "error",
)


def _attempt_select(ended: CTE, outcome: AttemptOutcome | None) -> Select:
    if outcome is None:
        outcome_sql = settled_outcome(ended.c.status)
        error = case((ended.c.status == JobStatus.SUCCEEDED.value, None), else_=ended.c.last_error)
    else:
        outcome_sql = literal(outcome.value)
        error = ended.c.last_error if outcome is AttemptOutcome.EXPIRED else literal(None)
    return select(
        ended.c.lease_id,
        ended.c.id,
        ended.c.attempts,
        ended.c.tenant,
        ended.c.queue,
        ended.c.leased_by,
        ended.c.leased_at,
        ended.c.updated_at,
        outcome_sql,
        error,
    )


def record_attempts(conn: Connection, ended: Sequence[Job], outcome: AttemptOutcome | None = None) -> None:
    """SQLite (or any single job): one INSERT for the attempts these jobs just ended."""
    rows = [attempt_row(job, outcome) for job in ended if job.lease_id is not None and job.leased_at is not None]
    if rows:
        conn.execute(insert(job_attempts), rows)


def attempt_row(job: Job, outcome: AttemptOutcome | None = None) -> dict[str, Any]:
    if outcome is None:
        outcome = AttemptOutcome.SUCCEEDED if job.status is JobStatus.SUCCEEDED else AttemptOutcome.FAILED
    failed = outcome in (AttemptOutcome.FAILED, AttemptOutcome.EXPIRED)
    return {
        "lease_id": job.lease_id,
        "job_id": job.id,
        "attempt": job.attempts,
        "tenant": job.tenant,
        "queue": job.queue,
        "worker_id": job.leased_by,
        "leased_at": job.leased_at,
        "finished_at": job.updated_at,
        "outcome": outcome.value,
        "error": job.last_error if failed else None,
    }
