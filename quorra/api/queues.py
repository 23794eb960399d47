"""/v1/queues: how many jobs each queue holds in each status (GoQuorra's statistics)."""

from __future__ import annotations

from flask import Blueprint

from quorra.access import Permission
from quorra.api.auth import require_api_key, requires
from quorra.api.services import services

bp = Blueprint("queues", __name__, url_prefix="/v1/queues")
bp.before_request(require_api_key)


@bp.get("")
@requires(Permission.JOBS_READ)
def queue_counts():
    counts = services().store.queue_counts()
    return {"queues": [{"queue": c.queue, "status": c.status, "count": c.count} for c in counts]}
