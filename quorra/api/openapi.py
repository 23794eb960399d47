"""GET /openapi.json: the OpenAPI 3.1 description of every route. The job body schema is
generated from ``JobSpec``, the model that validates it, so the two cannot drift apart."""

from __future__ import annotations

import functools
from typing import Any

from flask import Blueprint

from quorra import __version__
from quorra.api.cursor import MAC_BYTES
from quorra.api.errors import STATUS_BY_CODE
from quorra.api.jobs import (
    BATCH_BODY_FACTOR,
    BODIES,
    IDEMPOTENCY_KEY_HEADER,
    LIST_STATUSES,
    MAX_BATCH_KEY_CHARS,
    MAX_SEARCH_CHARS,
    REPLAYED_HEADER,
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    DeleteFilter,
    RetryFilter,
)
from quorra.api.stats import DEFAULT_MINUTES as DEFAULT_STATS_MINUTES
from quorra.api.stats import MAX_MINUTES as MAX_STATS_MINUTES
from quorra.api.waits import MAX_WAIT_SECONDS
from quorra.api.workers import ACTIVE_WORKER_SECONDS, DEFAULT_SEEN_MINUTES, MAX_SEEN_MINUTES
from quorra.durations import DURATION_PATTERN
from quorra.jobs import (
    IDEMPOTENCY_KEY_PATTERN,
    LIVE,
    MAX_BATCH_SIZE,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_PAYLOAD_DEPTH,
    MAX_QUEUE_CHARS,
    MAX_TYPE_CHARS,
    NAME_PATTERN,
    AttemptOutcome,
    JobSpec,
    JobStatus,
)
from quorra.schedules import CRON_PATTERN, MAX_INTERVAL_SECONDS, MAX_NAME_CHARS, JobTemplate, MissedTicks, zone_names
from quorra.store import MAX_LIST_LIMIT
from quorra.webhooks import MAX_DESCRIPTION_CHARS, MAX_URL_CHARS, WebhookEvent, WebhookSpec
from quorra.workflows import MAX_WORKFLOW_NAME_CHARS, WorkflowJob, WorkflowStatus

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_json():
    return spec()


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_DESCRIPTIONS = {
    400: "Invalid request (the error details name each bad field)",
    401: "Missing or invalid credential (X-API-Key, or a bearer token: the message says what is wrong with it)",
    403: "The key's role lacks the permission this needs (the error details name it)",
    404: (
        "No such job (or schedule, workflow or webhook) of the caller's tenant: another tenant's id is "
        "answered exactly as a missing one"
    ),
    409: "The job's status does not allow this (or: a schedule of that name exists)",
    413: "Request body too large",
    415: "The body is not application/json",
    503: "The database cannot be reached (or, for a wait, too many waits: see Retry-After)",
}


def _error_responses(*errors: int) -> dict[str, Any]:
    return {str(status): _json(_ref("Error"), _ERROR_DESCRIPTIONS[status]) for status in errors}


def _responses(ok: int, schema: dict[str, Any], description: str, *errors: int) -> dict[str, Any]:
    responses = {str(ok): _json(schema, description)}
    # Every authenticated operation may also be refused to a role that lacks its permission.
    for status in sorted({*errors, 403} if 401 in errors else set(errors)):
        responses[str(status)] = _json(_ref("Error"), _ERROR_DESCRIPTIONS[status])
    return responses


_WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "pattern": DURATION_PATTERN},
    "description": (
        "Hold the answer until the job is succeeded, dead or cancelled, or until this much time "
        f"has passed (30s, 500ms, 1m or seconds; at most {MAX_WAIT_SECONDS:g} s, longer waits are cut "
        "to it). Each web process holds a bounded number of waits; beyond it the answer is a 503 "
        "with Retry-After, and the client should poll."
    ),
}
_WAIT_ANSWER = "The job: finished, or as it is when the wait ended"
_INCLUDE_ATTEMPTS = {
    "name": "include",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["attempts_history"]},
    "description": "attempts_history: add the job's attempts, as GET /v1/jobs/{job_id}/attempts lists them",
}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_NAME = {"type": "string", "minLength": 1, "pattern": NAME_PATTERN}


def _list_parameters() -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    return [
        query("queue", {**_NAME, "maxLength": MAX_QUEUE_CHARS}, "Only jobs of this queue"),
        query(
            "status",
            {"type": "string", "enum": list(LIST_STATUSES)},
            "Only jobs in this status; scheduled: pending with run_at still to come; ready: pending and due",
        ),
        query("type", {**_NAME, "maxLength": MAX_TYPE_CHARS}, "Only jobs of this type"),
        query("created_from", {"type": "string", "format": "date-time"}, "Only jobs created at or after this time"),
        query("created_to", {"type": "string", "format": "date-time"}, "Only jobs created before this time"),
        query("id", {"type": "string", "format": "uuid"}, "Only the job with this id"),
        query(
            "payload_contains",
            {"type": "string", "minLength": 1, "maxLength": MAX_SEARCH_CHARS, "pattern": "^[^\\u0000]*$"},
            "Only jobs whose payload, as JSON text, holds this text (case-insensitive; % and _ are plain "
            "characters). It reads each payload the other filters leave: add a queue or a time range on big tables.",
        ),
        query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": 50}, "Page size"),
        query("cursor", {"type": "string", "minLength": 1, "maxLength": 500}, _CURSOR),
        {**query("include", _INCLUDE, _INCLUDE_TEXT), "style": "form", "explode": False},
    ]


