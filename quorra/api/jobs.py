"""/v1/jobs: submit (one or a batch), read, list, cancel and retry jobs. Thin views:
parse -> manager verb (which counts metrics and wakes workers) -> JSON; reads go to the
store directly. The rules live in quorra.jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, request, url_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quorra.api.auth import require_api_key
from quorra.api.body import read_json
from quorra.api.services import services
from quorra.errors import InvalidArgument
from quorra.jobs import (
    NAME_PATTERN,
    Job,
    JobSpec,
    JobStatus,
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
    return {"jobs": [created_json(job) for job in created]}, 201


@bp.get("/<job_id>")
def get_job(job_id: str):
    return job_json(services().store.get_job(job_id))


@bp.get("")
def list_jobs():
    page = services().store.list_jobs(**ListQuery.parse(request.args))
    return {"jobs": [job_json(job) for job in page.jobs], "next_cursor": page.next_cursor}


@bp.post("/<job_id>/cancel")
def cancel(job_id: str):
    return job_json(services().manager.cancel(job_id))


@bp.post("/<job_id>/retry")
def retry(job_id: str):
    return job_json(services().manager.retry(job_id))


class ListQuery(BaseModel):
    """The query string of GET /v1/jobs. Unknown parameters are refused, so a typo such as
    ?state=dead is an error rather than a silently unfiltered list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str | None = Field(None, min_length=1, max_length=100, pattern=NAME_PATTERN)
    status: JobStatus | None = None
    type: str | None = Field(None, min_length=1, max_length=200, pattern=NAME_PATTERN)
    limit: int = Field(50, ge=1, le=MAX_LIST_LIMIT)
    cursor: str | None = Field(None, min_length=1, max_length=500)

    @classmethod
    def parse(cls, args) -> dict[str, Any]:
        repeated = sorted(name for name in args if len(args.getlist(name)) > 1)
        if repeated:
            details = [{"field": name, "message": "given more than once"} for name in repeated]
            raise InvalidArgument("invalid query parameters", details=details)
        try:
            return cls.model_validate(args.to_dict()).model_dump()
        except ValidationError as exc:
            raise InvalidArgument("invalid query parameters", details=describe_errors(exc)) from None


def timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as GoQuorra writes them."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def created_json(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status.value, "run_at": timestamp(job.run_at)}


def job_json(job: Job) -> dict[str, Any]:
    """Every field a client may read; the lease id stays private to the worker holding it."""
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
