"""Submitting jobs. A batch of plain jobs only (no idempotency key, no unique options, the
common case) is one statement: on PostgreSQL an INSERT ... SELECT FROM json_to_recordset(the
batch as one JSON text) run in autocommit, reading nothing back but its clock (the ids are made
here); on SQLite one prebuilt INSERT run with executemany. Plain jobs of a mixed batch go in
with one prebuilt INSERT run with executemany, so a batch of 1,000 is compiled once per shape. A job with an idempotency key or unique options goes in on its own, in the same
transaction, through INSERT ... ON CONFLICT: the database's unique indexes settle a race
between two web processes, never a read before the write. A job with depends_on goes in
blocked, in the transaction path, and store.dependencies.link gives it its edges and first
status; a workflow (submit_workflow) is its jobs, with planned ids, in one transaction."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    Text,
    Uuid,
    bindparam,
    column,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from quorra.access import DEFAULT_TENANT
from quorra.errors import DatabaseUnavailable, IdempotencyKeyReused
from quorra.jobs import (
    DEFAULT_IDEMPOTENCY_TTL_SECONDS,
    Job,
    JobSpec,
    JobStatus,
    TraceContext,
    period_start,
)
from quorra.schema import (
    UNIQUE_SLOT_HELD,
    UTCDateTime,
    idempotency_keys,
    jobs,
    workflows,
)
from quorra.store.base import (
    Clock,
    Outcome,
    StoreBase,
    Submitted,
    log_transition,
    logger,
    to_job,
    utcnow,
)
from quorra.store.dependencies import link, to_workflow, workflows_finished
from quorra.store.direct import DirectStatement
from quorra.workflows import Workflow, WorkflowPlan, WorkflowStatus

# A unique job's INSERT found the slot taken, then no holder: the holder left the slot in
# between. Try again this many times (each a fresh snapshot) before giving up.
UNIQUE_INSERT_ATTEMPTS = 5


@dataclass(frozen=True)
class KeyScope:
    """Where idempotency keys live (the sha256 of an API key) and how long each is kept."""

    scope: str = ""
    ttl_seconds: float = DEFAULT_IDEMPOTENCY_TTL_SECONDS

    @classmethod
    def of(cls, scope: str, tenant: str, ttl_seconds: float) -> KeyScope:
        """A caller's keys within its tenant: a JWT subject with tokens of two tenants keeps
        two sets, so a key never answers with another tenant's job. The default tenant's
        scope is the caller's own, as it was before tenants (its stored keys still replay)."""
        if tenant != DEFAULT_TENANT:
            scope = hashlib.sha256(f"{tenant}\x00{scope}".encode()).hexdigest()
        return cls(scope, ttl_seconds)