_CURSOR = (
    "The next_cursor of the previous page, exactly as returned (an opaque token, signed by the "
    f"server with a {MAC_BYTES * 8}-bit HMAC). Any other value is a 400."
)
_INCLUDE = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string", "enum": list(BODIES)}}
_INCLUDE_TEXT = (
    "Comma list of the bodies to return with each job (payload, result); left out by default. "
    "With bodies, a page also ends early once their JSON reaches QUORRA_LIST_MAX_BYTES "
    "(at least one job per page); next_cursor continues from there."
)


def _job_actions() -> dict[str, Any]:
    def action(summary: str, operation_id: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "operationId": operation_id,
                "parameters": [_JOB_ID],
                "responses": _responses(200, _ref("Job"), "The job after the change", 401, 404, 409, 503),
            }
        }

    return {
        "/v1/jobs/{job_id}/cancel": action("Cancel a pending, failed, leased or processing job", "cancelJob"),
        "/v1/jobs/{job_id}/retry": action("Put a dead, failed or cancelled job back in line now", "retryJob"),
    }


def _idempotency_key_header(max_chars: int, description: str) -> dict[str, Any]:
    schema = {"type": "string", "minLength": 1, "maxLength": max_chars, "pattern": IDEMPOTENCY_KEY_PATTERN}
    return {
        "name": IDEMPOTENCY_KEY_HEADER,
        "in": "header",
        "required": False,
        "schema": schema,
        "description": description,
    }


_SINGLE_KEY = (
    "A retry with the same key and the same job returns the job the first try created (200, "
    f"{REPLAYED_HEADER}: true); the same key with another job is a 409. Kept for QUORRA_IDEMPOTENCY_TTL, "
    "per API key."
)
_BATCH_KEY = (
    'Gives each job without an idempotency_key of its own the key "<this key>:<index in the batch>"; see createJob.'
)


# W3C Trace Context. Any text is taken: as the W3C rules ask, one that is not a valid
# version 00 traceparent (or a later version's) is ignored rather than refused.
_TRACE_HEADERS = [
    {
        "name": TRACEPARENT_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": (
            "W3C Trace Context (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>): the trace the job was "
            "submitted in. Each job created keeps it (the submit span's, when the server traces) and the "
            "worker runs the handler in a span related to it: a child for a job due at once, a link for a "
            "delayed job or a retry. Ignored when invalid."
        ),
    },
    {
        "name": TRACESTATE_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "W3C Trace Context vendor data, kept with the traceparent (at most 512 characters).",
    },
]


def _submit_responses(schema: dict[str, Any], created: str, existing: str) -> dict[str, Any]:
    replayed = {
        REPLAYED_HEADER: {
            "description": "true when the answer is a replay under the same Idempotency-Key",
            "schema": {"type": "string", "const": "true"},
        }
    }
    responses = _responses(201, schema, created, 400, 401, 409, 413, 415, 503)
    responses["200"] = {**_json(schema, existing), "headers": replayed}
    responses["409"]["description"] = "The idempotency key was used for a different job"
    return dict(sorted(responses.items()))


def _job_paths() -> dict[str, Any]:
    return {
        "/v1/jobs": {
            "post": {
                "summary": "Create a job",
                "operationId": "createJob",
                "parameters": [_idempotency_key_header(MAX_IDEMPOTENCY_KEY_CHARS, _SINGLE_KEY), *_TRACE_HEADERS],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("JobSpec")}}},
                "responses": _submit_responses(
                    _ref("JobCreated"),
                    "The job was created",
                    "An existing job: the first try's (same Idempotency-Key) or the unique job's holder",
                ),
            },
            "delete": {
                "summary": "Delete every finished job of a queue matching the filter, with its attempts, in one statement",
                "description": "The idempotency keys that name a deleted job go with it.",
                "operationId": "deleteJobs",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("DeleteFilter")}}},
                "responses": _responses(
                    200, _ref("DeleteCount"), "How many jobs were deleted", 400, 401, 413, 415, 503
                ),
            },
            "get": {
                "summary": "List jobs, newest first (keyset pagination)",
                "operationId": "listJobs",
                "parameters": _list_parameters(),
                "responses": _responses(200, _ref("JobList"), "One page of jobs", 400, 401, 503),
            },
        },
        "/v1/jobs/batch": {
            "post": {
                "summary": f"Create up to {MAX_BATCH_SIZE} jobs at once: all of them or none",
                "description": f"The body may be up to {BATCH_BODY_FACTOR} x QUORRA_MAX_PAYLOAD_BYTES.",
                "operationId": "createJobs",
                "parameters": [_idempotency_key_header(MAX_BATCH_KEY_CHARS, _BATCH_KEY), *_TRACE_HEADERS],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("JobBatch")}}},
                "responses": _submit_responses(
                    _ref("JobBatchCreated"),
                    "At least one job was created (each job's outcome says which)",
                    "No job was created: each is a replay or a unique job's holder",
                ),
            }
        },
        "/v1/jobs/retry": {
            "post": {
                "summary": "Put every job of a queue matching the filter (dead by default) back in line, in one statement",
                "operationId": "retryDeadJobs",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RetryFilter")}}},
                "responses": _responses(200, _ref("RetryCount"), "How many jobs were retried", 400, 401, 413, 415, 503),
            }
        },
        "/v1/jobs/{job_id}": {
            "delete": {
                "summary": "Delete a finished job (succeeded, dead or cancelled) with its attempts",
                "operationId": "deleteJob",
                "parameters": [_JOB_ID],
                "responses": {
                    "204": {"description": "Deleted"},
                    **_error_responses(401, 404, 503),
                    "409": _json(_ref("Error"), "The job has not finished: cancel it first"),
                },
            },
            "get": {
                "summary": "Read a job; with wait, once it has finished (a long poll)",
                "operationId": "getJob",
                "parameters": [_JOB_ID, _WAIT, _INCLUDE_ATTEMPTS],
                "responses": _responses(200, _ref("JobDetail"), _WAIT_ANSWER, 400, 401, 404, 503),
            },
        },
        "/v1/jobs/{job_id}/attempts": {
            "get": {
                "summary": "Every attempt of a job, oldest first; the one running, if any, last",
                "operationId": "getJobAttempts",
                "parameters": [_JOB_ID],
                "responses": _responses(200, _ref("AttemptList"), "The attempts", 401, 404, 503),
            }
        },
        **_job_actions(),
    }


