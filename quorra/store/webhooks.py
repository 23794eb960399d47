"""Webhooks: the table of them (create, list, read, delete), and the outbox, the statement
that turns jobs that just reached an event status into delivery jobs, one per matching
webhook, in the transaction of that change.

On PostgreSQL the settle and reap UPDATEs carry the outbox as a data-modifying CTE (one
statement still, see `with_events`): ``WITH settled AS (UPDATE ... RETURNING jobs.*), events
AS (INSERT INTO jobs ... SELECT ... FROM settled JOIN webhooks ON <filters>) SELECT * FROM
settled``. With no webhook, the join has nothing to join: no row is written and the
statement costs about what the bare UPDATE did. Elsewhere (SQLite, and cancel on both) it
is one INSERT ... SELECT over the changed jobs' ids, in the same transaction.

A webhook belongs to a tenant and hears only its tenant's events: the outbox joins a changed
job to the webhooks of the job's tenant alone, and a delivery is a job of the webhook's
tenant (its own queue quorra.webhooks), which the deliverer leases for every tenant."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.selectable import FromClause

from quorra.access import DEFAULT_TENANT
from quorra.audit import AuditEntry
from quorra.errors import QuorraError
from quorra.jobs import Job, JobStatus, parse_job_id
from quorra.schema import UTCDateTime, jobs, webhooks
from quorra.store.audit import record_audit
from quorra.store.base import Clock, StoreBase, logger
from quorra.webhooks import (
    DELIVER_TYPE,
    EVENT_STATUSES,
    WEBHOOK_QUEUE,
    Webhook,
    WebhookEvent,
    WebhookSpec,
    new_webhook_id,
    workflow_document,
)
from quorra.workflows import Workflow


class WebhookNotFound(QuorraError):
    """No webhook has that id."""

    code = "not_found"


class Webhooks(StoreBase):
    """The webhooks table. The outbox itself is written by the verbs that change a job."""

    def create_webhook(
        self,
        spec: WebhookSpec,
        secret: str,
        *,
        tenant: str = DEFAULT_TENANT,
        now: datetime | None = None,
        audit: AuditEntry | None = None,
    ) -> Webhook:
        values: dict[str, Any] = {
            "id": new_webhook_id(),
            "tenant": tenant,
            "url": spec.url,
            "events": [event.value for event in spec.events],
            # SQL NULL (every queue / type), never the JSON null the JSON type would write
            "queues": list(spec.queues) if spec.queues is not None else null(),
            "types": list(spec.types) if spec.types is not None else null(),
            "description": spec.description,
            "secret": secret,
            "max_retries": spec.max_retries,
        }
        with self._transaction() as conn:
            clock = self._clock(now)
            statement = insert(webhooks).values(values | {"created_at": clock.now(), "updated_at": clock.now()})
            row = conn.execute(statement.returning(*webhooks.c)).one()
            webhook = to_webhook(row)
            record_audit(conn, clock, audit and audit.about(webhook.id, url=webhook.url))
        logger.info(
            "webhook created",
            extra={"event": "webhook.created", "webhook_id": webhook.id, "events": [e.value for e in webhook.events]},
        )
        return webhook

    def list_webhooks(self, *, tenant: str = DEFAULT_TENANT) -> list[Webhook]:
        query = select(webhooks).where(webhooks.c.tenant == tenant).order_by(webhooks.c.created_at, webhooks.c.id)
        with self._transaction() as conn:
            rows = conn.execute(query).all()
        return [to_webhook(row) for row in rows]

    def get_webhook(self, webhook_id: str, *, tenant: str = DEFAULT_TENANT) -> Webhook:
        """`tenant`'s webhook; another tenant's is not found, as a missing one."""
        canonical = _webhook_id(webhook_id)
        with self._transaction() as conn:
            row = conn.execute(select(webhooks).where(*_the_webhook(canonical, tenant))).one_or_none()
        if row is None:
            raise WebhookNotFound(f"no webhook has the id {webhook_id!r}")
        return to_webhook(row)

    def delete_webhook(self, webhook_id: str, *, tenant: str = DEFAULT_TENANT, audit: AuditEntry | None = None) -> None:
        """Delete it; deliveries still waiting for it are dropped when their turn comes."""
        canonical = _webhook_id(webhook_id)
        with self._transaction() as conn:
            deleted = conn.execute(delete(webhooks).where(*_the_webhook(canonical, tenant))).rowcount
            if not deleted:
                raise WebhookNotFound(f"no webhook has the id {webhook_id!r}")
            record_audit(conn, self._clock(None), audit and audit.about(canonical))
        logger.info("webhook deleted", extra={"event": "webhook.deleted", "webhook_id": canonical})


def _webhook_id(webhook_id: str) -> str:
    canonical = parse_job_id(webhook_id)
    if canonical is None:
        raise WebhookNotFound(f"no webhook has the id {webhook_id!r}")
    return canonical


def _the_webhook(canonical_id: str, tenant: str) -> list[ColumnElement]:
    return [webhooks.c.id == canonical_id, webhooks.c.tenant == tenant]


def to_webhook(row) -> Webhook:
    data = row._asdict()
    data["id"] = parse_job_id(str(data["id"]))
    data["events"] = tuple(WebhookEvent(event) for event in data["events"])
    for name in ("queues", "types"):
        data[name] = tuple(data[name]) if data[name] is not None else None
    return Webhook(**data)


# -- the outbox --------------------------------------------------------------------------------


def enqueue_events(conn, clock: Clock, job_ids: Sequence[str]) -> None:
    """The outbox as its own statement: deliveries for these jobs (just changed, in this
    transaction) to every webhook that wants their event."""
    # The gate: with no webhook, one trivial read instead of the INSERT (a fifth of its
    # cost on SQLite). A webhook created by a transaction that commits after this read is
    # not seen here, exactly as the INSERT ... SELECT would not see it.
    if job_ids and any_webhook(conn):
        statement = _events_of_ids(conn.dialect.name, clock.fixed is not None)
        conn.execute(statement, {"job_ids": list(job_ids), "event_at": clock.fixed})


_ANY_WEBHOOK = "SELECT 1 FROM webhooks LIMIT 1"


def any_webhook(conn) -> bool:
    return conn.exec_driver_sql(_ANY_WEBHOOK).first() is not None


def no_webhook() -> ColumnElement:
    """NOT EXISTS (SELECT FROM webhooks): PostgreSQL evaluates it once per statement."""
    return ~exists().select_from(webhooks)


@functools.lru_cache(maxsize=8)
def _events_of_ids(dialect: str, fixed_now: bool):
    """Built once per shape, so SQLAlchemy finds it compiled (this runs once per settle batch
    on SQLite): the deliveries of the jobs :job_ids, created at :event_at (or now())."""
    changed = select(jobs).where(jobs.c.id.in_(bindparam("job_ids", expanding=True))).subquery("settled")
    clock = _BoundClock() if fixed_now else Clock("postgresql", None)
    return insert_events(changed, clock, dialect)


class _BoundClock(Clock):
    """A clock whose time is the parameter :event_at."""

    def __init__(self) -> None:
        self.fixed = None

    def after(self, seconds: float) -> ColumnElement:
        assert not seconds
        return bindparam("event_at", type_=UTCDateTime)


def enqueue_followers(
    conn,
    clock: Clock,
    dependants: Sequence[Job],
    completed: Sequence[Workflow],
    counts: Callable[[Any, list[str]], dict[str, dict[str, int]]],
) -> None:
    """The events of what a change implied in its transaction (quorra.store.dependencies):
    dependants cancelled by a failed parent, and workflows completed (`counts` gives their
    jobs by status)."""
    enqueue_events(conn, clock, [job.id for job in dependants if job.status in EVENT_STATUSES])
    if completed and any_webhook(conn):
        by_status = counts(conn, [workflow.id for workflow in completed])
        rows = [
            {"workflow": workflow_document(w, by_status[w.id]), "tenant": w.tenant, "event_at": clock.fixed}
            for w in completed
        ]
        conn.execute(_workflow_events(conn.dialect.name, clock.fixed is not None), rows)


@functools.lru_cache(maxsize=4)
def _workflow_events(dialect: str, fixed_now: bool):
    """INSERT INTO jobs: a workflow.completed delivery of :workflow (its document, as JSON)
    to each webhook of its :tenant that wants the event (whatever its filters, which choose
    jobs), created at :event_at (or now())."""
    hook = webhooks
    event = literal(WebhookEvent.WORKFLOW_COMPLETED.value)
    given = bindparam("workflow", type_=JSON)
    if dialect == "postgresql":
        document = func.jsonb_build_object("webhook_id", hook.c.id, "event", event, "workflow", cast(given, JSONB))
    else:
        document = func.json_object("webhook_id", hook.c.id, "event", event, "workflow", func.json(given))
    now = bindparam("event_at", type_=UTCDateTime) if fixed_now else func.now()
    rows = select(
        _new_id(dialect),
        hook.c.tenant,
        literal(DELIVER_TYPE),
        literal(WEBHOOK_QUEUE),
        document,
        literal(0),
        literal(JobStatus.PENDING.value),
        literal(0),
        hook.c.max_retries,
        now,
        now,
        now,
    ).where(hook.c.tenant == bindparam("tenant"), _contains(hook.c.events, event, dialect))
    columns = ["id", "tenant", "type", "queue", "payload", "priority", "status", "attempts", "max_retries"]
    return insert(jobs).from_select([*columns, "run_at", "created_at", "updated_at"], rows)


def events_of(clock: Clock) -> Callable[[FromClause], Insert]:
    """PostgreSQL: the INSERT of the deliveries of the events an UPDATE of jobs caused, for
    one statement with that UPDATE (store.base.with_effects)."""
    return lambda changed: insert_events(changed, clock, "postgresql")


def insert_events(changed: FromClause, clock: Clock, dialect: str):
    """INSERT INTO jobs: one delivery per (changed job, webhook of its tenant wanting its
    event), where `changed` has the columns of jobs. Deliveries themselves announce nothing."""
    hook = webhooks
    event = (literal("job.") + changed.c.status).self_group()  # ? binds as tightly as ||
    # A tenant hears its own jobs only: the one term that keeps tenants' events apart.
    heard = (hook.c.tenant == changed.c.tenant) & _contains(hook.c.events, event, dialect)
    wanted = [
        changed.c.status.in_(sorted(status.value for status in EVENT_STATUSES)),
        changed.c.queue != WEBHOOK_QUEUE,
        or_(hook.c.queues.is_(None), _contains(hook.c.queues, changed.c.queue, dialect)),
        or_(hook.c.types.is_(None), _contains(hook.c.types, changed.c.type, dialect)),
    ]
    rows = select(
        _new_id(dialect),
        hook.c.tenant,
        literal(DELIVER_TYPE),
        literal(WEBHOOK_QUEUE),
        _payload(changed, hook.c.id, event, dialect),
        literal(0),
        literal(JobStatus.PENDING.value),
        literal(0),
        hook.c.max_retries,
        clock.now(),
        clock.now(),
        clock.now(),
    )
    rows = rows.select_from(changed.join(hook, heard)).where(*wanted)
    columns = ["id", "tenant", "type", "queue", "payload", "priority", "status", "attempts", "max_retries"]
    return insert(jobs).from_select([*columns, "run_at", "created_at", "updated_at"], rows)


def _new_id(dialect: str) -> ColumnElement:
    if dialect == "postgresql":
        return func.gen_random_uuid()
    return func.lower(func.hex(func.randomblob(16)))  # the form SQLite stores a Uuid in


def _contains(names, value, dialect: str) -> ColumnElement:
    """`value` is one of the JSON list `names`."""
    if dialect == "postgresql":
        return names.op("?", return_type=Boolean)(value)
    each = func.json_each(names).table_valued("value")
    return exists().select_from(each).where(each.c.value == value)


def _payload(changed: FromClause, webhook_id, event, dialect: str) -> ColumnElement:
    """{"webhook_id", "event", "job": the changed row, every column}."""
    if dialect == "postgresql":
        return func.jsonb_build_object(
            "webhook_id", webhook_id, "event", event, "job", func.to_jsonb(literal_column(changed.name))
        )
    fields = []
    for column in jobs.c:
        value = changed.c[column.name]
        if column.name in ("payload", "result"):
            value = func.json(value)  # embedded as JSON, not as a string of it
        fields += [literal(column.name), value]
    return func.json_object("webhook_id", webhook_id, "event", event, "job", func.json_object(*fields))
