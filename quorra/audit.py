"""The audit log's domain: who did what to which target, from where. Pure Python; the store
writes an entry inside the transaction of the action it records (quorra.store.audit), so
an action and its record commit or roll back together.

Adding an audited action is one line here (an ``Action``) and one argument where the
manager calls the store verb: ``audit=self._audit(actor, Action.X, target)``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from quorra.access import DEFAULT_TENANT, Principal

MAX_ACTOR_CHARS = 300
MAX_ACTOR_NAME_CHARS = 200
MAX_TARGET_CHARS = 300


class Action(str, enum.Enum):
    """Every operator action the log records, named `<noun>.<verb>`."""

    JOB_CANCEL = "job.cancel"
    JOB_RETRY = "job.retry"
    JOBS_RETRY_DEAD = "jobs.retry_dead"  # bulk retry of a queue's dead jobs
    JOBS_RETRY = "jobs.retry"  # bulk retry by filter (POST /v1/jobs/retry, the dashboard)
    JOBS_DELETE = "jobs.delete"  # bulk delete by filter
    JOB_DELETE = "job.delete"
    QUEUE_PAUSE = "queue.pause"
    QUEUE_RESUME = "queue.resume"
    QUEUE_LIMITS = "queue.limits"  # set or lift a queue's limits
    TENANT_LIMITS = "tenant.limits"  # set or lift a tenant's limits (installation admins)
    SCHEDULE_CREATE = "schedule.create"
    SCHEDULE_UPDATE = "schedule.update"
    SCHEDULE_DELETE = "schedule.delete"
    SCHEDULE_PAUSE = "schedule.pause"
    SCHEDULE_RESUME = "schedule.resume"
    WEBHOOK_CREATE = "webhook.create"
    WEBHOOK_DELETE = "webhook.delete"
    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"
    DASHBOARD_SIGNIN = "dashboard.signin"


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where: a principal plus the request it sent (REST), or a person
    at the server's own CLI."""

    subject: str  # key:<id>, env-key:<n>, jwt:<sub>, cli:<user>
    name: str | None = None
    tenant: str = DEFAULT_TENANT
    remote_addr: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, principal: Principal, *, remote_addr: str | None = None, request_id: str | None = None) -> Actor:
        return cls(principal.subject, principal.name, principal.tenant, remote_addr, request_id)


@dataclass(frozen=True)
class AuditEntry:
    """One action to record: what the store writes beside the action itself."""

    actor: Actor
    action: Action
    target: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def with_details(self, **more: Any) -> AuditEntry:
        """The entry with what only the action itself learned (a count, a name)."""
        return AuditEntry(self.actor, self.action, self.target, {**self.details, **more})

    def about(self, target: str, **more: Any) -> AuditEntry:
        """The entry naming its target, once the action knows it (a new key's id)."""
        return AuditEntry(self.actor, self.action, target, {**self.details, **more})

    def row(self) -> dict[str, Any]:
        """The audit_log columns, cut to their sizes (a long JWT subject must not fail an action)."""
        actor = self.actor
        return {
            "tenant": actor.tenant,
            "actor": actor.subject[:MAX_ACTOR_CHARS],
            "actor_name": None if actor.name is None else actor.name[:MAX_ACTOR_NAME_CHARS],
            "action": self.action.value,
            "target": None if self.target is None else self.target[:MAX_TARGET_CHARS],
            "remote_addr": actor.remote_addr,
            "request_id": actor.request_id,
            "details": dict(self.details) or None,
        }


@dataclass(frozen=True)
class AuditRecord:
    """One row of the log, as read back."""

    id: str
    occurred_at: datetime
    tenant: str
    actor: str
    actor_name: str | None
    action: str
    target: str | None
    remote_addr: str | None
    request_id: str | None
    details: dict[str, Any] | None


def audit_entry(actor: Actor | None, action: Action, target: str | None = None, **details: Any) -> AuditEntry | None:
    """The entry for an action, or None when no actor is known (an internal caller: the
    scheduler, a test); the edges always pass their actor."""
    return None if actor is None else AuditEntry(actor, action, target, details)
