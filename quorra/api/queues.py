"""/v1/queues: how many jobs each queue holds in each status (GoQuorra's statistics), and
per queue what an operator needs at a glance (paused, served by a worker, the oldest
waiting job, its limits); pause and resume a queue, set its limits."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from quorra.access import Permission
from quorra.api.auth import current_actor, current_tenant, require_api_key, requires
from quorra.api.body import read_json
from quorra.api.jobs import timestamp
from quorra.api.services import services
from quorra.api.workers import served_queues
from quorra.errors import InvalidArgument
from quorra.jobs import MAX_QUEUE_CHARS, is_valid_name
from quorra.limits import NO_LIMITS, LimitsSpec
from quorra.store import QueueState

bp = Blueprint("queues", __name__, url_prefix="/v1/queues")
bp.before_request(require_api_key)
MAX_BODY_BYTES = 4 * 1024  # two numbers and a word


@bp.get("")
@requires(Permission.JOBS_READ)
def queue_counts():
    store, tenant = services().store, current_tenant()
    counts = store.queue_counts(tenant=tenant)
    paused = store.paused_queues(tenant=tenant)
    limits = store.queue_limits(tenant=tenant)
    now = store.database_now()
    oldest = store.oldest_ready_at(tenant=tenant, now=now)
    served = served_queues(tenant)
    summary: dict[str, dict[str, Any]] = {}
    for name in sorted({c.queue for c in counts} | set(paused) | set(limits)):
        waited = (now - oldest[name]).total_seconds() if name in oldest else None
        summary[name] = {
            "queue": name,
            "counts": {},
            "is_paused": name in paused,
            "paused_at": timestamp(paused.get(name)),
            "has_workers": name in served,
            "oldest_ready_age_seconds": None if waited is None else round(max(0.0, waited), 3),
            "limits": limits.get(name, NO_LIMITS).as_json(),
        }
    for count in counts:
        summary[count.queue]["counts"][count.status] = count.count
    return {
        "queues": [{"queue": c.queue, "status": c.status, "count": c.count} for c in counts],
        "summary": list(summary.values()),
    }


@bp.post("/<queue>/pause")
@requires(Permission.QUEUES_MANAGE)
def pause(queue: str):
    return state_json(
        services().manager.pause_queue(_queue_name(queue), tenant=current_tenant(), actor=current_actor())
    )


@bp.post("/<queue>/resume")
@requires(Permission.QUEUES_MANAGE)
def resume(queue: str):
    return state_json(
        services().manager.resume_queue(_queue_name(queue), tenant=current_tenant(), actor=current_actor())
    )


@bp.put("/<queue>/limits")
@requires(Permission.QUEUES_MANAGE)
def set_limits(queue: str):
    """Replace the queue's limits: {"max_in_flight": int|null, "rate": {"limit", "per"}|null}."""
    limits = LimitsSpec.parse(read_json(MAX_BODY_BYTES))
    tenant = current_tenant()
    limits = services().manager.set_queue_limits(_queue_name(queue), limits, tenant=tenant, actor=current_actor())
    return {"queue": queue, "limits": limits.as_json()}


def _queue_name(queue: str) -> str:
    if not is_valid_name(queue, MAX_QUEUE_CHARS):
        raise InvalidArgument(
            "invalid queue name",
            details=[{"field": "queue", "message": "1-100 characters from A-Z a-z 0-9 _ . : -"}],
        )
    return queue


def state_json(state: QueueState) -> dict[str, Any]:
    return {"queue": state.queue, "is_paused": state.is_paused, "paused_at": timestamp(state.paused_at)}
