"""/healthz: the process is alive. /readyz: it can do its work, which needs the database.
Redis (when REDIS_URL is set) is checked and reported too, but only as `degraded`: without
it wake-ups fall back to LISTEN/NOTIFY or polling and jobs keep flowing, so a load balancer
must not take the web out of rotation for it. Neither route needs an API key."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint

from quorra.api.errors import error_response
from quorra.api.services import Services, services
from quorra.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

OK = "ok"
UNREACHABLE = "cannot be reached"
REQUIRED = ("database",)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": OK}


@bp.get("/readyz")
def readyz():
    checks = readiness(services())
    failing = sorted(name for name, result in checks.items() if result != OK)
    if any(name in REQUIRED for name in failing):
        return error_response("unavailable", f"not ready: {', '.join(failing)} {UNREACHABLE}", checks)
    return {"status": "degraded" if failing else "ready", "checks": checks}


def readiness(svc: Services) -> dict[str, str]:
    checks = {"database": _database(svc)}
    if svc.redis is not None:
        checks["redis"] = _redis(svc.redis)
    return checks


def _database(svc: Services) -> str:
    try:
        svc.store.ping()
    except DatabaseUnavailable:
        return UNREACHABLE
    return OK


def _redis(client: redis.Redis) -> str:
    try:
        client.ping()
    except redis.RedisError as exc:
        logger.warning("redis unavailable", extra={"event": "redis.unavailable", "error": str(exc)[:500]})
        return UNREACHABLE
    return OK
