"""The OpenAPI description of rate and concurrency limits: PUT /v1/queues/{queue}/limits and
/v1/tenants/{tenant}/limits. Kept beside openapi.py, which merges these into the document."""

from __future__ import annotations

from typing import Any

from quorra.api.openapi import _NAME, _QUEUE, _object, _ref, _responses
from quorra.jobs import MAX_QUEUE_CHARS
from quorra.limits import MAX_LIMIT, PERIOD_SECONDS

_TENANT = {"name": "tenant", "in": "path", "required": True, "schema": {**_NAME, "maxLength": MAX_QUEUE_CHARS}}
_RULES = (
    "Enforced fleet-wide inside the lease transaction. max_in_flight counts jobs leased or processing; "
    "rate is a token bucket that holds a tenth of the limit (at least 1): after a quiet spell that many "
    "jobs start at once, then they start at the rate. The body replaces both limits; a field left out or "
    "null lifts that limit."
)


def limits_paths() -> dict[str, Any]:
    body = {"required": True, "content": {"application/json": {"schema": _ref("Limits")}}}
    queue_set = _responses(200, _ref("QueueLimits"), "The queue's limits now", 400, 401, 413, 415, 503)
    tenant_set = _responses(200, _ref("TenantLimits"), "The tenant's limits now", 400, 401, 404, 413, 415, 503)
    tenant_got = _responses(200, _ref("TenantLimits"), "The tenant's limits", 400, 401, 404, 503)
    for answers in (tenant_set, tenant_got):
        answers["404"]["description"] = "Another tenant than the caller's (to all but the installation's admins)"
    return {
        "/v1/queues/{queue}/limits": {
            "put": {
                "summary": "Set or lift a queue's limits (max_in_flight, rate)",
                "description": _RULES + " Audited as queue.limits.",
                "operationId": "setQueueLimits",
                "parameters": [_QUEUE],
                "requestBody": body,
                "responses": queue_set,
            }
        },
        "/v1/tenants/{tenant}/limits": {
            "get": {
                "summary": "A tenant's limits over all its queues together",
                "operationId": "getTenantLimits",
                "parameters": [_TENANT],
                "responses": tenant_got,
            },
            "put": {
                "summary": "Set or lift a tenant's limits over all its queues together (installation admins)",
                "description": _RULES
                + " Only the admins of the default tenant (the installation's) may; anybody else gets a 403. "
                "Audited as tenant.limits.",
                "operationId": "setTenantLimits",
                "parameters": [_TENANT],
                "requestBody": body,
                "responses": tenant_set,
            },
        },
    }


def limits_schemas() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
    rate = {
        "type": "object",
        "required": ["limit", "per"],
        "additionalProperties": False,
        "properties": {"limit": count, "per": {"enum": list(PERIOD_SECONDS)}},
    }
    limits = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "max_in_flight": {**count, "type": ["integer", "null"], "description": "Jobs leased or processing at once"},
            "rate": {"oneOf": [rate, {"type": "null"}], "description": "Jobs started per second or minute"},
        },
    }
    return {
        "Limits": limits,
        "QueueLimits": _object({"queue": {"type": "string"}, "limits": _ref("Limits")}),
        "TenantLimits": _object({"tenant": {"type": "string"}, "limits": _ref("Limits")}),
    }