class Submitting(StoreBase):
    """enqueue: new jobs, all in one transaction."""

    def enqueue(self, spec: JobSpec, *, tenant: str = DEFAULT_TENANT, now: datetime | None = None) -> Job:
        return self.enqueue_many([spec], tenant=tenant, now=now)[0]

    def enqueue_many(
        self, specs: Sequence[JobSpec], *, tenant: str = DEFAULT_TENANT, now: datetime | None = None
    ) -> list[Job]:
        """Insert all the jobs in one transaction: all are created or none."""
        return [submitted.job for submitted in self.submit_many(specs, tenant=tenant, now=now)]

    def submit_many(
        self,
        specs: Sequence[JobSpec],
        *,
        scope: str = "",
        key_ttl_seconds: float = DEFAULT_IDEMPOTENCY_TTL_SECONDS,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
        trace: TraceContext | None = None,
    ) -> list[Submitted]:
        """Submit all the jobs in one transaction, all or none, as `tenant`'s (their unique
        slots and the parents they name are that tenant's); one result per job, in order.
        A job whose idempotency key (within `scope`) was used for the same job is that job,
        REPLAYED; for another job, IdempotencyKeyReused fails the whole batch. A unique job
        whose slot is held is the holder, DUPLICATE. The jobs created keep `trace`, the
        context of the submit, if there is one (a job returned instead keeps its own)."""
        if not specs:
            return []
        given = _Given(tenant, trace)
        if all(spec.is_plain for spec in specs):
            return [Submitted(job, Outcome.CREATED) for job in self._insert_plain_only(specs, now, given)]
        keys = KeyScope.of(scope, tenant, key_ttl_seconds)
        with self._transaction() as conn:
            clock = self._clock(now)
            results = self._insert_plain(conn, clock, specs, given)
            batched = self._insert_keyed(conn, clock, specs, keys, given) | self._insert_unique_many(
                conn, clock, specs, given
            )
            for index, spec in enumerate(specs):
                if results[index] is None:
                    results[index] = batched.get(index) or self._submit_one(conn, clock, spec, keys, given)
            results = self._link(conn, clock, specs, results, tenant)
        submitted = [result for result in results if result is not None]
        _log_enqueued([result.job for result in submitted if result.created])
        return submitted

    def submit_workflow(
        self,
        plan: WorkflowPlan,
        *,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
        trace: TraceContext | None = None,
    ) -> tuple[Workflow, list[Job]]:
        """Create `tenant`'s workflow and all its jobs (each with its planned id and ref, in
        the plan's dependency order) in one transaction, all or none; each keeps `trace`."""
        given = _Given(tenant, trace)
        with self._transaction() as conn:
            clock = self._clock(now)
            row = {
                "id": plan.workflow_id,
                "tenant": tenant,
                "name": plan.name,
                "status": WorkflowStatus.RUNNING.value,
            }
            workflow = to_workflow(
                conn.execute(insert(workflows).values(row | {"created_at": clock.now()}).returning(*workflows.c)).one()
            )
            extra = {"workflow_id": plan.workflow_id}
            rows = [
                _new_row(spec, clock, given, job_id) | extra | {"ref": ref}
                for job_id, ref, spec in zip(plan.ids, plan.refs, plan.specs, strict=True)
            ]
            created = _insert_rows(conn, clock, rows)
            children = [(job_id, spec) for job_id, spec in zip(plan.ids, plan.specs, strict=True) if spec.depends_on]
            created |= link(conn, clock, self.dialect, children, tenant) if children else {}
            # (every job cancelled at once, by an existing parent that failed: complete already)
            workflow = next(iter(workflows_finished(conn, clock, self.dialect, created.values())), workflow)
        jobs_ = [created[job_id] for job_id in plan.ids]
        _log_enqueued(jobs_)
        logger.info(
            "workflow created",
            extra={
                "event": "workflow.created",
                "workflow_id": workflow.id,
                "count": len(jobs_),
            },
        )
        return workflow, jobs_

    def _link(self, conn, clock: Clock, specs: Sequence[JobSpec], results: list, tenant: str) -> list:
        """The created jobs that depend on others get their edges and first status."""
        children = [
            (result.job.id, spec)
            for spec, result in zip(specs, results, strict=True)
            if spec.depends_on and result is not None and result.created
        ]
        if not children:
            return results
        linked = link(conn, clock, self.dialect, children, tenant)
        return [
            Submitted(linked[result.job.id], result.outcome)
            if result is not None and result.job.id in linked
            else result
            for result in results
        ]

    def _insert_plain_only(self, specs: Sequence[JobSpec], now: datetime | None, given: _Given) -> list[Job]:
        ids = new_job_ids(len(specs))
        if self.dialect == "postgresql":
            created_at = self._insert_from_json(ids, specs, now, given)
        else:
            created_at = self._insert_rows_without_returning(ids, specs, now or utcnow(), given)
        created = [_new_job(job_id, spec, created_at, given) for job_id, spec in zip(ids, specs, strict=True)]
        _log_enqueued(created)
        return created

    def _insert_from_json(
        self, ids: list[str], specs: Sequence[JobSpec], now: datetime | None, given: _Given
    ) -> datetime:
        rows = [
            {
                "id": job_id,
                "type": spec.type,
                "queue": spec.queue,
                "payload": spec.payload,
                "priority": spec.priority,
                "max_retries": spec.max_retries,
                "delay_seconds": spec.delay_seconds,
                "timeout_seconds": spec.timeout_seconds,
            }
            for job_id, spec in zip(ids, specs, strict=True)
        ]
        if given.trace is not None:
            for row in rows:
                row.update(_trace_columns(given.trace))
        parameters = {"jobs": json.dumps(rows, separators=(",", ":")), "now": now, "tenant": given.tenant}
        # One INSERT is atomic on its own: run in autocommit, no BEGIN/COMMIT trips (quorra.store.direct).
        with self._translated_errors():
            [(created_at,)] = _INSERT_FROM_JSON.rows(self.engine, parameters)
        return created_at

    def _insert_rows_without_returning(
        self, ids: list[str], specs: Sequence[JobSpec], now: datetime, given: _Given
    ) -> datetime:
        rows = [_given_row(job_id, spec, now, given) for job_id, spec in zip(ids, specs, strict=True)]
        with self._transaction() as conn:
            conn.execute(_INSERT_WITHOUT_RETURNING, rows)
        return now

    def _insert_plain(self, conn, clock: Clock, specs: Sequence[JobSpec], given: _Given) -> list[Submitted | None]:
        """The plain jobs in one executemany; None in the places of the others."""
        rows = {
            index: _new_row(spec, clock, given)
            for index, spec in enumerate(specs)
            if spec.idempotency_key is None and spec.unique is None
        }
        created = _insert_rows(conn, clock, list(rows.values()))
        return [
            Submitted(created[rows[index]["id"]], Outcome.CREATED) if index in rows else None
            for index in range(len(specs))
        ]

    def _insert_keyed(
        self, conn, clock: Clock, specs: Sequence[JobSpec], keys: KeyScope, given: _Given
    ) -> dict[int, Submitted]:
        """The jobs with an idempotency key (used once in the batch) and no unique options, all
        at once, as a client that keys every batch sends them: one INSERT ... ON CONFLICT
        claims every key, one executemany inserts the jobs of the keys claimed, and two
        queries read back the jobs of the keys already used."""
        uses = Counter(spec.idempotency_key for spec in specs)
        keyed = {
            index: spec
            for index, spec in enumerate(specs)
            if spec.idempotency_key is not None and spec.unique is None and uses[spec.idempotency_key] == 1
        }
        if not keyed:
            return {}
        rows = {index: _new_row(spec, clock, given) for index, spec in keyed.items()}
        claimed = self._claim_keys(conn, clock, [(spec, rows[index]["id"]) for index, spec in keyed.items()], keys)
        created = _insert_rows(conn, clock, [rows[i] for i, spec in keyed.items() if spec.idempotency_key in claimed])
        replays = _replay_many(
            conn, keys.scope, [spec for spec in keyed.values() if spec.idempotency_key not in claimed]
        )
        return {
            index: Submitted(created[rows[index]["id"]], Outcome.CREATED)
            if spec.idempotency_key in claimed
            else replays[spec.idempotency_key]
            for index, spec in keyed.items()
        }

    def _submit_one(self, conn, clock: Clock, spec: JobSpec, keys: KeyScope, given: _Given) -> Submitted:
        values = _new_values(spec, clock, given)
        if spec.idempotency_key is not None and not self._claim_keys(conn, clock, [(spec, values["id"])], keys):
            return _replay_many(conn, keys.scope, [spec])[spec.idempotency_key]
        if spec.unique is None:
            row = conn.execute(insert(jobs).values(values).returning(*jobs.c)).one()
            submitted = Submitted(to_job(row), Outcome.CREATED)
        else:
            submitted = self._insert_unique(conn, clock, spec, values, given.tenant)
        if spec.idempotency_key is not None and not submitted.created:  # the key answers with the holder
            key = _key_row(keys.scope, spec.idempotency_key)
            conn.execute(update(idempotency_keys).where(*key).values(job_id=submitted.job.id))
        return submitted

    def _claim_keys(self, conn, clock: Clock, claims: list[tuple[JobSpec, str]], keys: KeyScope) -> set[str]:
        """Insert each key naming the job about to be created, or take over an expired one;
        the keys claimed (the others are live). On PostgreSQL a concurrent claim of the same
        key waits here for the first to commit, then finds its row."""
        table = idempotency_keys
        statement = self._insert(table).values(created_at=clock.now(), expires_at=clock.after(keys.ttl_seconds))
        renewed = ("fingerprint", "job_id", "created_at", "expires_at")
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.scope, table.c.key],
            set_={name: statement.excluded[name] for name in renewed},
            where=table.c.expires_at <= clock.now(),
        ).returning(table.c.key)
        rows = [
            {"scope": keys.scope, "key": spec.idempotency_key, "fingerprint": spec.fingerprint(), "job_id": job_id}
            for spec, job_id in claims
        ]
        return set(conn.execute(statement, rows).scalars())

    def _insert_unique_many(self, conn, clock: Clock, specs: Sequence[JobSpec], given: _Given) -> dict[int, Submitted]:
        """The unique jobs without an idempotency key (each slot once in the batch), all at
        once: one executemany of INSERT ... ON CONFLICT DO NOTHING, then one query for the
        holders of the slots that were taken. A slot neither won nor held (its holder left
        it in between) is left out, for the per-job path."""
        now = self._now_if_periods(conn, clock, specs)
        slots = {
            index: _slot(spec, now, given.tenant)
            for index, spec in enumerate(specs)
            if spec.unique is not None and spec.idempotency_key is None
        }
        uses = Counter(slots.values())
        rows = {
            index: _new_row(specs[index], clock, given)
            | {"unique_key": slot, "unique_states": specs[index].unique.mask}
            for index, slot in slots.items()
            if uses[slot] == 1
        }
        if not rows:
            return {}
        won = {
            job.unique_key: job
            for job in map(to_job, conn.execute(self._insert_unique_statement(clock), list(rows.values())))
        }
        holders = self._holders(conn, [row["unique_key"] for row in rows.values() if row["unique_key"] not in won])
        answers = {}
        for index, row in rows.items():
            if row["unique_key"] in won:
                answers[index] = Submitted(won[row["unique_key"]], Outcome.CREATED)
            elif row["unique_key"] in holders:
                answers[index] = Submitted(holders[row["unique_key"]], Outcome.DUPLICATE)
        return answers

    def _insert_unique_statement(self, clock: Clock):
        statement = self._insert(jobs)
        if clock.fixed is None:  # as _INSERT_AT_DB_TIME
            delay = func.make_interval(0, 0, 0, 0, 0, 0, bindparam("delay_seconds"))
            statement = statement.values(run_at=func.now() + delay, created_at=func.now(), updated_at=func.now())
        held = text(UNIQUE_SLOT_HELD)
        return statement.on_conflict_do_nothing(index_elements=[jobs.c.unique_key], index_where=held).returning(*jobs.c)

    def _holders(self, conn, slots: list[str]) -> dict[str, Job]:
        """The jobs holding these unique slots (on PostgreSQL share-locked against pruning)."""
        if not slots:
            return {}
        query = select(jobs).where(jobs.c.unique_key.in_(slots), text(UNIQUE_SLOT_HELD))
        if self.dialect == "postgresql":
            query = query.with_for_update(read=True, key_share=True)
        return {job.unique_key: job for job in map(to_job, conn.execute(query))}

    def _now_if_periods(self, conn, clock: Clock, specs: Sequence[JobSpec]) -> datetime | None:
        """The transaction's time, if a unique job of the batch has a period."""
        if not any(spec.unique is not None and spec.unique.period_seconds is not None for spec in specs):
            return None
        return clock.fixed or conn.execute(select(func.now())).scalar_one()

    def _insert_unique(self, conn, clock: Clock, spec: JobSpec, values: dict[str, Any], tenant: str) -> Submitted:
        """INSERT ... ON CONFLICT DO NOTHING on the unique slot; when taken, the holder. On
        PostgreSQL a concurrent insert of the same key waits for the first to commit."""
        key = spec.unique_key(self._period_start(conn, clock, spec), tenant=tenant)
        held = text(UNIQUE_SLOT_HELD)
        statement = (
            self._insert(jobs)
            .values(values | {"unique_key": key, "unique_states": spec.unique.mask})
            .on_conflict_do_nothing(index_elements=[jobs.c.unique_key], index_where=held)
            .returning(*jobs.c)
        )
        holder_of_slot = select(jobs).where(jobs.c.unique_key == key, held)
        if self.dialect == "postgresql":  # the weakest lock that keeps prune from deleting it
            holder_of_slot = holder_of_slot.with_for_update(read=True, key_share=True)
        for _ in range(UNIQUE_INSERT_ATTEMPTS):
            row = conn.execute(statement).one_or_none()
            if row is not None:
                return Submitted(to_job(row), Outcome.CREATED)
            holder = conn.execute(holder_of_slot).one_or_none()
            if holder is not None:
                return Submitted(to_job(holder), Outcome.DUPLICATE)
        raise DatabaseUnavailable("the unique job's slot kept changing hands; try again")

    def _period_start(self, conn, clock: Clock, spec: JobSpec) -> int | None:
        if spec.unique is None or spec.unique.period_seconds is None:
            return None
        now = clock.fixed or conn.execute(select(func.now())).scalar_one()
        return period_start(now.timestamp(), spec.unique.period_seconds)

    def _insert(self, table):
        """INSERT with ON CONFLICT, in this database's dialect."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)


def _slot(spec: JobSpec, now: datetime | None, tenant: str) -> str | None:
    """The unique job's slot within `tenant`, in the period of `now` when its options have one."""
    period = spec.unique.period_seconds if spec.unique is not None else None
    return spec.unique_key(period_start(now.timestamp(), period) if period and now else None, tenant=tenant)


