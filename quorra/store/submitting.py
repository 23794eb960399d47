"""Submitting jobs: one prebuilt INSERT run with executemany, so a batch of 1,000 is
compiled once per shape, never per request."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    bindparam,
    func,
    insert,
)

from quorra.jobs import (
    Job,
    JobSpec,
    JobStatus,
)
from quorra.schema import jobs
from quorra.store.base import (
    Clock,
    StoreBase,
    log_transition,
    to_job,
)


class Submitting(StoreBase):
    """enqueue: new jobs, all in one transaction."""

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
        result = [to_job(by_id[row["id"]]) for row in rows]
        for job in result:
            log_transition("job enqueued", "job.enqueued", job)
        return result


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


def _new_row(spec: JobSpec, clock: Clock) -> dict[str, Any]:
    row = {
        "id": str(uuid.uuid4()),
        "type": spec.type,
        "queue": spec.queue,
        "payload": spec.payload,
        "priority": spec.priority,
        "status": JobStatus.PENDING.value,
        "attempts": 0,
        "max_retries": spec.max_retries,
        "timeout_seconds": spec.timeout_seconds,
    }
    if clock.fixed is None:  # PostgreSQL time: now() + delay, computed by the database
        return row | {"delay_seconds": spec.delay_seconds}
    created_at = clock.fixed
    return row | {
        "run_at": created_at + timedelta(seconds=spec.delay_seconds),
        "created_at": created_at,
        "updated_at": created_at,
    }
