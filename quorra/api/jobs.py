"""/v1/jobs: submit (one or a batch), read, list, cancel and retry jobs. Thin views:
parse -> manager verb (which counts metrics and wakes workers) -> JSON; reads go to the
store directly. The rules live in quorra.jobs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from flask import Blueprint, request, url_for
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from quorra.api.auth import require_api_key
from quorra.api.body import read_json
from quorra.api.cursor import CursorCodec
from quorra.api.services import services
from quorra.durations import parse_duration
from quorra.errors import InvalidArgument
from quorra.jobs import (
    Job,
    JobSpec,
    JobStatus,
    QueueName,
    TypeName,
    describe_errors,
    parse_batch,
)
from quorra.store import MAX_LIST_LIMIT

# A batch body may be this many times QUORRA_MAX_PAYLOAD_BYTES; each job's payload still
# has to fit in QUORRA_MAX_PAYLOAD_BYTES on its own.
BATCH_BODY_FACTOR = 10

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
bp.before_request(require_api_key)


@bp.post("")
def enqueue():
    limit = services().settings.max_payload_bytes
    spec = JobSpec.parse(read_json(limit), max_payload_bytes=limit)
    job = services().manager.enqueue(spec)
    return created_json(job), 201, {"Location": url_for(".get_job", job_id=job.id)}


@bp.post("/batch")
def enqueue_batch():
    limit = services().settings.max_payload_bytes
    specs = parse_batch(read_json(limit * BATCH_BODY_FACTOR), max_payload_bytes=limit)
    created = services().manager.enqueue_many(specs)
    formatted = functools.lru_cache(maxsize=16)(timestamp)  # a batch's jobs share a few run_at values
    return {"jobs": [created_json(job, formatted) for job in created]}, 201


@bp.get("/<uuid:job_id>")  # a uuid, so that GET /v1/jobs/batch is no route (Allow: POST)
def get_job(job_id):
    wait = parse_query(WaitQuery, request.args).wait
    job = services().store.get_job(str(job_id))
    if wait:
        job = services().waits.until_finished(job, wait)
    return job_json(job)


@bp.get("")
def list_jobs():
    query = parse_query(ListQuery, request.args)
    settings = services().settings
    codec = CursorCodec(settings.cursor_keys)
    page = services().store.list_jobs(
        queue=query.queue,
        status=query.status,
        type=query.type,
        limit=query.limit,
        cursor=codec.decode(query.cursor) if query.cursor else None,
        bodies=bool(query.include),
        max_bytes=settings.list_max_bytes,
    )
    return {
        "jobs": [job_json(job, query.include) for job in page.jobs],
        "next_cursor": codec.encode(page.next_cursor) if page.next_cursor else None,
    }


@bp.post("/retry")
def retry_dead():
    """Bulk retry of the dead-letter queue: every dead job matching the filter, in one statement."""
    query = RetryFilter.parse(read_json(services().settings.max_payload_bytes))
    return {"retried": services().manager.retry_dead(query.queue, type=query.type)}


@bp.post("/<job_id>/cancel")
def cancel(job_id: str):
    return job_json(services().manager.cancel(job_id))


@bp.post("/<job_id>/retry")
def retry(job_id: str):
    return job_json(services().manager.retry(job_id))


BODIES = ("payload", "result")
Query = TypeVar("Query", bound=BaseModel)


def _comma_list(value: object) -> object:
    return value.split(",") if isinstance(value, str) else value


class ListQuery(BaseModel):
    """The query string of GET /v1/jobs. Unknown parameters are refused, so a typo such as
    ?state=dead is an error rather than a silently unfiltered list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: QueueName | None = None
    status: JobStatus | None = None
    type: TypeName | None = None
    limit: int = Field(50, ge=1, le=MAX_LIST_LIMIT)
    cursor: str | None = Field(None, min_length=1, max_length=500)
    # Payloads and results are left out unless asked for: a page of big jobs is a big page.
    include: Annotated[tuple[Literal[BODIES], ...], BeforeValidator(_comma_list)] = ()

    @field_validator("include")
    @classmethod
    def _each_once(cls, include: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(include)) < len(include):
            raise ValueError("name payload and result at most once each")
        return include


class RetryFilter(BaseModel):
    """The body of POST /v1/jobs/retry: which dead jobs to put back in line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: QueueName
    type: TypeName | None = None
    status: Literal["dead"] = "dead"

    @classmethod
    def parse(cls, data: object) -> RetryFilter:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidArgument("invalid retry filter", details=describe_errors(exc)) from None


class WaitQuery(BaseModel):
    """The query string of GET /v1/jobs/{id}: ?wait=30s holds the answer until the job is
    finished or the wait ends (at most MAX_WAIT_SECONDS; longer waits are cut to it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wait: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 0.0


def parse_query(model: type[Query], args) -> Query:
    """The query string as `model`: repeated, unknown or bad parameters are a 400 naming each."""
    repeated = sorted(name for name in args if len(args.getlist(name)) > 1)
    if repeated:
        details = [{"field": name, "message": "given more than once"} for name in repeated]
        raise InvalidArgument("invalid query parameters", details=details)
    try:
        return model.model_validate(args.to_dict())
    except ValidationError as exc:
        raise InvalidArgument("invalid query parameters", details=describe_errors(exc)) from None


def timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as GoQuorra writes them."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def created_json(job: Job, formatted: Callable[[datetime], str | None] = timestamp) -> dict[str, Any]:
    return {"id": job.id, "status": job.status.value, "run_at": formatted(job.run_at)}


def job_json(job: Job, include: Sequence[str] = BODIES) -> dict[str, Any]:
    """Every field a client may read, the bodies (payload, result) only if included; the
    lease id stays private to the worker holding it."""
    body = _job_fields(job)
    for name in BODIES:
        if name not in include:
            del body[name]
    return body


def _job_fields(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "type": job.type,
        "queue": job.queue,
        "payload": job.payload,
        "priority": job.priority,
        "status": job.status.value,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "last_error": job.last_error,
        "result": job.result,
        "run_at": timestamp(job.run_at),
        "leased_by": job.leased_by,
        "leased_at": timestamp(job.leased_at),
        "lease_expires_at": timestamp(job.lease_expires_at),
        "created_at": timestamp(job.created_at),
        "updated_at": timestamp(job.updated_at),
        "finished_at": timestamp(job.finished_at),
    }
