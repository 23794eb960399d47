"""/v1/workers: the workers the gRPC servers saw lately, with the jobs each holds now."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, request
from pydantic import BaseModel, ConfigDict, Field

from quorra.access import Permission
from quorra.api.auth import current_tenant, require_api_key, requires
from quorra.api.jobs import parse_query, timestamp
from quorra.api.services import services
from quorra.store import Worker

bp = Blueprint("workers", __name__, url_prefix="/v1/workers")
bp.before_request(require_api_key)

DEFAULT_SEEN_MINUTES = 5
MAX_SEEN_MINUTES = 1440  # the scheduler forgets workers a day after they were last seen
# A queue counts as served (has_workers in GET /v1/queues) when a worker that leases from it
# was seen this recently: a live worker is seen at least on every long poll or heartbeat.
ACTIVE_WORKER_SECONDS = 120


class WorkersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    minutes: int = Field(DEFAULT_SEEN_MINUTES, ge=1, le=MAX_SEEN_MINUTES)


@bp.get("")
@requires(Permission.JOBS_READ)
def list_workers():
    query = parse_query(WorkersQuery, request.args)
    store = services().store
    since = store.database_now() - timedelta(minutes=query.minutes)
    seen = store.recent_workers(since, tenant=current_tenant())
    return {"workers": [worker_json(worker) for worker in seen], "seen_since": timestamp(since)}


def worker_json(worker: Worker) -> dict[str, Any]:
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "queues": worker.queues,
        "handlers": worker.handlers,
        "jobs_in_flight": worker.jobs_in_flight,
        "first_seen_at": timestamp(worker.first_seen_at),
        "last_seen_at": timestamp(worker.last_seen_at),
    }


def served_queues(tenant: str) -> set[str]:
    """The queues of `tenant` some worker (its own, or a fleet worker) leased from in the
    last ACTIVE_WORKER_SECONDS."""
    store = services().store
    since = store.database_now() - timedelta(seconds=ACTIVE_WORKER_SECONDS)
    return store.queues_served_since(since, tenant=tenant)
