"""/v1/stats: figures for the dashboard's overview, from the database (they survive
restarts): attempts succeeded and failed per queue and minute."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, request
from pydantic import BaseModel, ConfigDict, Field

from quorra.access import Permission
from quorra.api.auth import current_tenant, require_api_key, requires
from quorra.api.jobs import parse_query, timestamp
from quorra.api.services import services
from quorra.jobs import QueueName
from quorra.store import MinuteCount

bp = Blueprint("stats", __name__, url_prefix="/v1/stats")
bp.before_request(require_api_key)

DEFAULT_MINUTES = 60
MAX_MINUTES = 1440


class ThroughputQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    minutes: int = Field(DEFAULT_MINUTES, ge=1, le=MAX_MINUTES)
    queue: QueueName | None = None


@bp.get("/throughput")
@requires(Permission.JOBS_READ)
def throughput():
    """One point per minute (the current one last, still counting) for each queue that
    finished an attempt in the window; minutes without any are zeros."""
    query = parse_query(ThroughputQuery, request.args)
    store = services().store
    until = store.database_now().replace(second=0, microsecond=0)
    since = until - timedelta(minutes=query.minutes - 1)
    counts = store.throughput(since, queue=query.queue, tenant=current_tenant())
    return {
        "minutes": query.minutes,
        "since": timestamp(since),
        "until": timestamp(until),
        "queues": [_series(queue, since, query.minutes, counts) for queue in sorted({c.queue for c in counts})],
    }


def _series(queue: str, since: datetime, minutes: int, counts: list[MinuteCount]) -> dict[str, Any]:
    by_minute = {count.minute: count for count in counts if count.queue == queue}
    points = []
    for n in range(minutes):
        minute = since + timedelta(minutes=n)
        count = by_minute.get(minute)
        succeeded, failed = (count.succeeded, count.failed) if count else (0, 0)
        points.append({"minute": timestamp(minute), "succeeded": succeeded, "failed": failed})
    return {"queue": queue, "points": points}
