"""The tables, declared once for both dialects (PostgreSQL: uuid, jsonb, timestamptz;
SQLite: their portable stand-ins). Alembic migrations must match this metadata; a test
compares them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from quorra.jobs import HOLDING_LEASE, LEASABLE, STATUS_BITS, AttemptOutcome, JobStatus
from quorra.schedules import MissedTicks
from quorra.workflows import WorkflowStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator):
    """timestamptz on PostgreSQL; on SQLite a naive UTC text that reads back as aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Document = JSON().with_variant(JSONB(), "postgresql")


def _in(statuses) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(statuses, key=lambda s: s.value))


jobs = Table(
    "jobs",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    # Whose job it is (quorra.access: a key acts on its tenant's jobs only); "default" for
    # every job of a deployment that never names a tenant.
    Column("tenant", String(100), nullable=False, server_default=text("'default'")),
    Column("type", String(200), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("payload", Document, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_retries", Integer, nullable=False, server_default=text("3")),
    Column("run_at", UTCDateTime, nullable=False),
    Column("lease_id", Uuid(as_uuid=False)),
    Column("leased_by", String(200)),
    Column("leased_at", UTCDateTime),
    Column("lease_expires_at", UTCDateTime),
    Column("last_error", Text),
    Column("result", Document),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("timeout_seconds", Integer),  # NULL: no limit
    Column("schedule_id", Uuid(as_uuid=False)),  # the schedule that submitted it, if one did,
    Column("scheduled_for", UTCDateTime),  # for its tick at this time
    # Unique jobs: the slot's key (a sha256, see JobSpec.unique_key) and the states, as a
    # bitmask of STATUS_BITS, in which the job holds it. NULL for every other job.
    Column("unique_key", String(64)),
    Column("unique_states", SmallInteger),
    # Dependencies (job_dependencies holds the edges). A dependant counts its unmet parents
    # in pending_parents, decremented set-based as they settle; a parent's has_dependants
    # lets a settle skip the release statement when no settled job has dependants.
    Column("workflow_id", Uuid(as_uuid=False)),
    Column("ref", String(100)),
    Column("on_parent_failure", String(8)),
    Column("pending_parents", Integer),
    Column("has_dependants", Boolean, nullable=False, server_default=text("false")),
    Column("cancelled_by_parent", Uuid(as_uuid=False)),
    # The W3C trace context of the submit (quorra.jobs.TraceContext); NULL outside any trace.
    Column("traceparent", String(55)),
    Column("tracestate", String(512)),
    CheckConstraint(f"status IN ({_in(JobStatus)})", name="status"),
    CheckConstraint("attempts >= 0 AND max_retries >= 0", name="counts"),
)

# The lease query: waiting jobs of a queue and tenant, best first, walked one priority level
# at a time (leasing._ready_cte). Queue before tenant, so a lease for every tenant finds the
# tenants that have jobs in a queue by skipping through this index. Partial, so finished
# jobs cost nothing.
Index(
    "ix_jobs_ready",
    jobs.c.queue,
    jobs.c.tenant,
    jobs.c.priority.desc(),
    jobs.c.run_at,
    jobs.c.id,
    postgresql_where=text(f"status IN ({_in(LEASABLE)})"),
    sqlite_where=text(f"status IN ({_in(LEASABLE)})"),
)
# The scheduler's wake-ups: waiting jobs whose run_at fell in the last tick.
Index(
    "ix_jobs_due",
    jobs.c.run_at,
    postgresql_where=text(f"status IN ({_in(LEASABLE)})"),
    sqlite_where=text(f"status IN ({_in(LEASABLE)})"),
)
# The reaper: held leases by expiry (a tenant's jobs in flight are counted through it too,
# quorra.store.limits: an index of their own would cost every lease an insertion).
Index(
    "ix_jobs_lease_expiry",
    jobs.c.lease_expires_at,
    postgresql_where=text(f"status IN ({_in(HOLDING_LEASE)})"),
    sqlite_where=text(f"status IN ({_in(HOLDING_LEASE)})"),
)
# Unique jobs (River's approach): a job holds its slot while its status is one of its
# unique_states. The predicate follows the status by itself, so no transition has to touch
# the slot, and jobs without unique options (unique_key NULL) are never in the index.
_STATUS_BIT = " ".join(f"WHEN '{status.value}' THEN {bit}" for status, bit in STATUS_BITS.items())
UNIQUE_SLOT_HELD = f"unique_key IS NOT NULL AND (unique_states & CASE status {_STATUS_BIT} ELSE 0 END) <> 0"
Index(
    "ix_jobs_unique_key",
    jobs.c.unique_key,
    unique=True,
    postgresql_where=text(UNIQUE_SLOT_HELD),
    sqlite_where=text(UNIQUE_SLOT_HELD),
)
# Listing a tenant's jobs newest first (keyset pagination), optionally by queue or status,
# and counting its queues: every list is one tenant's, so the tenant leads (a small tenant's
# page is not found by walking past a big tenant's jobs).
Index("ix_jobs_tenant_created", jobs.c.tenant, jobs.c.created_at.desc(), jobs.c.id.desc())
Index("ix_jobs_tenant_queue_status", jobs.c.tenant, jobs.c.queue, jobs.c.status)
# Pruning finished jobs by age.
Index(
    "ix_jobs_finished",
    jobs.c.finished_at,
    postgresql_where=text("finished_at IS NOT NULL"),
    sqlite_where=text("finished_at IS NOT NULL"),
)
# The jobs of a workflow.
Index(
    "ix_jobs_workflow_id",
    jobs.c.workflow_id,
    postgresql_where=text("workflow_id IS NOT NULL"),
    sqlite_where=text("workflow_id IS NOT NULL"),
)
# One job per schedule tick, whoever fires it (a leader replaced mid-tick cannot fire it twice).
Index("ix_jobs_schedule_tick", jobs.c.schedule_id, jobs.c.scheduled_for, unique=True)


# The edges of the dependency graph: job_id waits for parent_id. Read both ways: a job's
# parents (the primary key) and a settled parent's dependants (ix_job_dependencies_parent_id).
# No foreign keys: pruning removes a job's edges with it.
job_dependencies = Table(
    "job_dependencies",
    metadata,
    Column("job_id", Uuid(as_uuid=False), nullable=False),
    Column("parent_id", Uuid(as_uuid=False), nullable=False),
    PrimaryKeyConstraint("job_id", "parent_id"),
)
Index(
    "ix_job_dependencies_parent_id",
    job_dependencies.c.parent_id,
    job_dependencies.c.job_id,
)

# A workflow: jobs submitted together (POST /v1/workflows). Its live status is counted from
# its jobs; status and finished_at record its completion, set once by the transaction that
# finished its last job (the workflow.completed moment), cleared when one of them is retried.
workflows = Table(
    "workflows",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    Column("tenant", String(100), nullable=False, server_default=text("'default'")),
    Column("name", String(200)),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    CheckConstraint(f"status IN ({_in(WorkflowStatus)})", name="status"),
)


schedules = Table(
    "schedules",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    Column("tenant", String(100), nullable=False, server_default=text("'default'")),
    Column("name", String(200), nullable=False),
    Column("cron", String(200)),
    Column("interval_seconds", Integer),
    Column("timezone", String(64), nullable=False, server_default=text("'UTC'")),
    Column("job_type", String(200), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("payload", Document, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("max_retries", Integer, nullable=False, server_default=text("3")),
    Column("timeout_seconds", Integer),
    Column("missed_ticks", String(16), nullable=False, server_default=text("'skip'")),
    Column("is_paused", Boolean, nullable=False, server_default=text("false")),
    Column("next_run_at", UTCDateTime, nullable=False),
    Column("last_run_at", UTCDateTime),
    Column("last_job_id", Uuid(as_uuid=False)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("(cron IS NULL) <> (interval_seconds IS NULL)", name="timing"),
    CheckConstraint(f"missed_ticks IN ({_in(MissedTicks)})", name="missed_ticks"),
    UniqueConstraint("tenant", "name"),  # a schedule's name is its handle within its tenant
)
# The leader's question every tick: which schedules are due?
Index(
    "ix_schedules_due",
    schedules.c.next_run_at,
    postgresql_where=text("NOT is_paused"),
    sqlite_where=text("NOT is_paused"),
)


# Attempt history: one row per attempt that ended (succeeded, failed, expired, cancelled),
# written by the statement (PostgreSQL) or transaction (SQLite) that ended it. The attempt
# in flight is the job row itself (lease_id, leased_by, leased_at), so a lease writes nothing
# here. No foreign key: deleting jobs deletes their attempts in the same statement.
job_attempts = Table(
    "job_attempts",
    metadata,
    Column("lease_id", Uuid(as_uuid=False), primary_key=True),
    Column("job_id", Uuid(as_uuid=False), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("tenant", String(100), nullable=False, server_default=text("'default'")),
    Column("queue", String(100), nullable=False),
    Column("worker_id", String(200)),
    Column("leased_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("error", Text),
    CheckConstraint(f"outcome IN ({_in(AttemptOutcome)})", name="outcome"),
)
Index("ix_job_attempts_job_id", job_attempts.c.job_id)
# Throughput per queue and minute (GET /v1/stats/throughput): a range of this index, read alone.
Index(
    "ix_job_attempts_finished",
    job_attempts.c.finished_at,
    job_attempts.c.tenant,
    job_attempts.c.queue,
    job_attempts.c.outcome,
)


# Workers as the gRPC servers see them: upserted at most every few seconds per worker from
# its leases and heartbeats (quorra.rpc.sightings), read by GET /v1/workers. queues and
# handlers are JSON lists, NULL until the worker said (a heartbeat does not).
workers = Table(
    "workers",
    metadata,
    Column("id", String(200), nullable=False),
    # The tenant of the worker's key ("*": a fleet worker, serving every tenant). A worker id
    # is named within its tenant: two tenants' workers called "w1" are two workers.
    Column("tenant", String(100), nullable=False, server_default=text("'default'")),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("queues", Document),
    Column("handlers", Document),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("tenant", "id"),
)
Index("ix_workers_last_seen_at", workers.c.last_seen_at)


def limit_columns() -> list[Column]:
    """A queue's or a tenant's limits (NULL: none) and its rate's token bucket: the tokens
    it held at rate_refilled_at (NULL: full). A lease with limits locks the row and reads
    them (quorra.store.limits)."""
    return [
        Column("max_in_flight", Integer),
        Column("rate_limit", Integer),
        Column("rate_period_seconds", Integer),
        Column("rate_tokens", Float),
        Column("rate_refilled_at", UTCDateTime),
    ]


# What an operator set on a tenant's queue (a queue is named within its tenant). A queue
# without a row has the defaults (not paused); the lease reads this table by primary key,
# once per queue it names, so a pause holds fleet-wide.
queues = Table(
    "queues",
    metadata,
    Column("tenant", String(100), nullable=False, server_default=text("'default'")),
    Column("name", String(100), nullable=False),
    Column("is_paused", Boolean, nullable=False, server_default=text("false")),
    Column("paused_at", UTCDateTime),
    *limit_columns(),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("tenant", "name"),
)

# What an installation admin set on a tenant as a whole: its limits over all its queues
# together (quorra.limits). A tenant without a row is unlimited.
tenants = Table(
    "tenants",
    metadata,
    Column("name", String(100), primary_key=True),
    *limit_columns(),
    Column("updated_at", UTCDateTime, nullable=False),
)


# Idempotent submission: one row per (scope, key) for QUORRA_IDEMPOTENCY_TTL, written in the
# transaction that creates the job. scope is the sha256 of the API key that sent the request
# (room for a tenant id later). No foreign key: the row decides the answer to a retry even
# if the job were gone; pruning keeps a job while a key names it (ix_idempotency_keys_job_id).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(64), nullable=False, server_default=text("''")),
    Column("key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("job_id", Uuid(as_uuid=False), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("scope", "key"),
)
Index("ix_idempotency_keys_expires_at", idempotency_keys.c.expires_at)
Index("ix_idempotency_keys_job_id", idempotency_keys.c.job_id)


# Webhooks (quorra.webhooks): where the events of jobs are posted. Their deliveries are jobs
# of the queue quorra.webhooks, inserted in the transaction of the change they announce
# (quorra/store/webhooks.py). events, queues and types are JSON lists of names (queues and
# types NULL: every one). The secret signs each delivery, so it is kept as given.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    Column("tenant", String(100), nullable=False, server_default=text("'default'")),
    Column("url", Text, nullable=False),
    Column("events", Document, nullable=False),
    Column("queues", Document),
    Column("types", Document),
    Column("description", Text),
    Column("secret", String(100), nullable=False),
    Column("max_retries", Integer, nullable=False, server_default=text("10")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)


# Managed API keys (quorra.keys): a key is shown once, at creation; only its keyed hash is
# kept. `prefix` finds the row (unique) and is what people see in lists and logs. A key is
# never deleted, only revoked (revoked_at), so the audit log's actors stay resolvable.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("hash", String(64), nullable=False),
    Column("role", String(32), nullable=False),
    Column("tenant", String(100), nullable=False, server_default=text("'default'")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(300), nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("expires_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
)


# The audit log (quorra.audit): one row per operator action, inserted in the transaction of
# the action itself. Rows are only ever inserted, listed and pruned after
# QUORRA_AUDIT_RETENTION; no route updates or deletes one.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("tenant", String(100), nullable=False, server_default=text("'default'")),
    Column("actor", String(300), nullable=False),  # the principal's subject: key:<id>, jwt:<sub>, cli:<user>
    Column("actor_name", String(200)),
    Column("action", String(64), nullable=False),
    Column("target", String(300)),
    Column("remote_addr", String(64)),
    Column("request_id", String(128)),
    Column("details", Document),
)
# GET /v1/audit: newest first (keyset), optionally by action, actor or target; pruning by age.
Index("ix_audit_log_occurred", audit_log.c.occurred_at.desc(), audit_log.c.id.desc())
Index("ix_audit_log_action", audit_log.c.action, audit_log.c.occurred_at.desc())
Index("ix_audit_log_actor", audit_log.c.actor, audit_log.c.occurred_at.desc())
Index("ix_audit_log_target", audit_log.c.target, audit_log.c.occurred_at.desc())