def _key_row(scope: str, key: str) -> list:
    return [idempotency_keys.c.scope == scope, idempotency_keys.c.key == key]


def _replay_many(conn, scope: str, specs: list[JobSpec]) -> dict[str, Submitted]:
    """The answers to retries, by key: the job each key names, if the retry repeats that
    job; else IdempotencyKeyReused."""
    if not specs:
        return {}
    table = idempotency_keys
    seen = {
        row.key: row
        for row in conn.execute(
            select(table).where(table.c.scope == scope, table.c.key.in_([s.idempotency_key for s in specs]))
        )
    }
    for spec in specs:
        _check_same_job(spec, seen[spec.idempotency_key])
    job_ids = {str(uuid.UUID(str(row.job_id))) for row in seen.values()}
    found = {job.id: job for job in map(to_job, conn.execute(select(jobs).where(jobs.c.id.in_(job_ids))))}
    answers = {}
    for spec in specs:
        job = found.get(str(uuid.UUID(str(seen[spec.idempotency_key].job_id))))
        if job is None:  # pruning keeps a job while a key names it; only a person could delete it
            raise IdempotencyKeyReused(
                f"the idempotency key {spec.idempotency_key!r} names a job that no longer exists",
                details=_key_details(spec, seen[spec.idempotency_key]),
            )
        answers[spec.idempotency_key] = Submitted(job, Outcome.REPLAYED)
    return answers


