"""Settling leases: on PostgreSQL one UPDATE ... FROM unnest(arrays) per batch, with one
result per settlement (a stale or unknown lease never fails its neighbours); on SQLite one
transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Text,
    Uuid,
    and_,
    bindparam,
    case,
    cast,
    func,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from quorra.access import ALL_TENANTS, DEFAULT_TENANT
from quorra.errors import InvalidArgument, StaleLease
from quorra.jobs import (
    HOLDING_LEASE,
    Job,
    JobStatus,
    backoff_seconds,
    check_portable_json,
    parse_job_id,
    status_after_failure,
)
from quorra.schema import jobs
from quorra.store.attempts import insert_attempts, record_attempts
from quorra.store.base import (
    MAX_ERROR_CHARS,
    Clock,
    Effects,
    Settlement,
    SettleOutcome,
    SettleResult,
    StoreBase,
    failure_values,
    job_from_columns,
    log_failed_attempt,
    log_transition,
    of_tenant,
    status_in,
    status_values,
    to_job,
    with_effects,
)
from quorra.store.dependencies import follow, log_dependants
from quorra.store.direct import DirectStatement, PreparedStatementLost
from quorra.store.webhooks import any_webhook, enqueue_events, events_of, no_webhook


class Settling(StoreBase):
    """Acks and nacks, one at a time or many in one transaction."""

    def ack(
        self,
        job_id: str,
        lease_id: str,
        result: Any = None,
        *,
        worker_id: str | None = None,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
    ) -> Job:
        """The attempt succeeded: the job is done, with the handler's result if any."""
        _check_result(result)
        settlement = Settlement(job_id, lease_id, success=True, result=result)
        return self.settle_many([settlement], worker_id=worker_id, tenant=tenant, now=now)[0].job_or_raise()

    def nack(
        self,
        job_id: str,
        lease_id: str,
        error: str,
        *,
        worker_id: str | None = None,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
    ) -> Job:
        """The attempt failed: retry after the backoff, or dead when out of retries."""
        settlement = Settlement(job_id, lease_id, success=False, error=error)
        return self.settle_many([settlement], worker_id=worker_id, tenant=tenant, now=now)[0].job_or_raise()

    def settle_many(
        self,
        settlements: Sequence[Settlement],
        *,
        worker_id: str | None = None,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
        effects: Effects | None = None,
    ) -> list[SettleResult]:
        """Acks and nacks of held leases in one transaction (one UPDATE on PostgreSQL), with
        one result per settlement, in order: a stale or unknown lease never fails its
        neighbours. With `worker_id`, a lease counts as held only by the worker it went to.
        Another tenant's job is NOT_FOUND, as an unknown one (ALL_TENANTS: a fleet worker,
        whose leases may be any tenant's).
        In the same transaction, settled parents release or cancel their dependants and
        finished workflows complete (reported in `effects`)."""
        checked = _check_settlements(settlements)
        valid = [item for item in checked if isinstance(item, Settlement)]
        try:
            settled, dependants, unsettled = self._settle_in_transaction(valid, worker_id, tenant, now, effects)
        except PreparedStatementLost:  # nothing was settled; this session now settles unprepared
            settled, dependants, unsettled = self._settle_in_transaction(valid, worker_id, tenant, now, effects)
        results = [_settle_result(item, settled, unsettled) for item in checked]
        for result in results:
            if result.job is not None:
                _log_settled(result.job)
        log_dependants(dependants)
        return results

    def _settle_in_transaction(self, valid: list[Settlement], worker_id, tenant, now, effects):
        """The settles, their dependants released, and the status of the jobs not settled."""
        with self._transaction() as conn:
            clock = self._clock(now)
            settled = self._settle(conn, clock, valid, worker_id, tenant) if valid else {}
            dependants = follow(conn, clock, self.dialect, settled.values(), effects)
            unsettled = self._statuses(conn, [item.job_id for item in valid if item.job_id not in settled], tenant)
        return settled, dependants, unsettled

    def _settle(self, conn, clock, settlements: list[Settlement], worker_id: str | None, tenant: str) -> dict[str, Job]:
        if self.dialect == "postgresql":
            ask = (settlements, worker_id, tenant)
            outbox = self._webhooks_seen
            changed = self._settled_rows(conn, clock, *ask, outbox=outbox)
            if not changed and not outbox and any_webhook(conn):
                # The statement without the outbox changed nothing because a webhook exists
                # (its guard): from now on, this process settles with the outbox.
                self._webhooks_seen = True
                changed = self._settled_rows(conn, clock, *ask, outbox=True)
            return {job.id: job for job in changed}
        settled = {}
        for item in settlements:  # SQLite: BEGIN IMMEDIATE holds the only write lock
            guard = self._lease_guard(clock, item.job_id, item.lease_id, worker_id, tenant)
            row = conn.execute(select(jobs).where(*guard))
            held = row.one_or_none()
            if held is not None:
                settled[item.job_id] = self._settle_row(conn, clock, held, item)
        enqueue_events(conn, clock, list(settled))
        record_attempts(conn, list(settled.values()))
        return settled

    # PostgreSQL: False until this process finds a webhook. Until then it settles with a
    # statement that writes no outbox and changes nothing at all while a webhook exists (a
    # one-time NOT EXISTS on the webhooks table, evaluated in the statement's own snapshot):
    # no event can be missed, and settling costs nothing more while no webhook exists.
    _webhooks_seen = False

    def _settled_rows(self, conn, clock: Clock, settlements, worker_id, tenant, *, outbox: bool) -> list[Job]:
        """The settle statement's changed jobs: on the database clock, prepared on the session
        (quorra.store.direct); at a caller's fixed time (tests), built for that time."""
        statement, params = prepared_settle(settlements, worker_id, tenant, outbox=outbox)
        if clock.fixed is not None:
            built = _settle_statement(clock, _shape(worker_id, tenant), outbox)
            return [to_job(row) for row in conn.execute(built, params)]
        rows = statement.rows_in(conn, params)
        return [job_from_columns(statement.named(row)) for row in rows]

    def _settle_row(self, conn, clock: Clock, row, item: Settlement) -> Job:
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
            status_in(HOLDING_LEASE),
        ]
        return to_job(conn.execute(update(jobs).where(*guard).values(values).returning(*jobs.c)).one())

    def _statuses(self, conn, job_ids: list[str], tenant: str) -> dict[str, str]:
        """The status of each of these jobs that exists and is `tenant`'s."""
        if not job_ids:
            return {}
        query = select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_(job_ids), *of_tenant(jobs, tenant))
        rows = conn.execute(query).all()
        return {str(uuid.UUID(str(job_id))): status for job_id, status in rows}

    def _fail_attempt(self, conn, clock: Clock, row, error: str) -> Job:
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
        guard = [jobs.c.id == row.id, jobs.c.lease_id == row.lease_id, status_in(HOLDING_LEASE)]
        updated = conn.execute(update(jobs).where(*guard).values(values).returning(*jobs.c)).one_or_none()
        if updated is None:  # cannot happen while we hold the row lock / write lock
            raise StaleLease(f"job {row.id} changed while it was being failed")
        return to_job(updated)


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
    if status in status_values(HOLDING_LEASE):
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


