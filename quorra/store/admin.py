"""Verbs of people and of the scheduler: cancel, retry, reap expired leases, prune."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Select

from quorra.access import ALL_TENANTS, DEFAULT_TENANT
from quorra.audit import AuditEntry
from quorra.errors import IllegalTransition, InvalidArgument, JobNotFound
from quorra.jobs import (
    CANCELLABLE,
    HOLDING_LEASE,
    RETRYABLE,
    TERMINAL,
    AttemptOutcome,
    Job,
    JobStatus,
    ParentFailure,
    parse_job_id,
    readiness,
)
from quorra.schema import UTCDateTime, idempotency_keys, job_attempts, jobs
from quorra.schema import job_dependencies as edges
from quorra.store.attempts import insert_attempts, record_attempts
from quorra.store.audit import record_audit
from quorra.store.base import (
    LEASE_EXPIRED,
    Clock,
    Effects,
    JobFilter,
    StoreBase,
    failure_values,
    log_failed_attempt,
    log_transition,
    logger,
    of_tenant,
    payload_contains,
    status_in,
    status_values,
    to_job,
    unique_slot_held,
    with_effects,
)
from quorra.store.dependencies import (
    follow,
    log_dependants,
    parents_of,
    parents_retried,
    workflows_reopened,
)
from quorra.store.webhooks import enqueue_events, events_of

# The server's autovacuum setting, and the jobs table's autovacuum_enabled parameter as a
# boolean (NULL when the table leaves it to the server), read by PostgreSQL's own parser.
_AUTOVACUUM_SETTINGS = text(
    "SELECT current_setting('autovacuum'),"
    " (SELECT option_value::boolean FROM pg_options_to_table("
    "(SELECT reloptions FROM pg_class WHERE oid = 'jobs'::regclass)) WHERE option_name = 'autovacuum_enabled')"
)


class Admin(StoreBase):
    """A person's verbs (cancel, retry) and the scheduler's (reap expired leases, prune jobs
    and idempotency keys)."""

    def cancel(
        self,
        job_id: str,
        *,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
        effects: Effects | None = None,
        audit: AuditEntry | None = None,
    ) -> Job:
        """Cancel a job that has not finished; a worker holding it can no longer ack. Its
        dependants follow their on_parent_failure policy, in the same transaction; its attempt in flight, if any, ends as cancelled."""
        with self._transaction() as conn:
            clock = self._clock(now)
            values = {
                "status": JobStatus.CANCELLED.value,
                "lease_expires_at": None,
                "finished_at": clock.now(),
                "updated_at": clock.now(),
            }
            before = self._fetch(conn, job_id, tenant=tenant, for_update=True)  # raises JobNotFound
            job = self._transition(conn, before.id, CANCELLABLE, values, verb="cancel")
            enqueue_events(conn, clock, [job.id])
            if before.status in status_values(HOLDING_LEASE):
                record_attempts(conn, [job], AttemptOutcome.CANCELLED)
            dependants = follow(conn, clock, self.dialect, [job], effects)
            record_audit(conn, clock, audit)
        log_transition("job cancelled", "job.cancelled", job)
        log_dependants(dependants)
        return job

    def retry(
        self,
        job_id: str,
        *,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
        effects: Effects | None = None,
        audit: AuditEntry | None = None,
    ) -> Job:
        """Put a dead, failed or cancelled job back in line now, with its retries renewed.
        A unique job whose slot another job took meanwhile stays where it is (conflict).
        A cancelled dependant whose parents have not all succeeded goes back to blocked (a
        parent still dead or cancelled: conflict, retry that parent); the dependants this
        job's failure cancelled come back too."""
        try:
            job, dependants = self._retry(job_id, tenant, now, effects, audit)
        except sa_exc.IntegrityError:  # only ix_jobs_unique_key can refuse this UPDATE
            raise IllegalTransition(
                f"cannot retry job {job_id}: another job with its unique key holds the slot"
            ) from None
        log_transition("job retried", "job.retried", job)
        log_dependants(dependants)
        return job

    def _retry(
        self, job_id: str, tenant: str, now: datetime | None, effects: Effects | None, audit: AuditEntry | None
    ) -> tuple[Job, list[Job]]:
        with self._transaction() as conn:
            clock = self._clock(now)
            row = self._fetch(conn, job_id, tenant=tenant, for_update=True)  # raises JobNotFound
            values = requeued(clock) | self._waiting_for_parents(conn, row)
            job = self._transition(conn, row.id, RETRYABLE, values, verb="retry")
            record_audit(conn, clock, audit)
            return job, self._back_in_line(conn, clock, [job], effects)

    def _waiting_for_parents(self, conn, row) -> dict[str, Any]:
        """A cancelled dependant retried (its row, locked): blocked on its unmet parents, or
        refused while one of them is dead or cancelled. Any other job goes back to pending."""
        if row.pending_parents is None or row.status != JobStatus.CANCELLED.value:
            return {}
        job = to_job(row)
        ready = readiness(parents_of(conn, job), row.on_parent_failure or ParentFailure.CANCEL)
        if ready.failed_parent is not None:
            parent, status = ready.failed_parent
            raise IllegalTransition(
                f"cannot retry job {job.id}: its parent {parent} is {status.value}; retry that first"
            )
        return {
            "status": ready.status.value,
            "pending_parents": ready.unmet,
            "cancelled_by_parent": None,
        }

    def _back_in_line(self, conn, clock: Clock, retried: list[Job], effects: Effects | None) -> list[Job]:
        """Retried jobs: the dependants their failure cancelled come back, and their
        workflows run again."""
        dependants = parents_retried(conn, clock, retried)
        workflows_reopened(conn, [*retried, *dependants])
        if effects is not None:
            effects.add(dependants, [])
        return dependants

    def retry_dead(
        self,
        queue: str,
        *,
        type: str | None = None,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
        effects: Effects | None = None,
        audit: AuditEntry | None = None,
    ) -> dict[str, int]:
        """Put every dead job of `tenant`'s `queue` (of `type`, if given) back in line now,
        in one UPDATE; answers how many of each type were retried."""
        chosen = JobFilter(queue, JobStatus.DEAD, type, tenant=tenant)
        return self.retry_matching(chosen, now=now, effects=effects, audit=audit)

    def retry_matching(
        self,
        chosen: JobFilter,
        *,
        now: datetime | None = None,
        effects: Effects | None = None,
        audit: AuditEntry | None = None,
    ) -> dict[str, int]:
        """Put every job the filter chooses (dead, failed or cancelled) back in line now, in
        one UPDATE; answers how many of each type were retried."""
        if chosen.status not in RETRYABLE:
            raise InvalidArgument(f"only {', '.join(status_values(RETRYABLE))} jobs can be retried")
        with self._transaction() as conn:
            clock = self._clock(now)
            statement = (
                update(jobs)
                .where(*_matching(jobs, chosen, self.dialect), _unique_slot_free(chosen, self.dialect))
                .values(requeued(clock))
                .returning(jobs.c.type, jobs.c.id, jobs.c.has_dependants, jobs.c.workflow_id)
            )
            try:
                rows = conn.execute(statement).all()
            except sa_exc.IntegrityError:  # a unique job took a slot meanwhile (PostgreSQL)
                raise IllegalTransition("a unique job took the slot of a job retried with it; try again") from None
            retried = Counter(row.type for row in rows)
            followed = [row.id for row in rows if row.has_dependants or row.workflow_id is not None]
            dependants = self._back_in_line(conn, clock, self._jobs(conn, followed), effects) if followed else []
            record_audit(conn, clock, audit and audit.with_details(count=sum(retried.values())))
        log_dependants(dependants)
        logger.info(
            "jobs retried",
            extra={**_filter_fields(chosen), "event": "jobs.retried", "count": sum(retried.values())},
        )
        return dict(retried)

    def delete_matching(self, chosen: JobFilter, *, audit: AuditEntry | None = None) -> int:
        """Delete every finished job the filter chooses, with its attempts and the
        idempotency keys that name it, in one statement (PostgreSQL); the count. A parent
        whose dependant has not finished stays (its dependant may read its result)."""
        if chosen.status not in TERMINAL:
            raise InvalidArgument(f"only finished jobs ({', '.join(status_values(TERMINAL))}) can be deleted")
        with self._transaction() as conn:
            doomed = select(jobs.c.id).where(*_matching(jobs, chosen, self.dialect), ~_awaited())
            deleted = self._delete_jobs(conn, doomed, with_keys=True)
            record_audit(conn, self._clock(None), audit and audit.with_details(count=deleted))
        logger.info("jobs deleted", extra={**_filter_fields(chosen), "event": "jobs.deleted", "count": deleted})
        return deleted

    def delete_job(self, job_id: str, *, tenant: str = DEFAULT_TENANT, audit: AuditEntry | None = None) -> Job:
        """Delete one of `tenant`'s finished jobs (with its attempts and keys); a job still
        waiting or running is a conflict: cancel it first."""
        with self._transaction() as conn:
            job = to_job(self._fetch(conn, job_id, tenant=tenant, for_update=True))  # raises JobNotFound
            if job.status not in TERMINAL:
                raise IllegalTransition(f"cannot delete a job that is {job.status}; cancel it first")
            if not self._delete_jobs(conn, select(jobs.c.id).where(jobs.c.id == job.id, ~_awaited()), with_keys=True):
                raise IllegalTransition("cannot delete a job whose dependants have not finished")
            record_audit(conn, self._clock(None), audit and audit.about(job.id, queue=job.queue, type=job.type))
        log_transition("job deleted", "job.deleted", job)
        return job

    def reap_expired_leases(
        self,
        *,
        now: datetime | None = None,
        limit: int = 500,
        effects: Effects | None = None,
    ) -> list[Job]:
        """Leases past their expiry count as failed attempts ('lease expired'): the job is
        retried with backoff or dead, exactly as a nack would do (dead ones' dependants
        follow their policy)."""
        with self._transaction() as conn:
            clock = self._clock(now)
            rows = conn.execute(self._reap_statement(clock, limit)).all()
            if self.dialect != "postgresql":  # there the statement records attempts and the outbox itself
                enqueue_events(conn, clock, [row.id for row in rows])
                record_attempts(conn, [to_job(row) for row in rows], AttemptOutcome.EXPIRED)
            reaped = sorted(map(to_job, rows), key=lambda job: (job.updated_at, job.id))
            dependants = follow(conn, clock, self.dialect, reaped, effects)
        for job in reaped:
            log_failed_attempt(job)
        log_dependants(dependants)
        return reaped

    def _reap_statement(self, clock: Clock, limit: int):
        """One set-based UPDATE per batch: the oldest expired leases, failed as a nack would."""
        expired = (
            select(jobs.c.id)
            .where(status_in(HOLDING_LEASE), jobs.c.lease_expires_at <= clock.now())
            .order_by(jobs.c.lease_expires_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":  # the CTE form, so LIMIT bounds the rows locked
            expired = expired.with_for_update(skip_locked=True).cte("expired")
            statement = update(jobs).where(jobs.c.id == expired.c.id)
        else:
            statement = update(jobs).where(jobs.c.id.in_(expired.scalar_subquery()))
        values = failure_values(clock) | {"last_error": LEASE_EXPIRED}
        statement = statement.where(status_in(HOLDING_LEASE)).values(values).returning(*jobs.c)
        if self.dialect != "postgresql":
            return statement
        return with_effects(
            statement, lambda expired: insert_attempts(expired, AttemptOutcome.EXPIRED), events_of(clock)
        )

    def prune(self, finished_before: datetime, *, limit: int = 500) -> int:
        """Delete up to `limit` succeeded or cancelled jobs that finished before the given
        time, with their dependency edges; dead jobs stay until a person retries them, a
        job stays while an idempotency key names it (a retry must find it), and a parent
        stays while a dependant of it has not finished (its handler reads the parent's
        result). Small batches, short locks."""
        named_by_a_key = exists().where(idempotency_keys.c.job_id == jobs.c.id)
        doomed = (
            select(jobs.c.id)
            .where(
                jobs.c.status.in_([JobStatus.SUCCEEDED.value, JobStatus.CANCELLED.value]),
                jobs.c.finished_at < literal(finished_before, UTCDateTime),
                ~named_by_a_key,
                ~_awaited(),
            )
            .order_by(jobs.c.id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            doomed = doomed.with_for_update(skip_locked=True)
        with self._transaction() as conn:
            deleted = self._delete_jobs(conn, doomed)
        if deleted:
            logger.info("jobs pruned", extra={"event": "jobs.pruned", "count": deleted})
        return deleted

    def _delete_jobs(self, conn, doomed: Select, *, with_keys: bool = False) -> int:
        """Delete the jobs whose ids `doomed` selects with what goes with them (_rows_of), in
        one statement on PostgreSQL; on SQLite one per table inside its single-writer
        transaction, where `doomed` selects the same ids each time. Returns how many jobs."""
        if self.dialect == "postgresql":
            gone = delete(jobs).where(jobs.c.id.in_(doomed.scalar_subquery())).returning(jobs.c.id).cte("gone")
            count = select(func.count()).select_from(gone)
            for n, (table, condition) in enumerate(_rows_of(select(gone.c.id), with_keys)):
                count = count.add_cte(delete(table).where(condition).cte(f"dependent_{n}"))
            return conn.execute(count).scalar_one()
        for table, condition in _rows_of(doomed.scalar_subquery(), with_keys):
            conn.execute(delete(table).where(condition))
        return conn.execute(delete(jobs).where(jobs.c.id.in_(doomed.scalar_subquery()))).rowcount

    def prune_idempotency_keys(self, *, now: datetime | None = None, limit: int = 500) -> int:
        """Delete up to `limit` idempotency keys that expired; a retry after that creates a
        new job. (A submission also takes over an expired key it finds.)"""
        columns = (idempotency_keys.c.scope, idempotency_keys.c.key)
        with self._transaction() as conn:
            clock = self._clock(now)
            expired = select(*columns).where(idempotency_keys.c.expires_at <= clock.now()).limit(limit)
            if self.dialect == "postgresql":
                expired = expired.with_for_update(skip_locked=True)
            deleted = conn.execute(delete(idempotency_keys).where(tuple_(*columns).in_(expired))).rowcount
        if deleted:
            logger.info("idempotency keys pruned", extra={"event": "idempotency_keys.pruned", "count": deleted})
        return deleted

    def autovacuum_off(self) -> list[str]:
        """PostgreSQL: what keeps autovacuum from the jobs table, if anything: the server's
        `autovacuum` setting, the table's own `autovacuum_enabled`. Without it nothing removes
        the row versions every lease and settle leaves behind, nor analyses the table, and the
        reaper's and the leases' index scans read more of them day after day. SQLite: none."""
        if self.dialect != "postgresql":
            return []
        with self._transaction() as conn:
            server, table_enabled = conn.execute(_AUTOVACUUM_SETTINGS).one()
        found = [] if server == "on" else [f"the server's autovacuum is {server}"]
        if table_enabled is False:
            found.append("the jobs table's autovacuum_enabled is off")
        return found

    def _jobs(self, conn, job_ids: list) -> list[Job]:
        return list(map(to_job, conn.execute(select(jobs).where(jobs.c.id.in_(job_ids)))))

    def _transition(self, conn, job_id: str, allowed, values: dict[str, Any], *, verb: str) -> Job:
        canonical = parse_job_id(job_id)
        if canonical is None:
            raise JobNotFound(f"no job has the id {job_id!r}")
        statement = update(jobs).where(jobs.c.id == canonical, status_in(allowed)).values(values)
        row = conn.execute(statement.returning(*jobs.c)).one_or_none()
        if row is None:
            current = self._fetch(conn, canonical, tenant=ALL_TENANTS)  # the caller read it as its tenant's
            raise IllegalTransition(f"cannot {verb} a job that is {current.status}")
        return to_job(row)


def requeued(clock: Clock) -> dict[str, Any]:
    """The values of a retry: pending now, with its retries renewed and no lease."""
    return {
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


def _matching(table, chosen: JobFilter, dialect: str) -> list[ColumnElement]:
    """The filter as terms over `table` (jobs or an alias of it)."""
    guard = [table.c.status == chosen.status.value, table.c.queue == chosen.queue, *of_tenant(table, chosen.tenant)]
    if chosen.type is not None:
        guard.append(table.c.type == chosen.type)
    if chosen.created_from is not None:
        guard.append(table.c.created_at >= literal(chosen.created_from, UTCDateTime))
    if chosen.created_to is not None:
        guard.append(table.c.created_at < literal(chosen.created_to, UTCDateTime))
    if chosen.payload_contains:
        guard.append(payload_contains(table, chosen.payload_contains, dialect))
    return guard


def _rows_of(ids, with_keys: bool) -> list[tuple[Any, ColumnElement]]:
    """What goes with deleted jobs (whose ids `ids` selects): their attempts, their
    dependency edges either way, and (with_keys) the idempotency keys naming them."""
    rows = [
        (job_attempts, job_attempts.c.job_id.in_(ids)),
        (edges, or_(edges.c.job_id.in_(ids), edges.c.parent_id.in_(ids))),
    ]
    if with_keys:
        rows.append((idempotency_keys, idempotency_keys.c.job_id.in_(ids)))
    return rows


def _awaited() -> ColumnElement:
    """A job with a dependant that has not finished (its handler may read this job's result)."""
    child = jobs.alias("child")
    awaited = exists().where(
        edges.c.parent_id == jobs.c.id,
        child.c.id == edges.c.job_id,
        child.c.status.not_in([JobStatus.SUCCEEDED.value, JobStatus.CANCELLED.value]),
    )
    return and_(jobs.c.has_dependants, awaited)  # has_dependants first: most jobs have none


def _filter_fields(chosen: JobFilter) -> dict[str, Any]:
    return {"queue": chosen.queue, "status": chosen.status.value, "job_type": chosen.type}


def _unique_slot_free(chosen: JobFilter, dialect: str) -> ColumnElement:
    """A job that may go back to pending without breaking a unique slot: not unique, or no
    other job holds its slot and it is the last (by id) of the jobs retried with it that
    share the slot. A unique job whose slot is taken stays where it is."""
    holder, twin = jobs.alias("holder"), jobs.alias("twin")
    held_by_another = exists().where(
        holder.c.unique_key == jobs.c.unique_key, holder.c.id != jobs.c.id, unique_slot_held(holder)
    )
    later_twin = exists().where(
        twin.c.unique_key == jobs.c.unique_key, twin.c.id > jobs.c.id, *_matching(twin, chosen, dialect)
    )
    return or_(jobs.c.unique_key.is_(None), and_(~held_by_another, ~later_twin))