def _check_same_job(spec: JobSpec, seen) -> None:
    if seen.fingerprint != spec.fingerprint():
        raise IdempotencyKeyReused(
            f"the idempotency key {spec.idempotency_key!r} was used for a different job",
            details=_key_details(spec, seen),
        )


def _key_details(spec: JobSpec, seen) -> dict[str, str]:
    return {"idempotency_key": spec.idempotency_key, "job_id": str(uuid.UUID(str(seen.job_id)))}


def _insert_rows(conn, clock: Clock, rows: list[dict[str, Any]]) -> dict[str, Job]:
    """New jobs (_new_row) by id. executemany of one prebuilt INSERT: SQLAlchemy's
    insertmanyvalues batches the rows into multi-row INSERTs and compiles once per shape
    (insert().values(list) never caches)."""
    if not rows:
        return {}
    statement = _INSERT_AT_DB_TIME if clock.fixed is None else _INSERT
    return {job.id: job for job in map(to_job, conn.execute(statement, rows))}


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


@dataclass(frozen=True)
class _Given:
    """What every job of one submit shares: its tenant, and the trace context of the
    submit (None: outside any trace)."""

    tenant: str = DEFAULT_TENANT
    trace: TraceContext | None = None


def _base_row(spec: JobSpec, given: _Given, job_id: str | None = None) -> dict[str, Any]:
    """A new job's columns but its times: the one list of them for every INSERT but the
    PostgreSQL fast path's (json_to_recordset, which types its own columns). A job with
    parents goes in blocked; dependencies.link gives it its first status. The trace columns
    only when there is a trace (the same for every row of a submit): else they stay NULL."""
    if spec.depends_on:
        row = _columns(spec, job_id, given.tenant) | {
            "status": JobStatus.BLOCKED.value,
            "pending_parents": len(spec.depends_on),
        }
    else:
        row = _columns(spec, job_id, given.tenant) | _NO_PARENTS
    if given.trace is not None:
        row.update(_trace_columns(given.trace))
    return row