def _workflow_paths() -> dict[str, Any]:
    workflow_id = {
        "name": "workflow_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    return {
        "/v1/workflows": {
            "post": {
                "summary": f"Create a workflow: up to {MAX_BATCH_SIZE} jobs that depend on each other by ref, all or none",
                "description": (
                    "Each job's depends_on names refs of this workflow or ids of existing jobs. A cycle, an unknown "
                    "ref or an unknown job id is a 400 naming it, and nothing is created. "
                    f"The body may be up to {BATCH_BODY_FACTOR} x QUORRA_MAX_PAYLOAD_BYTES."
                ),
                "operationId": "createWorkflow",
                "parameters": _TRACE_HEADERS,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("WorkflowSpec")}}},
                "responses": _responses(
                    201, _ref("WorkflowCreated"), "The workflow and its jobs were created", 400, 401, 413, 415, 503
                ),
            }
        },
        "/v1/workflows/{workflow_id}": {
            "get": {
                "summary": "The status of a workflow as a whole, its counts by status and its jobs",
                "operationId": "getWorkflow",
                "parameters": [workflow_id],
                "responses": _responses(200, _ref("Workflow"), "The workflow", 401, 404, 503),
            }
        },
    }


def _workflow_schemas() -> dict[str, Any]:
    job = WorkflowJob.model_json_schema(ref_template="#/components/schemas/{model}")
    job.pop("$defs", None)
    for refused in ("idempotency_key", "unique"):
        job["properties"].pop(refused)
    job["properties"]["payload"] = _submission_schemas()["JobSpec"]["properties"]["payload"]
    job["properties"]["depends_on"]["description"] = "Refs of jobs of this workflow, or ids of existing jobs"
    job["description"] = "A job of a workflow: a job (see JobSpec) with a ref, its name in the workflow"
    status = {"type": "string", "enum": [status.value for status in WorkflowStatus]}
    fields = {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": ["string", "null"]},
        "status": status,
        "created_at": _timestamp(),
        "finished_at": _timestamp(nullable=True),
    }
    created_job = _object_of("id", {"type": "string", "format": "uuid"})
    created_job["properties"]["status"] = _ref("JobStatus")
    counts = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}}
    jobs = {"type": "array", "items": _job_list_item_schema()}
    return {
        "WorkflowJob": job,
        "WorkflowSpec": {
            "type": "object",
            "required": ["jobs"],
            "additionalProperties": False,
            "properties": {
                "name": {
                    **_STORABLE_TEXT,
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": MAX_WORKFLOW_NAME_CHARS,
                },
                "jobs": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_SIZE, "items": _ref("WorkflowJob")},
            },
        },
        "WorkflowCreated": {
            "type": "object",
            "required": [*fields, "jobs"],
            "properties": {
                **fields,
                "jobs": {
                    "type": "object",
                    "description": "Each job's id and status, by ref",
                    "additionalProperties": created_job,
                },
            },
        },
        "Workflow": {
            "type": "object",
            "required": [*fields, "counts", "jobs"],
            "properties": {**fields, "counts": counts, "jobs": jobs},
            "description": "status is counted from the jobs: running until every job has finished",
        },
    }


_SCHEDULE_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS, "pattern": NAME_PATTERN},
}