def prepared_settle(
    settlements: list[Settlement], worker_id: str | None, tenant: str, *, outbox: bool = False
) -> tuple[DirectStatement, dict[str, Any]]:
    """PostgreSQL: the prepared settle statement on the database clock for this batch's
    shape (with the webhook outbox or without), and its parameters."""
    params = _settle_arrays(settlements) | {"worker_id": worker_id, "settle_tenant": tenant}
    return _SETTLE_AT_DB_TIME[_shape(worker_id, tenant), outbox], params


def _shape(worker_id: str | None, tenant: str) -> _Shape:
    return _Shape(check_worker=worker_id is not None, check_tenant=tenant != ALL_TENANTS)


@dataclass(frozen=True)
class _Shape:
    """Which optional terms a settle statement's guard has: the worker holding the lease,
    and the tenant of the job (a fleet worker's settle, for ALL_TENANTS, has none)."""

    check_worker: bool
    check_tenant: bool


def _settle_statement(clock: Clock, shape: _Shape, outbox: bool):
    """UPDATE jobs ... FROM unnest(:job_ids, :lease_ids, ...) under the lease guard per row,
    recording each ended attempt in the same statement, with the webhook deliveries of the
    events it causes (store.webhooks.events_of), or without them and only while no webhook
    exists (store.webhooks.no_webhook). A nack's next status and backoff follow quorra.jobs
    (retries_remain, backoff_seconds)."""
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
    failure = failure_values(clock)
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
    held = [
        jobs.c.lease_id == cast(given.c.lease_id, Uuid(as_uuid=False)),
        status_in(HOLDING_LEASE),
        jobs.c.lease_expires_at > now,
    ]
    if shape.check_worker:
        held.append(jobs.c.leased_by == bindparam("worker_id", type_=Text))
    if shape.check_tenant:
        held.append(jobs.c.tenant == bindparam("settle_tenant", type_=Text))
    # The lease guard as one CASE, beside the join by id: PostgreSQL matches no index to a CASE
    # and does not take it for a selective term, so the plan reads the batch's jobs by primary
    # key, whatever its statistics say. As separate terms, on a table not analysed yet (a new
    # database just filled) they looked selective enough to read the tenant's jobs through
    # ix_jobs_tenant_queue_status (15 ms to settle 2 jobs at 30,000 rows), and once analysed,
    # every held lease through ix_jobs_lease_expiry. A row changed under the UPDATE is checked
    # against the whole guard again, as before.
    guard = [jobs.c.id == cast(given.c.job_id, Uuid(as_uuid=False)), case((and_(*held), true()))]
    if not outbox:
        return with_effects(update(jobs).where(*guard, no_webhook()).values(values).returning(*jobs.c), insert_attempts)
    settle = update(jobs).where(*guard).values(values).returning(*jobs.c)
    return with_effects(settle, insert_attempts, events_of(clock))


def _log_settled(job: Job) -> None:
    if job.status is JobStatus.SUCCEEDED:
        log_transition("job succeeded", "job.succeeded", job)
    else:
        log_failed_attempt(job)


def _check_result(result: Any) -> None:
    """Refuse a result one backend would store differently (see jobs.check_portable_json)."""
    try:
        check_portable_json(result)
    except ValueError as exc:
        raise InvalidArgument(f"the result cannot be stored: {exc}") from None


# Built once, after the helpers above: the hot settle statement on the database clock.
_SETTLE_AT_DB_TIME = {
    (shape, outbox): DirectStatement(_settle_statement(Clock("postgresql", None), shape, outbox), plans="custom")
    for shape in (_Shape(worker, tenant) for worker in (False, True) for tenant in (False, True))
    for outbox in (False, True)
}
