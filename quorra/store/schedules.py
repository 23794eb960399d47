"""Schedules: create, read, change, pause and delete them, and fire their due ticks.

Firing a tick is one transaction: a guarded UPDATE moves the schedule's next_run_at on
from the tick it expects (``WHERE id = :id AND next_run_at = :due``), and the job of the
tick is inserted with the schedule id and tick time, which a unique index keeps to one job
per tick. A leader that lost a race (or was replaced mid-tick) matches no row, or meets the
index, and its transaction is rolled back: each tick makes exactly one job.

A schedule belongs to a tenant, and its name is its handle within that tenant: every verb
by name takes the tenant, and another tenant's schedule is not found. The leader fires every
tenant's schedules; a tick's job is the schedule's tenant's."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy import exc as sa_exc

from quorra.access import DEFAULT_TENANT
from quorra.audit import AuditEntry
from quorra.errors import ScheduleExists, ScheduleNotFound
from quorra.jobs import Job, JobStatus
from quorra.schedules import MissedTicks, Schedule, ScheduleSpec, TickPlan, tick_after
from quorra.schema import jobs, schedules
from quorra.store.audit import record_audit
from quorra.store.base import StoreBase, log_transition, to_job, utcnow

MAX_SCHEDULES_LISTED = 1000


class FiredTick(NamedTuple):
    """What fire_tick did: `carried_out` False when another scheduler had carried the tick
    out first (nothing changed); `job` the tick's job, if its plan made one."""

    carried_out: bool
    job: Job | None = None


class Schedules(StoreBase):
    """Schedules as data; the leader fires them through fire_tick."""

    def create_schedule(
        self,
        spec: ScheduleSpec,
        *,
        tenant: str = DEFAULT_TENANT,
        audit: AuditEntry | None = None,
        now: datetime | None = None,
    ) -> Schedule:
        values = {"id": str(uuid.uuid4()), "tenant": tenant}
        try:
            with self._transaction() as conn:
                now = self._now(conn, now)
                row = conn.execute(
                    insert(schedules).values(**values, **_columns(spec, now)).returning(*schedules.c)
                ).one()
                record_audit(conn, self._clock(now), audit and audit.with_details(schedule_id=str(row.id)))
        except sa_exc.IntegrityError:
            raise ScheduleExists(f"a schedule named {spec.name!r} exists already") from None
        return to_schedule(row)

    def get_schedule(self, name: str, *, tenant: str = DEFAULT_TENANT) -> Schedule:
        with self._transaction() as conn:
            row = conn.execute(_with_last_job_status().where(*_named(name, tenant))).one_or_none()
        if row is None:
            raise ScheduleNotFound(f"no schedule is named {name!r}")
        return to_schedule(row)

    def list_schedules(self, *, tenant: str = DEFAULT_TENANT) -> list[Schedule]:
        """The tenant's schedules, by name (written by people: a few hundred at most)."""
        query = _with_last_job_status().where(schedules.c.tenant == tenant)
        query = query.order_by(schedules.c.name).limit(MAX_SCHEDULES_LISTED)
        with self._transaction() as conn:
            return [to_schedule(row) for row in conn.execute(query)]

    def update_schedule(
        self,
        name: str,
        changes: dict[str, Any],
        *,
        tenant: str = DEFAULT_TENANT,
        audit: AuditEntry | None = None,
        now: datetime | None = None,
    ) -> Schedule:
        """Apply a PATCH body. A new timing (cron, interval, timezone) or a resume starts
        the schedule again from its next tick after now; other changes keep next_run_at."""
        return self._rewrite(name, tenant, lambda current: current.spec().changed(changes), now, audit)

    def _rewrite(
        self,
        name: str,
        tenant: str,
        new_spec: Callable[[Schedule], ScheduleSpec],
        now: datetime | None,
        audit: AuditEntry | None = None,
    ) -> Schedule:
        with self._transaction() as conn:
            now = self._now(conn, now)
            current = self._locked(conn, name, tenant)
            spec = new_spec(current)
            values = _columns(spec, now, keep_next_run_at=_keeps_next_run_at(current, spec))
            values.pop("created_at")
            row = conn.execute(
                update(schedules).where(schedules.c.id == current.id).values(values).returning(*schedules.c)
            ).one()
            record_audit(conn, self._clock(now), audit)
        return to_schedule(row)

    def set_schedule_paused(
        self,
        name: str,
        is_paused: bool,
        *,
        tenant: str = DEFAULT_TENANT,
        audit: AuditEntry | None = None,
        now: datetime | None = None,
    ) -> Schedule:
        return self.update_schedule(name, {"is_paused": is_paused}, tenant=tenant, audit=audit, now=now)

    def delete_schedule(self, name: str, *, tenant: str = DEFAULT_TENANT, audit: AuditEntry | None = None) -> None:
        """Its jobs stay (they keep the schedule id, as a record of where they came from)."""
        with self._transaction() as conn:
            if conn.execute(delete(schedules).where(*_named(name, tenant))).rowcount == 0:
                raise ScheduleNotFound(f"no schedule is named {name!r}")
            record_audit(conn, self._clock(None), audit)

    def sync_schedules(
        self, specs: Sequence[ScheduleSpec], *, tenant: str = DEFAULT_TENANT, now: datetime | None = None
    ) -> list[Schedule]:
        """Create each schedule of `tenant`, or update the one of that name to match it (the
        QUORRA_SCHEDULES_FILE at start, the default tenant's). Schedules not named are left alone."""
        synced = []
        for spec in specs:
            try:
                synced.append(self.create_schedule(spec, tenant=tenant, now=now))
            except ScheduleExists:
                synced.append(self._rewrite(spec.name, tenant, lambda _current, spec=spec: spec, now))
        return synced

    # -- firing -----------------------------------------------------------------------------------

    def due_schedules(self, *, now: datetime | None = None, limit: int = 100) -> list[Schedule]:
        """Unpaused schedules of every tenant whose next tick is due, the most overdue first."""
        with self._transaction() as conn:
            now = self._now(conn, now)
            rows = conn.execute(
                select(schedules)
                .where(schedules.c.next_run_at <= now, schedules.c.is_paused.is_(False))
                .order_by(schedules.c.next_run_at)
                .limit(limit)
            ).all()
        return [to_schedule(row) for row in rows]

    def fire_tick(self, schedule: Schedule, plan: TickPlan, *, now: datetime | None = None) -> FiredTick:
        """Carry out `plan` for the schedule, in one transaction: move next_run_at on (only
        from plan.due_at) and insert the tick's job, if it has one."""
        job_id = str(uuid.uuid4()) if plan.fire_for is not None else None
        try:
            with self._transaction() as conn:
                now = self._now(conn, now)
                if not self._advance(conn, schedule, plan, job_id, now):
                    return FiredTick(False)
                if job_id is None:
                    return FiredTick(True)
                row = conn.execute(
                    insert(jobs).values(_job_row(schedule, plan.fire_for, job_id, now)).returning(*jobs.c)
                ).one()
        except sa_exc.IntegrityError:
            return FiredTick(False)  # the tick's job exists: fired by another scheduler
        job = to_job(row)
        log_transition("job enqueued", "job.enqueued", job, schedule=schedule.name)
        return FiredTick(True, job)

    def _advance(self, conn: Connection, schedule: Schedule, plan: TickPlan, job_id: str | None, now) -> bool:
        values: dict[str, Any] = {"next_run_at": plan.next_run_at, "updated_at": now}
        if job_id is not None:
            values |= {"last_run_at": plan.fire_for, "last_job_id": job_id}
        guarded = update(schedules).where(
            schedules.c.id == schedule.id,
            schedules.c.next_run_at == plan.due_at,
            schedules.c.is_paused.is_(False),
        )
        return conn.execute(guarded.values(values)).rowcount == 1

    # -- shared -----------------------------------------------------------------------------------

    def _now(self, conn: Connection, now: datetime | None) -> datetime:
        if now is not None:
            return now
        if self.dialect == "sqlite":
            return utcnow()
        return conn.execute(select(func.now())).scalar_one()

    def _locked(self, conn: Connection, name: str, tenant: str) -> Schedule:
        query = select(schedules).where(*_named(name, tenant))
        if self.dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).one_or_none()
        if row is None:
            raise ScheduleNotFound(f"no schedule is named {name!r}")
        return to_schedule(row)