def _schedule_operation(summary: str, operation_id: str, responses: dict[str, Any], body: str | None = None):
    operation = {"summary": summary, "operationId": operation_id, "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return operation


def _schedule_paths() -> dict[str, Any]:
    one, changed = _ref("Schedule"), "The schedule after the change"

    def action(summary: str, operation_id: str) -> dict[str, Any]:
        operation = _schedule_operation(summary, operation_id, _responses(200, one, changed, 401, 404, 503))
        return {"post": {**operation, "parameters": [_SCHEDULE_NAME]}}

    errors = {status: answer for status, answer in _responses(200, {}, "", 401, 404, 503).items() if status != "200"}
    created = _responses(201, one, "The schedule was created", 400, 401, 409, 413, 415, 503)
    listed = _responses(200, _ref("ScheduleList"), "The schedules", 401, 503)
    change = "Change a schedule (a new timing, or a resume, starts it from its next tick after now)"
    return {
        "/v1/schedules": {
            "post": _schedule_operation("Create a schedule", "createSchedule", created, body="ScheduleSpec"),
            "get": _schedule_operation("Every schedule of the caller's tenant, by name", "listSchedules", listed),
        },
        "/v1/schedules/{name}": {
            "parameters": [_SCHEDULE_NAME],
            "get": _schedule_operation(
                "Read a schedule", "getSchedule", _responses(200, one, "The schedule", 401, 404, 503)
            ),
            "patch": _schedule_operation(
                change,
                "updateSchedule",
                _responses(200, one, changed, 400, 401, 404, 413, 415, 503),
                body="ScheduleChange",
            ),
            "delete": _schedule_operation(
                "Delete a schedule (its jobs stay)", "deleteSchedule", {"204": {"description": "Deleted"}, **errors}
            ),
        },
        "/v1/schedules/{name}/pause": action("Pause a schedule: it fires no tick until resumed", "pauseSchedule"),
        "/v1/schedules/{name}/resume": action("Resume a schedule from its next tick after now", "resumeSchedule"),
    }


_WEBHOOK_ID = {"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


def _webhook_paths() -> dict[str, Any]:
    one = _ref("Webhook")
    shown_once = "Created; the only answer that shows the secret"
    created = _responses(201, _ref("WebhookCreated"), shown_once, 400, 401, 413, 415, 503)
    errors = {status: answer for status, answer in _responses(200, {}, "", 401, 404, 503).items() if status != "200"}
    body = {"required": True, "content": {"application/json": {"schema": _ref("WebhookSpec")}}}
    return {
        "/v1/webhooks": {
            "post": {
                "summary": "Create a webhook: signed POSTs of the job events it wants, of its creator's tenant only",
                "operationId": "createWebhook",
                "requestBody": body,
                "responses": created,
            },
            "get": {
                "summary": "Every webhook of the caller's tenant, oldest first (secrets are never shown again)",
                "operationId": "listWebhooks",
                "responses": _responses(200, _ref("WebhookList"), "The webhooks", 401, 503),
            },
        },
        "/v1/webhooks/{webhook_id}": {
            "parameters": [_WEBHOOK_ID],
            "get": {
                "summary": "Read a webhook",
                "operationId": "getWebhook",
                "responses": _responses(200, one, "The webhook", 401, 404, 503),
            },
            "delete": {
                "summary": "Delete a webhook (its deliveries still waiting are dropped)",
                "operationId": "deleteWebhook",
                "responses": {"204": {"description": "Deleted"}, **errors},
            },
        },
    }


def _webhook_spec_schema() -> dict[str, Any]:
    schema = WebhookSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("title", None)
    schema.pop("$defs", None)
    schema["description"] = "A webhook: the http(s) URL to post to, the events it wants, and optional filters"
    schema["properties"]["url"] = {
        "type": "string",
        "maxLength": MAX_URL_CHARS,
        "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/@?#]+",
        "description": "An http:// or https:// URL (without credentials)",
    }
    schema["properties"]["description"] = {
        "anyOf": [{**_STORABLE_TEXT, "maxLength": MAX_DESCRIPTION_CHARS}, {"type": "null"}],
        "default": None,
    }
    for name in ("events", "queues", "types"):
        field = schema["properties"][name]
        (field if name == "events" else field["anyOf"][0])["uniqueItems"] = True
    schema["properties"]["max_retries"]["description"] = "Retries of one delivery, with the job backoff"
    return schema


def _webhook_schema(*, with_secret: bool) -> dict[str, Any]:
    names = {"type": ["array", "null"], "items": {"type": "string"}}
    properties = {
        "id": {"type": "string", "format": "uuid"},
        "url": {"type": "string"},
        "events": {"type": "array", "items": _ref("WebhookEvent")},
        "queues": {**names, "description": "Only jobs of these queues (null: every queue)"},
        "types": {**names, "description": "Only jobs of these types (null: every type)"},
        "description": {"type": ["string", "null"]},
        "max_retries": {"type": "integer"},
        "created_at": _timestamp(),
        "updated_at": _timestamp(),
    }
    if with_secret:
        properties["secret"] = {
            "type": "string",
            "pattern": "^whsec_[A-Za-z0-9+/]+=*$",
            "description": "Signs every delivery (Standard Webhooks); shown in this answer only",
        }
    return {"type": "object", "required": list(properties), "properties": properties}


def _webhook_schemas() -> dict[str, Any]:
    return {
        "WebhookEvent": {"type": "string", "enum": [event.value for event in WebhookEvent]},
        "WebhookSpec": _webhook_spec_schema(),
        "Webhook": _webhook_schema(with_secret=False),
        "WebhookCreated": _webhook_schema(with_secret=True),
        "WebhookList": _object_of("webhooks", {"type": "array", "items": _ref("Webhook")}),
        "WebhookDelivery": {
            "type": "object",
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": _ref("WebhookEvent"),
                "timestamp": {**_timestamp(), "description": "When the job reached the status (or the workflow ended)"},
                "data": {
                    "oneOf": [
                        _object_of("job", {"type": "object", "description": "The job as it was then"}),
                        _object_of("workflow", {"type": "object", "description": "The workflow, its outcome, counts"}),
                    ]
                },
            },
        },
    }


def _outgoing_webhooks() -> dict[str, Any]:
    """OpenAPI 3.1's `webhooks`: what Quorra posts to a webhook's URL."""

    def header(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "header",
            "required": True,
            "schema": {"type": "string"},
            "description": description,
        }

    parameters = [
        header("webhook-id", "The delivery's id, the same on every retry (deduplicate by it)"),
        header("webhook-timestamp", "Unix seconds of this attempt"),
        header("webhook-signature", 'v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">'),
    ]
    post = {
        "summary": "A job or workflow event, signed as Standard Webhooks prescribes; a 2xx answer acknowledges it",
        "operationId": "jobEvent",
        "parameters": parameters,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("WebhookDelivery")}}},
        "responses": {"2XX": {"description": "Delivered; any other answer (or none) is retried with backoff"}},
    }
    return {"jobEvent": {"post": post}}