def _trace_columns(trace: TraceContext) -> dict[str, str | None]:
    return {"traceparent": trace.traceparent, "tracestate": trace.tracestate}


def _columns(spec: JobSpec, job_id: str | None, tenant: str) -> dict[str, Any]:
    return {
        "id": job_id or str(uuid.uuid4()),
        "tenant": tenant,
        "type": spec.type,
        "queue": spec.queue,
        "payload": spec.payload,
        "priority": spec.priority,
        "status": JobStatus.PENDING.value,
        "attempts": 0,
        "max_retries": spec.max_retries,
        "timeout_seconds": spec.timeout_seconds,
    }


# Every row of an executemany names the same columns.
_NO_PARENTS = {"pending_parents": None}


def _new_row(spec: JobSpec, clock: Clock, given: _Given, job_id: str | None = None) -> dict[str, Any]:
    """Parameters of the prebuilt INSERTs."""
    row = _base_row(spec, given, job_id)
    if clock.fixed is None:  # PostgreSQL time: now() + delay, computed by the database
        return row | {"delay_seconds": spec.delay_seconds}
    return row | _times_from(spec, clock.fixed)


def _times_from(spec: JobSpec, created_at: datetime) -> dict[str, datetime]:
    """A new job's times, created at a known instant."""
    return {
        "run_at": created_at + timedelta(seconds=spec.delay_seconds),
        "created_at": created_at,
        "updated_at": created_at,
    }


