"""The job store: every SQL statement Quorra runs lives in this package, one public method
per protocol verb (enqueue, lease_jobs, extend_lease, ack, nack, settle_many, release,
cancel, retry, reap_expired_leases, prune, ...), one module per kind of verb.

Every transition is one guarded UPDATE (``WHERE id = :id AND status IN (...)``, plus the
lease id for a worker's verbs); zero rows raises a distinct error, never a silent
success. The state rules come from ``quorra.jobs``. PostgreSQL leases with
``FOR UPDATE SKIP LOCKED``; SQLite runs the same statements inside ``BEGIN IMMEDIATE``
(see ``quorra.db``).

Time: on PostgreSQL the database clock (``now()``), so every host agrees; on SQLite,
embedded on one host, the process clock. Methods that depend on time take an optional
``now`` so tests move time instead of sleeping.
"""

from __future__ import annotations

from quorra.store.admin import Admin
from quorra.store.attempts import Attempt, Attempts
from quorra.store.audit import AuditFilter, AuditLog, AuditPage
from quorra.store.base import (
    LEASE_EXPIRED,
    MAX_ERROR_CHARS,
    MAX_LIST_LIMIT,
    READY,
    SCHEDULED,
    Effects,
    JobFilter,
    JobPage,
    ListPosition,
    Outcome,
    QueueCount,
    Settlement,
    SettleOutcome,
    SettleResult,
    Submitted,
    utcnow,
)
from quorra.store.keys import ApiKeys
from quorra.store.leasing import Leasing
from quorra.store.limits import KnownLimits, LimitSettings
from quorra.store.queues import Queues, QueueState
from quorra.store.reading import Reading, WorkflowView
from quorra.store.schedules import FiredTick, Schedules
from quorra.store.settling import Settling
from quorra.store.stats import MinuteCount, Stats
from quorra.store.submitting import Submitting
from quorra.store.webhooks import WebhookNotFound, Webhooks
from quorra.store.workers import Worker, Workers, WorkerSighting


class Store(
    Submitting,
    Leasing,
    LimitSettings,
    Settling,
    Admin,
    Reading,
    Schedules,
    Queues,
    Attempts,
    Workers,
    Stats,
    Webhooks,
    ApiKeys,
    AuditLog,
):
    """Jobs in one SQL database. Thread-safe: each call takes its own connection."""


__all__ = [
    "LEASE_EXPIRED",
    "MAX_ERROR_CHARS",
    "MAX_LIST_LIMIT",
    "READY",
    "SCHEDULED",
    "Attempt",
    "AuditFilter",
    "AuditPage",
    "Effects",
    "FiredTick",
    "JobFilter",
    "JobPage",
    "KnownLimits",
    "ListPosition",
    "MinuteCount",
    "Outcome",
    "QueueCount",
    "QueueState",
    "SettleOutcome",
    "SettleResult",
    "Settlement",
    "Store",
    "Submitted",
    "WebhookNotFound",
    "Worker",
    "WorkerSighting",
    "WorkflowView",
    "utcnow",
]