def _public_paths() -> dict[str, Any]:
    def public(summary: str, operation_id: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"summary": summary, "operationId": operation_id, "security": [], "responses": responses}}

    text = {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}
    ready = {"200": _json(_ref("Readiness"), "Ready"), "503": _json(_ref("Error"), "Not ready; details per check")}
    return {
        "/healthz": public("The process is alive", "healthz", {"200": _json(_ref("Health"), "Alive")}),
        "/readyz": public(
            "The database answers (Redis, when configured, is reported; down = degraded)", "readyz", ready
        ),
        "/metrics": public("Prometheus metrics", "metrics", {"200": text}),
        "/openapi.json": public("This document", "openapi", {"200": _json({"type": "object"}, "OpenAPI 3.1")}),
        "/": _dashboard_path(),
    }


def _dashboard_path() -> dict[str, Any]:
    """The dashboard's entry point. Its other pages and forms are for browsers (README, "The
    dashboard"), signed in by a session cookie and guarded by a CSRF token, not an API."""
    page = {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
    return {
        "get": {
            "summary": "The dashboard (HTML): the overview when signed in, else the sign-in form",
            "operationId": "dashboard",
            "security": [],
            "responses": {"200": page},
        }
    }


def _timestamp(nullable: bool = False) -> dict[str, Any]:
    return {"type": ["string", "null"] if nullable else "string", "format": "date-time"}


def _job_list_item_schema() -> dict[str, Any]:
    schema = _job_schema()
    schema["required"] = [name for name in schema["required"] if name not in BODIES]
    schema["description"] = "A job as listed: payload and result only when asked for with include"
    return schema


def _job_schema() -> dict[str, Any]:
    properties = {
        "id": {"type": "string", "format": "uuid"},
        "type": {"type": "string"},
        "queue": {"type": "string"},
        "payload": {"type": "object"},
        "priority": {"type": "integer"},
        "status": _ref("JobStatus"),
        "scheduled": {"type": "boolean", "description": "Pending with run_at still to come (not ready yet)"},
        "attempts": {"type": "integer", "minimum": 0},
        "max_retries": {"type": "integer", "minimum": 0},
        "timeout_seconds": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "How long the worker lets one attempt run (null: no limit)",
        },
        "last_error": {"type": ["string", "null"]},
        "result": {"description": "What the handler returned (any JSON), or null"},
        "run_at": _timestamp(),
        "leased_by": {"type": ["string", "null"]},
        "leased_at": _timestamp(nullable=True),
        "lease_expires_at": _timestamp(nullable=True),
        "created_at": _timestamp(),
        "updated_at": _timestamp(),
        "finished_at": _timestamp(nullable=True),
        "workflow_id": {"type": ["string", "null"], "format": "uuid", "description": "The workflow it belongs to"},
        "ref": {"type": ["string", "null"], "description": "Its name in that workflow"},
        "on_parent_failure": {
            "anyOf": [_ref("ParentFailure"), {"type": "null"}],
            "description": "What it does when a parent ends dead or cancelled (null: it has no parents)",
        },
        "pending_parents": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "How many parents it still waits for (null: it has no parents)",
        },
    }
    attempts = {"type": "array", "items": _ref("Attempt"), "description": "Only with include=attempts_history"}
    return {"type": "object", "required": list(properties), "properties": {**properties, "attempts_history": attempts}}


def _attempt_schemas() -> dict[str, Any]:
    outcome = {
        "type": ["string", "null"],
        "enum": [*(o.value for o in AttemptOutcome), None],
        "description": "How the attempt ended; null while it runs",
    }
    properties = {
        "attempt": {"type": "integer", "minimum": 1, "description": "The job's attempt count at this lease"},
        "worker_id": {"type": ["string", "null"]},
        "leased_at": _timestamp(),
        "finished_at": _timestamp(nullable=True),
        "outcome": outcome,
        "error": {"type": ["string", "null"], "description": "Why a failed or expired attempt failed"},
        "lease_expires_at": {**_timestamp(nullable=True), "description": "The attempt in flight only"},
    }
    attempt = {"type": "object", "required": list(properties), "properties": properties}
    return {"Attempt": attempt, "AttemptList": _object_of("attempts", {"type": "array", "items": _ref("Attempt")})}


def _job_detail_schema() -> dict[str, Any]:
    """GET /v1/jobs/{id}: the job with the ids of its parents and of its dependants."""
    schema = _job_schema()
    ids = {"type": "array", "items": {"type": "string", "format": "uuid"}}
    schema["properties"] |= {
        "depends_on": {**ids, "description": "The jobs it waits for (its parents)"},
        "dependants": {**ids, "description": "The jobs that wait for it"},
    }
    schema["required"] += ["depends_on", "dependants"]
    return schema


