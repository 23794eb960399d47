"""Figures for the dashboard's overview, read from the database so that they survive
restarts: attempts that ended per queue and minute (from job_attempts, a range of
ix_job_attempts_finished read by itself)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, func, literal, select

from quorra.access import DEFAULT_TENANT
from quorra.jobs import AttemptOutcome
from quorra.schema import UTCDateTime, job_attempts
from quorra.store.base import StoreBase, of_tenant

_FAILED = (AttemptOutcome.FAILED.value, AttemptOutcome.EXPIRED.value)


@dataclass(frozen=True)
class MinuteCount:
    """Attempts of a queue that ended in one minute: succeeded, and failed (nacked or expired)."""

    queue: str
    minute: datetime
    succeeded: int
    failed: int


class Stats(StoreBase):
    def throughput(
        self, since: datetime, *, queue: str | None = None, tenant: str = DEFAULT_TENANT
    ) -> list[MinuteCount]:
        """Per queue of `tenant` and minute, from the minute of `since` on: the attempts
        that succeeded and those that failed (cancelled ones are left out). Minutes without
        any are absent."""
        minute = self._minute(job_attempts.c.finished_at)
        outcome = job_attempts.c.outcome
        query = (
            select(
                job_attempts.c.queue,
                minute,
                func.sum(case((outcome == AttemptOutcome.SUCCEEDED.value, 1), else_=0)),
                func.sum(case((outcome.in_(_FAILED), 1), else_=0)),
            )
            .where(job_attempts.c.finished_at >= literal(since.replace(second=0, microsecond=0), UTCDateTime))
            .where(*of_tenant(job_attempts, tenant))
            .group_by(job_attempts.c.queue, minute)
            .order_by(job_attempts.c.queue, minute)
        )
        if queue is not None:
            query = query.where(job_attempts.c.queue == queue)
        with self._transaction() as conn:
            return [MinuteCount(q, _utc(m), int(s), int(f)) for q, m, s, f in conn.execute(query) if s or f]

    def _minute(self, column):
        if self.dialect == "postgresql":
            return func.date_trunc("minute", column).label("minute")
        return func.strftime("%Y-%m-%d %H:%M:00", column).label("minute")  # SQLite keeps UTC text


def _utc(minute: datetime | str) -> datetime:
    if isinstance(minute, str):  # SQLite
        return datetime.fromisoformat(minute).replace(tzinfo=UTC)
    return minute.astimezone(UTC) if minute.tzinfo else minute.replace(tzinfo=UTC)