def _new_values(spec: JobSpec, clock: Clock, given: _Given) -> dict[str, Any]:
    """Values (SQL expressions for the times) of a job inserted on its own."""
    return _base_row(spec, given) | {
        "run_at": clock.after(spec.delay_seconds),
        "created_at": clock.now(),
        "updated_at": clock.now(),
    }


_INSERT_WITHOUT_RETURNING = insert(jobs)


def new_job_ids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs in their canonical text form, as str(uuid.uuid4())
    gives them at a quarter of its cost (no UUID object per id)."""
    random = os.urandom(16 * count)
    ids = []
    for start in range(0, 16 * count, 16):
        digits = random[start : start + 16].hex()
        variant = "89ab"[int(digits[16], 16) & 3]  # the RFC 4122 variant: bits 10xx
        ids.append(f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}")
    return ids


def _insert_from_json_statement():
    """INSERT INTO jobs SELECT ... FROM json_to_recordset(:jobs) in a CTE, and the time the
    jobs were created at (`:now`, or the statement's now()). The batch travels as one JSON
    text: psycopg2 adapts one string instead of an array element per job and column (which
    cost 8 µs a job), and PostgreSQL parses it in C."""
    given = (
        func.json_to_recordset(bindparam("jobs", type_=Text))
        .table_valued(
            column("id", Uuid(as_uuid=False)),
            column("type", Text),
            column("queue", Text),
            column("payload", JSONB),
            column("priority", Integer),
            column("max_retries", Integer),
            column("delay_seconds", Integer),
            column("timeout_seconds", Integer),
            column("traceparent", Text),
            column("tracestate", Text),
        )
        .render_derived(name="given", with_types=True)
    )
    now = func.coalesce(bindparam("now", type_=UTCDateTime), func.now(), type_=UTCDateTime)
    values = {
        "id": given.c.id,
        "tenant": bindparam("tenant", type_=Text),  # the same for every job of a submit
        "type": given.c.type,
        "queue": given.c.queue,
        "payload": given.c.payload,
        "priority": given.c.priority,
        "status": literal(JobStatus.PENDING.value),
        "attempts": literal(0),
        "max_retries": given.c.max_retries,
        "timeout_seconds": given.c.timeout_seconds,
        "traceparent": given.c.traceparent,
        "tracestate": given.c.tracestate,
        "run_at": now + func.make_interval(0, 0, 0, 0, 0, 0, given.c.delay_seconds),
        "created_at": now,
        "updated_at": now,
    }
    inserted = (
        insert(jobs).from_select(list(values), select(*values.values())).returning(jobs.c.created_at).cte("inserted")
    )
    return select(func.max(inserted.c.created_at, type_=UTCDateTime)).select_from(inserted)


_INSERT_FROM_JSON = DirectStatement(_insert_from_json_statement())


def _given_row(job_id: str, spec: JobSpec, now: datetime, given: _Given) -> dict[str, Any]:
    return _base_row(spec, given, job_id) | _times_from(spec, now)


def _new_job(job_id: str, spec: JobSpec, created_at: datetime, given: _Given) -> Job:
    """The job as inserted: every column is known here, so none is read back. Built by
    filling a new instance's fields at once: Job(...) (a frozen dataclass) would set its 18
    fields one object.__setattr__ at a time, which cost 3.6 µs a job, 8 times this."""
    job = object.__new__(Job)
    job.__dict__.update(
        _UNSET_FIELDS,
        id=job_id,
        tenant=given.tenant,
        type=spec.type,
        queue=spec.queue,
        payload=spec.payload,
        priority=spec.priority,
        status=JobStatus.PENDING,
        attempts=0,
        max_retries=spec.max_retries,
        timeout_seconds=spec.timeout_seconds,
        run_at=created_at + timedelta(seconds=spec.delay_seconds) if spec.delay_seconds else created_at,
        created_at=created_at,
        updated_at=created_at,
    )
    if given.trace is not None:
        job.__dict__.update(_trace_columns(given.trace))
    return job


# The fields a new plain job keeps at their defaults (lease, error, result, finish, unique
# slot, and the trace context unless it has one).
_UNSET_FIELDS = {
    field.name: field.default for field in dataclasses.fields(Job) if field.default is not dataclasses.MISSING
}


def _log_enqueued(created: list[Job]) -> None:
    """One `job.enqueued` line for a single job; a batch of several logs one `jobs.enqueued`
    line (INFO) with its size and queues, and each job's `job.enqueued` line at DEBUG."""
    if len(created) == 1:
        log_transition("job enqueued", "job.enqueued", created[0])
        return
    logger.info(
        "jobs enqueued",
        extra={"event": "jobs.enqueued", "count": len(created), "queues": sorted({job.queue for job in created})},
    )
    if logger.isEnabledFor(logging.DEBUG):
        for job in created:
            log_transition("job enqueued", "job.enqueued", job, level=logging.DEBUG)