# A string our databases can store: no NUL (PostgreSQL jsonb refuses it). Unpaired UTF-16
# surrogates are refused too, but they are no Unicode text, so no schema string holds one.
_STORABLE_TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}


def _portable_json_schema() -> dict[str, Any]:
    value = _ref("PortableJson")
    return {
        "description": f"Any JSON value, nested at most {MAX_PAYLOAD_DEPTH} levels, whose strings hold no NUL",
        "anyOf": [
            {"type": ["null", "boolean", "number"]},
            _STORABLE_TEXT,
            {"type": "array", "items": value},
            {"type": "object", "additionalProperties": value, "propertyNames": _STORABLE_TEXT},
        ],
    }


def _job_spec_schemas() -> dict[str, Any]:
    """JobSpec (POST /v1/jobs: the key comes in the Idempotency-Key header), BatchJobSpec
    (a batch's job, which may carry its own idempotency_key) and UniqueOptions."""
    batch = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = batch.pop("$defs")
    unique = definitions["UniqueOptions"]
    batch["properties"]["depends_on"]["items"] |= {"format": "uuid"}
    batch["properties"]["depends_on"]["description"] = (
        "Ids of jobs that must succeed first: the job waits, blocked, until then (400 names an unknown id)"
    )
    batch["description"] = (
        "A job to run. Unknown fields are refused; integer fields take JSON numbers without a fraction "
        '(10 or 10.0, never 10.5, "10" or true).'
    )
    batch["properties"]["payload"] = {
        "type": "object",
        "description": "At most QUORRA_MAX_PAYLOAD_BYTES once encoded",
        "additionalProperties": _ref("PortableJson"),
        "propertyNames": _STORABLE_TEXT,
    }
    single = {**batch, "properties": {k: v for k, v in batch["properties"].items() if k != "idempotency_key"}}
    batch = {**batch, "title": "BatchJobSpec"}
    return {
        "JobSpec": single,
        "BatchJobSpec": batch,
        "UniqueOptions": _unique_options_schema(unique),
        "ParentFailure": {
            **definitions["ParentFailure"],
            "description": (
                "cancel: cancelled, naming the parent (back to blocked if the parent is retried); "
                "run: runs once every parent has finished, seeing their outcomes"
            ),
        },
    }


def _unique_options_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """UniqueOptions as pydantic describes it, plus what its validators add: the key holds no
    NUL, and the states name each status once and include every live one."""
    live = [status.value for status in JobStatus if status in LIVE]
    states = schema["properties"]["states"]
    states["uniqueItems"] = True
    states["allOf"] = [{"contains": {"const": status}} for status in live]
    schema["properties"]["key"]["anyOf"][0]["pattern"] = _STORABLE_TEXT["pattern"]
    # pydantic spells the bounds of an optional JsonInt "ge"/"le", which JSON Schema ignores
    period = schema["properties"]["period_seconds"]["anyOf"][0]
    period["minimum"], period["maximum"] = period.pop("ge"), period.pop("le")
    return schema


def _job_template_schema(*, partial: bool = False) -> dict[str, Any]:
    schema = JobTemplate.model_json_schema()
    schema.pop("title", None)
    schema["description"] = "The job each tick submits: a job's fields but delay_seconds"
    schema["properties"]["payload"] = {
        "type": "object",
        "description": "At most QUORRA_MAX_PAYLOAD_BYTES once encoded",
        "additionalProperties": _ref("PortableJson"),
        "propertyNames": _STORABLE_TEXT,
    }
    if partial:
        schema.pop("required", None)
        schema["description"] = "The fields of the job template to change"
    return schema


def _schedule_fields() -> dict[str, Any]:
    return {
        "cron": {
            "type": "string",
            "pattern": CRON_PATTERN,
            "description": "Five fields (minute hour day month weekday) in the timezone, or @hourly, @daily, ...",
        },
        "interval_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_INTERVAL_SECONDS},
        "timezone": {"type": "string", "enum": sorted(zone_names()), "default": "UTC"},
        "missed_ticks": {"type": "string", "enum": [m.value for m in MissedTicks], "default": "skip"},
        "is_paused": {"type": "boolean", "default": False},
    }


# Exactly one of cron and interval_seconds (a change may give neither).
_ONE_TIMING = [
    {"required": ["cron"], "not": {"required": ["interval_seconds"]}},
    {"required": ["interval_seconds"], "not": {"required": ["cron"]}},
]


def _schedule_spec_schema() -> dict[str, Any]:
    name = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS, "pattern": NAME_PATTERN}
    return {
        "type": "object",
        "description": "A schedule: a unique name, exactly one of cron and interval_seconds, and the job template",
        "required": ["name", "job"],
        "additionalProperties": False,
        "properties": {"name": name, **_schedule_fields(), "job": _ref("JobTemplate")},
        "oneOf": _ONE_TIMING,
    }


def _schedule_change_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The fields to change; giving cron or interval_seconds replaces the other",
        "additionalProperties": False,
        "properties": {**_schedule_fields(), "job": _job_template_schema(partial=True)},
        "not": {"required": ["cron", "interval_seconds"]},
    }


