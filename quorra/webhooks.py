"""Webhooks on job events. Pure Python, like quorra.jobs: the events, a webhook as a client
declares it, its secret, and a delivery's body and signature, which follow Standard Webhooks
(https://www.standardwebhooks.com/).

A job event is ``job.<status>`` for the statuses a job reaches by itself or by a person:
``job.succeeded`` (acked), ``job.failed`` (an attempt failed; retried after its backoff),
``job.dead`` (out of retries) and ``job.cancelled`` (by a person, or by a parent that failed:
quorra.workflows). ``workflow.completed`` announces a workflow whose every job finished,
with its outcome (succeeded, failed or cancelled); the queue and type filters choose jobs,
so they do not apply to it. The store inserts one delivery per
matching webhook, as a job of the queue ``quorra.webhooks`` (type ``quorra.webhook.deliver``),
in the transaction of the change it announces (an outbox): no event is lost and none is
sent for a change that rolled back. quorra.delivery posts them, retrying with the jobs'
own backoff. Deliveries announce no events of their own (no loops).

A delivery is ``POST <url>`` with the JSON body ``{"type", "timestamp", "data": {"job":
...}}`` (``{"workflow": ...}`` for a workflow event) and the headers ``webhook-id`` (the delivery job's id, the same on every retry: a
receiver's idempotency key), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, keyed with
the secret's base64-decoded bytes).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator
from standardwebhooks import Webhook as Signer

from quorra.errors import InvalidArgument
from quorra.jobs import Job, JobStatus, JsonInt, QueueName, TypeName, check_portable_json, describe_errors

WEBHOOK_QUEUE = "quorra.webhooks"  # where deliveries wait; served by quorra.delivery
DELIVER_TYPE = "quorra.webhook.deliver"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MAX_URL_CHARS = 2000
MAX_DESCRIPTION_CHARS = 500
MAX_FILTER_NAMES = 100
DEFAULT_MAX_RETRIES = 10  # 2 s, 4 s, ... 1024 s: about 34 minutes of retries before dead


class WebhookEvent(str, enum.Enum):
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_DEAD = "job.dead"
    JOB_CANCELLED = "job.cancelled"
    WORKFLOW_COMPLETED = "workflow.completed"  # every job of a workflow finished (quorra.workflows)

    def __str__(self) -> str:
        return self.value


# The statuses whose arrival is a job event, 'job.<status>'.
EVENT_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED})
JOB_EVENTS = frozenset(event for event in WebhookEvent if event.value.startswith("job."))
assert {f"job.{status.value}" for status in EVENT_STATUSES} == {event.value for event in JOB_EVENTS}


def _unique(names: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    if names is not None and len(set(names)) < len(names):
        raise ValueError("name each at most once")
    return names


class WebhookSpec(BaseModel):
    """A webhook as a client declares it. Strict, like JobSpec: no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[StrictStr, Field(min_length=1, max_length=MAX_URL_CHARS)]
    events: Annotated[tuple[WebhookEvent, ...], Field(min_length=1)]
    # Only jobs of these queues / types (None: every one).
    queues: Annotated[tuple[QueueName, ...], Field(min_length=1, max_length=MAX_FILTER_NAMES)] | None = None
    types: Annotated[tuple[TypeName, ...], Field(min_length=1, max_length=MAX_FILTER_NAMES)] | None = None
    description: Annotated[StrictStr, Field(max_length=MAX_DESCRIPTION_CHARS)] | None = None
    # Retries of one delivery, with the backoff of any job (quorra.jobs.backoff_seconds).
    max_retries: JsonInt = Field(DEFAULT_MAX_RETRIES, ge=0, le=100)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        check_portable_json(url, "url")
        check_http_url(url)
        return url

    @field_validator("description")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        if text is not None:
            check_portable_json(text, "description")
        return text

    _unique_events = field_validator("events", "queues", "types")(_unique)

    @classmethod
    def parse(cls, data: object) -> WebhookSpec:
        if not isinstance(data, dict):
            raise InvalidArgument("a webhook must be a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidArgument("the webhook is invalid", details=describe_errors(exc)) from None


def check_http_url(url: str) -> None:
    """An absolute http:// or https:// URL with a host; ValueError otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError("may not contain spaces or control characters")
    if parts.username is not None or parts.password is not None:
        raise ValueError("may not carry credentials; put them in the path or query, or check the signature")


@dataclass(frozen=True)
class Webhook:
    """One row of the webhooks table."""

    id: str
    url: str
    events: tuple[WebhookEvent, ...]
    queues: tuple[str, ...] | None
    types: tuple[str, ...] | None
    description: str | None
    max_retries: int
    created_at: datetime
    updated_at: datetime
    secret: str = dataclasses.field(repr=False, default="")
    tenant: str = "default"


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_webhook_id() -> str:
    return str(uuid.uuid4())


# -- a delivery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What a delivery job carries: the webhook to post to, the event, and the job (or the
    workflow) as it was when the event happened (a snapshot taken by the store)."""

    webhook_id: str
    event: str
    subject: str  # "job" or "workflow"
    document: dict[str, Any]

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Delivery:
        """Raises ValueError or TypeError for a payload the store did not write."""
        try:
            webhook_id, event = payload["webhook_id"], payload["event"]
            subject = "job" if "job" in payload else "workflow"
            document = payload[subject]
        except (KeyError, TypeError):
            raise ValueError("not a webhook delivery (webhook_id, event and job or workflow expected)") from None
        if not isinstance(document, dict) or not isinstance(event, str):
            raise TypeError("not a webhook delivery (event must be a string and job an object)")
        return cls(str(uuid.UUID(str(webhook_id))), event, subject, job_data(document))

    @property
    def job(self) -> dict[str, Any]:
        return self.document if self.subject == "job" else {}

    @property
    def occurred_at(self) -> str:
        moment = self.document.get("updated_at" if self.subject == "job" else "finished_at")
        return moment or _iso(datetime.now(UTC))

    def body(self) -> str:
        """The JSON body posted, exactly as signed."""
        document = {"type": self.event, "timestamp": self.occurred_at, "data": {self.subject: self.document}}
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def workflow_document(workflow: Any, counts: dict[str, int]) -> dict[str, Any]:
    """A completed workflow (quorra.workflows.Workflow) as a workflow.completed delivery
    carries it: its row, and how many of its jobs ended in each status."""
    return {
        "id": workflow.id,
        "name": workflow.name,
        "status": workflow.status.value,
        "created_at": _iso(workflow.created_at),
        "finished_at": _iso(workflow.finished_at) if workflow.finished_at else None,
        "counts": counts,
    }


def signature_headers(secret: str, message_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (signed by the `standardwebhooks` package)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Signer(secret).sign(message_id, timestamp, body),
    }


# The fields of a job snapshot that a receiver does not get: the lease id is the worker's
# secret, and the unique slot's and the dependencies' bookkeeping columns are internal.
PRIVATE_FIELDS = frozenset({"lease_id", "unique_key", "unique_states", "pending_parents", "has_dependants"})
_TIME_FIELDS = frozenset(field.name for field in dataclasses.fields(Job) if str(field.type).startswith("datetime"))
_ID_FIELDS = frozenset({"id", "schedule_id", "workflow_id", "cancelled_by_parent"})


def job_data(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A job snapshot (a row as PostgreSQL's to_jsonb or SQLite's json_object wrote it) in
    the API's spelling: ids as canonical UUIDs, times as ISO 8601 UTC with a Z."""
    data = {}
    for name, value in snapshot.items():
        if name in PRIVATE_FIELDS:
            continue
        if isinstance(value, str) and name in _TIME_FIELDS:
            value = _iso(datetime.fromisoformat(value))
        elif value is not None and name in _ID_FIELDS:
            value = str(uuid.UUID(str(value)))
        data[name] = value
    return data


def _iso(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")