def _named(name: str, tenant: str) -> list:
    """The schedule `name` of `tenant` (names are unique within a tenant)."""
    return [schedules.c.tenant == tenant, schedules.c.name == name]


def _keeps_next_run_at(current: Schedule, spec: ScheduleSpec) -> datetime | None:
    """The next_run_at an update keeps, or None when it must start afresh from now."""
    if current.spec().timing_differs(spec) or (current.is_paused and not spec.is_paused):
        return None
    return current.next_run_at


def _columns(spec: ScheduleSpec, now: datetime, *, keep_next_run_at: datetime | None = None) -> dict[str, Any]:
    job = spec.job
    return {
        "name": spec.name,
        "cron": spec.cron,
        "interval_seconds": spec.interval_seconds,
        "timezone": spec.timezone,
        "job_type": job.type,
        "queue": job.queue,
        "payload": job.payload,
        "priority": job.priority,
        "max_retries": job.max_retries,
        "timeout_seconds": job.timeout_seconds,
        "missed_ticks": spec.missed_ticks.value,
        "is_paused": spec.is_paused,
        "next_run_at": keep_next_run_at or tick_after(spec, now),
        "created_at": now,
        "updated_at": now,
    }


def _job_row(schedule: Schedule, tick: datetime, job_id: str, now: datetime) -> dict[str, Any]:
    return {
        "id": job_id,
        "tenant": schedule.tenant,  # a tick's job is its schedule's tenant's
        "type": schedule.job_type,
        "queue": schedule.queue,
        "payload": schedule.payload,
        "priority": schedule.priority,
        "status": JobStatus.PENDING.value,
        "attempts": 0,
        "max_retries": schedule.max_retries,
        "timeout_seconds": schedule.timeout_seconds,
        "schedule_id": schedule.id,
        "scheduled_for": tick,
        "run_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _with_last_job_status():
    joined = schedules.outerjoin(jobs, jobs.c.id == schedules.c.last_job_id)
    return select(*schedules.c, jobs.c.status.label("last_job_status")).select_from(joined)


def to_schedule(row) -> Schedule:
    data = row._asdict()
    for name in ("id", "last_job_id"):
        if data.get(name) is not None:
            data[name] = str(uuid.UUID(str(data[name])))
    data["missed_ticks"] = MissedTicks(data["missed_ticks"])
    data["is_paused"] = bool(data["is_paused"])
    return Schedule(**data)