def _schedule_schema() -> dict[str, Any]:
    nullable = {"type": ["string", "null"]}
    properties = {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "cron": nullable,
        "interval_seconds": {"type": ["integer", "null"]},
        "timezone": {"type": "string"},
        "job": _ref("JobTemplate"),
        "missed_ticks": {"type": "string", "enum": [m.value for m in MissedTicks]},
        "is_paused": {"type": "boolean"},
        "next_run_at": _timestamp(),
        "last_run_at": {**_timestamp(nullable=True), "description": "The tick time of the latest job"},
        "last_job_id": {"type": ["string", "null"], "format": "uuid"},
        "last_job_status": {"anyOf": [_ref("JobStatus"), {"type": "null"}], "description": "null once pruned"},
        "created_at": _timestamp(),
        "updated_at": _timestamp(),
    }
    return {"type": "object", "required": list(properties), "properties": properties}


def _schedule_schemas() -> dict[str, Any]:
    return {
        "JobTemplate": _job_template_schema(),
        "ScheduleSpec": _schedule_spec_schema(),
        "ScheduleChange": _schedule_change_schema(),
        "Schedule": _schedule_schema(),
        "ScheduleList": _object_of("schedules", {"type": "array", "items": _ref("Schedule")}),
    }


def _error_schema() -> dict[str, Any]:
    body = {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {
            "code": {"type": "string", "enum": sorted(STATUS_BY_CODE)},
            "message": {"type": "string"},
            "details": {"description": "More about the error (for a 400: one {field, message} per problem)"},
        },
    }
    return _object_of("error", body)


def _listing_schemas() -> dict[str, Any]:
    jobs = {"type": "array", "items": _ref("JobListItem")}
    return {
        "JobListItem": _job_list_item_schema(),
        "JobList": {
            "type": "object",
            "required": ["jobs", "next_cursor"],
            "properties": {"jobs": jobs, "next_cursor": {"type": ["string", "null"]}},
        },
        **_queue_schemas(),
        **_attempt_schemas(),
        **_worker_schemas(),
        **_stats_schemas(),
    }


def _submission_schemas() -> dict[str, Any]:
    outcome = {
        "type": "string",
        "enum": ["created", "replayed", "duplicate"],
        "description": "created; replayed: the first try's job (same idempotency key); duplicate: the unique job's holder",
    }
    created = {
        "type": "object",
        "required": ["id", "status", "run_at", "outcome"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": _ref("JobStatus"),
            "run_at": _timestamp(),
            "outcome": outcome,
        },
    }
    batch = {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_SIZE, "items": _ref("BatchJobSpec")}
    return {
        **_job_spec_schemas(),
        "JobBatch": {**_object_of("jobs", batch), "additionalProperties": False},
        "JobCreated": created,
        "RetryFilter": RetryFilter.model_json_schema(),
        "RetryCount": _object_of("retried", {"type": "integer", "minimum": 0}),
        "DeleteFilter": DeleteFilter.model_json_schema(),
        "DeleteCount": _object_of("deleted", {"type": "integer", "minimum": 0}),
        "JobBatchCreated": _object_of("jobs", {"type": "array", "items": _ref("JobCreated")}),
    }


def _schemas() -> dict[str, Any]:
    readiness = {"type": "object", "required": ["status", "checks"]}
    readiness["properties"] = {"status": {"enum": ["ready", "degraded"]}, "checks": {"type": "object"}}
    return {
        "JobStatus": {"type": "string", "enum": [s.value for s in JobStatus]},
        "Job": _job_schema(),
        "JobDetail": _job_detail_schema(),
        **_workflow_schemas(),
        "PortableJson": _portable_json_schema(),
        **_submission_schemas(),
        **_listing_schemas(),
        **_schedule_schemas(),
        **_webhook_schemas(),
        "Health": _object_of("status", {"type": "string", "const": "ok"}),
        "Readiness": readiness,
        "Error": _error_schema(),
    }


def _object_of(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [name], "properties": {name: schema}}


_QUEUE = {"name": "queue", "in": "path", "required": True, "schema": {**_NAME, "maxLength": MAX_QUEUE_CHARS}}


def _queue_paths() -> dict[str, Any]:
    def action(summary: str, description: str, operation_id: str) -> dict[str, Any]:
        answer = _responses(200, _ref("QueueState"), "The queue after the change", 400, 401, 503)
        operation = {"summary": summary, "description": description, "operationId": operation_id}
        return {"post": {**operation, "parameters": [_QUEUE], "responses": answer}}

    listed = {
        "summary": "Job counts per queue and status, and a summary of each queue",
        "operationId": "listQueues",
        "responses": _responses(200, _ref("QueueList"), "Counts and summaries", 401, 503),
    }
    return {
        "/v1/queues": {"get": listed},
        "/v1/queues/{queue}/pause": action(
            "Pause a queue: no worker leases its jobs until it is resumed",
            "Idempotent. Jobs already leased run on; new and waiting jobs wait. A queue with no job yet "
            "may be paused too. Every gRPC server honours it at once (the lease itself reads it).",
            "pauseQueue",
        ),
        "/v1/queues/{queue}/resume": action(
            "Resume a paused queue and wake the workers waiting on it",
            "Idempotent: resuming a queue that is not paused changes nothing.",
            "resumeQueue",
        ),
        "/v1/workers": {
            "get": {
                "summary": "The workers seen lately, most recently seen first, with the jobs each holds now",
                "description": "A gRPC server records a worker from its leases and heartbeats, at most every "
                "few seconds per worker; workers not seen for a day are forgotten.",
                "operationId": "listWorkers",
                "parameters": [
                    {
                        "name": "minutes",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_SEEN_MINUTES,
                            "default": DEFAULT_SEEN_MINUTES,
                        },
                        "description": "Workers seen in this many last minutes",
                    }
                ],
                "responses": _responses(200, _ref("WorkerList"), "The workers", 400, 401, 503),
            }
        },
    }


def _stats_paths() -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    window = {"type": "integer", "minimum": 1, "maximum": MAX_STATS_MINUTES, "default": DEFAULT_STATS_MINUTES}
    return {
        "/v1/stats/throughput": {
            "get": {
                "summary": "Attempts succeeded and failed per queue and minute, from the database",
                "description": "From the attempt history, so the figures survive restarts. One point per minute "
                "(the current one last, still counting) for each queue that finished an attempt in the "
                "window; failed counts nacked and expired attempts, cancelled ones are left out.",
                "operationId": "getThroughput",
                "parameters": [
                    query("minutes", window, "How many minutes, up to now"),
                    query("queue", {**_NAME, "maxLength": MAX_QUEUE_CHARS}, "Only this queue"),
                ],
                "responses": _responses(200, _ref("Throughput"), "The figures", 400, 401, 503),
            }
        }
    }


def _stats_schemas() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    point = _object({"minute": _timestamp(), "succeeded": count, "failed": count})
    series = _object({"queue": {"type": "string"}, "points": {"type": "array", "items": point}})
    throughput = _object(
        {
            "minutes": {"type": "integer"},
            "since": _timestamp(),
            "until": _timestamp(),
            "queues": {"type": "array", "items": series},
        }
    )
    return {"Throughput": throughput}


def _worker_schemas() -> dict[str, Any]:
    names = {"type": "array", "items": {"type": "string"}}
    properties = {
        "id": {"type": "string"},
        "host": {"type": ["string", "null"], "description": "As the worker told, else its peer address"},
        "pid": {"type": ["integer", "null"]},
        "queues": {**names, "description": "The queues it leases from"},
        "handlers": {**names, "type": ["array", "null"], "description": "Its job types; null: not told"},
        "jobs_in_flight": {"type": "integer", "minimum": 0, "description": "Jobs it holds a lease on now"},
        "first_seen_at": _timestamp(),
        "last_seen_at": _timestamp(),
    }
    workers = {"type": "array", "items": _ref("Worker")}
    return {"Worker": _object(properties), "WorkerList": _object({"workers": workers, "seen_since": _timestamp()})}


def _queue_schemas() -> dict[str, Any]:
    queue_count = {
        "type": "object",
        "required": ["queue", "status", "count"],
        "properties": {"queue": {"type": "string"}, "status": _ref("JobStatus"), "count": {"type": "integer"}},
    }
    state_properties = {
        "queue": {"type": "string"},
        "is_paused": {"type": "boolean"},
        "paused_at": _timestamp(nullable=True),
    }
    summary_properties = {
        **state_properties,
        "has_workers": {
            "type": "boolean",
            "description": f"Whether a worker that leases from this queue was seen in the last {ACTIVE_WORKER_SECONDS} s"
            " (false with jobs waiting: nothing will run them)",
        },
        "counts": {
            "type": "object",
            "description": "Jobs by status (statuses with none are left out)",
            "additionalProperties": {"type": "integer", "minimum": 1},
        },
        "oldest_ready_age_seconds": {
            "type": ["number", "null"],
            "description": "How long the oldest ready job (pending or failed, run_at passed) has waited; null: none",
        },
        "limits": {"$ref": "#/components/schemas/Limits", "description": "Its limits (PUT .../limits); null: none"},
    }
    queue_list = {
        "queues": {"type": "array", "items": queue_count, "description": "One row per queue and status"},
        "summary": {
            "type": "array",
            "items": _ref("QueueSummary"),
            "description": "One per queue that holds jobs, is paused or has limits, by name",
        },
    }
    return {
        "QueueState": _object(state_properties),
        "QueueSummary": _object(summary_properties),
        "QueueList": _object(queue_list),
    }


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


@functools.cache
def spec() -> dict[str, Any]:
    from quorra.api.openapi_access import (  # it builds on this module
        SECURITY_SCHEMES,
        access_paths,
        access_schemas,
    )
    from quorra.api.openapi_limits import (  # so does this one
        limits_paths,
        limits_schemas,
    )

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Quorra",
            "version": __version__,
            "description": (
                "A job queue: REST for clients. Every key acts on its own tenant's jobs, queues, workflows "
                "and workers only: lists and counts hold that tenant's, and another tenant's id is a 404 "
                "exactly like a missing one."
            ),
        },
        "security": [{"ApiKey": []}, {"BearerJwt": []}],
        "paths": {
            **_job_paths(),
            **_workflow_paths(),
            **_queue_paths(),
            **_stats_paths(),
            **_schedule_paths(),
            **_webhook_paths(),
            **access_paths(),
            **limits_paths(),
            **_public_paths(),
        },
        "webhooks": _outgoing_webhooks(),
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                **SECURITY_SCHEMES,
            },
            "schemas": {**_schemas(), **access_schemas(), **limits_schemas()},
        },
    }
