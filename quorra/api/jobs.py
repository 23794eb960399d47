"""/v1/jobs: submit (one or a batch), read, list, cancel and retry jobs. Thin views:
parse -> manager verb (which counts metrics and wakes workers) -> JSON; reads go to the
store directly. The rules live in quorra.jobs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, TypeVar

from flask import Blueprint, request
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from quorra import tracing
from quorra.access import Permission
from quorra.api.auth import (
    api_key_scope,
    current_actor,
    current_tenant,
    require_api_key,
    requires,
)
from quorra.api.body import read_json
from quorra.api.cursor import CursorCodec
from quorra.api.services import services
from quorra.durations import parse_duration
from quorra.errors import InvalidArgument, InvalidJobSpec
from quorra.jobs import (
    MAX_BATCH_SIZE,
    MAX_IDEMPOTENCY_KEY_CHARS,
    Job,
    JobSpec,
    JobStatus,
    QueueName,
    TraceContext,
    TypeName,
    describe_errors,
    is_valid_idempotency_key,
    parse_batch,
)
from quorra.store import (
    MAX_LIST_LIMIT,
    READY,
    SCHEDULED,
    Attempt,
    JobFilter,
    Outcome,
    Submitted,
    utcnow,
)

# A batch body may be this many times QUORRA_MAX_PAYLOAD_BYTES; each job's payload still
# has to fit in QUORRA_MAX_PAYLOAD_BYTES on its own.
BATCH_BODY_FACTOR = 10

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
bp.before_request(require_api_key)


IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
# W3C Trace Context: the trace a submit belongs to (README, "Tracing")
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"
REPLAYED_HEADER = "Idempotent-Replayed"
# A batch's Idempotency-Key names each job that has no idempotency_key of its own as
# "<key>:<index>", which must still fit in MAX_IDEMPOTENCY_KEY_CHARS.
MAX_BATCH_KEY_CHARS = MAX_IDEMPOTENCY_KEY_CHARS - len(f":{MAX_BATCH_SIZE}")


@bp.post("")
@requires(Permission.JOBS_SUBMIT)
def enqueue():
    """201 and a new job; or 200 and the job that a first try with the same
    Idempotency-Key (and the same job) created, with Idempotent-Replayed: true, or that
    holds the unique job's slot."""
    limit = services().settings.max_payload_bytes
    body = read_json(limit)
    if isinstance(body, dict) and "idempotency_key" in body:
        raise InvalidJobSpec("the job is invalid", details=[_KEY_IN_BODY])
    spec = JobSpec.parse(body, max_payload_bytes=limit)
    key = header_key(MAX_IDEMPOTENCY_KEY_CHARS)
    [submitted] = _submit([spec if key is None else spec.model_copy(update={"idempotency_key": key})])
    headers = {"Location": job_location(submitted.job.id)}
    if submitted.outcome is Outcome.REPLAYED:
        headers[REPLAYED_HEADER] = "true"
    return created_json(submitted), 201 if submitted.created else 200, headers


@bp.post("/batch")
@requires(Permission.JOBS_SUBMIT)
def enqueue_batch():
    """201 when the batch created a job, else 200 (Idempotent-Replayed: true when every job
    was replayed); each job says what became of it."""
    limit = services().settings.max_payload_bytes
    specs = parse_batch(read_json(limit * BATCH_BODY_FACTOR), max_payload_bytes=limit)
    key = header_key(MAX_BATCH_KEY_CHARS)
    if key is not None:
        specs = [_with_key(spec, f"{key}:{index}") for index, spec in enumerate(specs)]
    submitted = _submit(specs)
    headers = {}
    if all(item.outcome is Outcome.REPLAYED for item in submitted):
        headers[REPLAYED_HEADER] = "true"
    status = 201 if any(item.created for item in submitted) else 200
    return {"jobs": [created_json(item) for item in submitted]}, status, headers


def job_location(job_id: str) -> str:
    """The path of GET /v1/jobs/{id}, as url_for(".get_job") builds it (the script root, then
    the route), written out: building it through the URL map cost 2 % of a submit's CPU."""
    return f"{request.script_root}{bp.url_prefix}/{job_id}"


_KEY_IN_BODY = {"field": "idempotency_key", "message": f"unknown field; send the {IDEMPOTENCY_KEY_HEADER} header"}


def _submit(specs: list[JobSpec]) -> list[Submitted]:
    return in_submit_trace(specs, lambda trace: _enqueue(specs, trace), lambda done: [item.job for item in done])


Done = TypeVar("Done")


def in_submit_trace(
    specs: Sequence[JobSpec], submit: Callable[[TraceContext | None], Done], jobs_of: Callable[[Done], list[Job]]
) -> Done:
    """`submit(trace)`, where `trace` is the context the jobs created keep: the submit
    span's while tracing is on here, else the request's own traceparent, if any."""
    traceparent = request.headers.get(TRACEPARENT_HEADER)
    incoming = (  # getlist walks every header: only when there is a trace to read
        None
        if traceparent is None
        else TraceContext.from_headers(traceparent, ",".join(request.headers.getlist(TRACESTATE_HEADER)))
    )
    if tracing.current is None:
        return submit(incoming)
    with tracing.current.submitting(specs, incoming) as (span, trace):
        done = submit(trace)
        tracing.current.submitted(span, jobs_of(done))
    return done


def _enqueue(specs: list[JobSpec], trace: TraceContext | None) -> list[Submitted]:
    ttl = services().settings.idempotency_ttl_seconds
    return services().manager.enqueue_many(
        specs, scope=api_key_scope(), key_ttl_seconds=ttl, tenant=current_tenant(), trace=trace
    )


def _with_key(spec: JobSpec, key: str) -> JobSpec:
    """A batch job keeps an idempotency_key of its own; else it gets the batch's."""
    return spec if spec.idempotency_key is not None else spec.model_copy(update={"idempotency_key": key})


def header_key(max_chars: int) -> str | None:
    """The Idempotency-Key header, if sent: 1 to `max_chars` visible ASCII characters, else 400."""
    key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if key is None:
        return None
    if not is_valid_idempotency_key(key) or len(key) > max_chars:
        message = f"1 to {max_chars} visible ASCII characters (no spaces)"
        raise InvalidArgument(
            f"the {IDEMPOTENCY_KEY_HEADER} header is invalid",
            details=[{"field": IDEMPOTENCY_KEY_HEADER, "message": message}],
        )
    return key


@bp.get("/<uuid:job_id>")  # a uuid, so that GET /v1/jobs/batch is no route (Allow: POST)
@requires(Permission.JOBS_READ)
def get_job(job_id):
    query = parse_query(WaitQuery, request.args) if request.query_string else PLAIN_GET
    job = services().store.get_job(str(job_id), tenant=current_tenant())
    if query.wait:
        job = services().waits.until_finished(job, query.wait)
    if not query.include:  # the plain GET stays one indexed read
        return job_json(job) | links_json(job)
    job, attempts = services().store.job_attempts(job.id, tenant=current_tenant())
    return job_json(job) | links_json(job) | {"attempts_history": [attempt_json(attempt) for attempt in attempts]}


@bp.get("/<uuid:job_id>/attempts")
@requires(Permission.JOBS_READ)
def get_attempts(job_id):
    _, attempts = services().store.job_attempts(str(job_id), tenant=current_tenant())
    return {"attempts": [attempt_json(attempt) for attempt in attempts]}


@bp.get("")
@requires(Permission.JOBS_READ)
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
        created_from=query.created_from,
        created_to=query.created_to,
        job_id=str(query.id) if query.id is not None else None,
        payload_contains=query.payload_contains,
        tenant=current_tenant(),
    )
    return {
        "jobs": [job_json(job, query.include) for job in page.jobs],
        "next_cursor": codec.encode(page.next_cursor) if page.next_cursor else None,
    }


@bp.post("/retry")
@requires(Permission.JOBS_MANAGE)
def retry_dead():
    """Bulk retry (the dead-letter queue by default): every job matching the filter, in one statement."""
    query = RetryFilter.parse(read_json(services().settings.max_payload_bytes))
    return {"retried": services().manager.retry_matching(query.job_filter(current_tenant()), actor=current_actor())}


@bp.delete("")
@requires(Permission.JOBS_MANAGE)
def delete_jobs():
    """Bulk delete of finished jobs matching the filter (and their attempts), in one statement."""
    query = DeleteFilter.parse(read_json(services().settings.max_payload_bytes))
    return {"deleted": services().manager.delete_matching(query.job_filter(current_tenant()), actor=current_actor())}


@bp.delete("/<uuid:job_id>")
@requires(Permission.JOBS_MANAGE)
def delete_job(job_id):
    services().manager.delete_job(str(job_id), tenant=current_tenant(), actor=current_actor())
    return "", 204


@bp.post("/<job_id>/cancel")
@requires(Permission.JOBS_MANAGE)
def cancel(job_id: str):
    return job_json(services().manager.cancel(job_id, tenant=current_tenant(), actor=current_actor()))


@bp.post("/<job_id>/retry")
@requires(Permission.JOBS_MANAGE)
def retry(job_id: str):
    return job_json(services().manager.retry(job_id, tenant=current_tenant(), actor=current_actor()))


BODIES = ("payload", "result")
Query = TypeVar("Query", bound=BaseModel)
# A list's status filter: a stored status, or the two views of pending (quorra.store.base).
LIST_STATUSES = (*(status.value for status in JobStatus), SCHEDULED, READY)
ListStatus = Literal[LIST_STATUSES]
MAX_SEARCH_CHARS = 200


def _iso_8601(value: object) -> datetime:
    """Only ISO 8601 text: pydantic would also take a number (or "0.5") as Unix time."""
    if not isinstance(value, str):
        raise ValueError("give an ISO 8601 time as text, with its offset")  # noqa: TRY004 - pydantic wants ValueError
    return datetime.fromisoformat(value)


def _in_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 has no UTC time
        raise ValueError("out of range once converted to UTC") from None


# A timestamp in a query: ISO 8601 with its offset (2026-12-01T10:00:00Z), held in UTC.
UtcTime = Annotated[AwareDatetime, BeforeValidator(_iso_8601), AfterValidator(_in_utc)]
SearchText = Annotated[str, Field(min_length=1, max_length=MAX_SEARCH_CHARS, pattern="^[^\\x00]*$")]


def _comma_list(value: object) -> object:
    return value.split(",") if isinstance(value, str) else value


class ListQuery(BaseModel):
    """The query string of GET /v1/jobs. Unknown parameters are refused, so a typo such as
    ?state=dead is an error rather than a silently unfiltered list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: QueueName | None = None
    status: ListStatus | None = None
    type: TypeName | None = None
    limit: int = Field(50, ge=1, le=MAX_LIST_LIMIT)
    cursor: str | None = Field(None, min_length=1, max_length=500)
    created_from: UtcTime | None = None  # created at or after
    created_to: UtcTime | None = None  # created before
    id: uuid.UUID | None = None
    payload_contains: SearchText | None = None
    # Payloads and results are left out unless asked for: a page of big jobs is a big page.
    include: Annotated[tuple[Literal[BODIES], ...], BeforeValidator(_comma_list)] = ()

    @field_validator("include")
    @classmethod
    def _each_once(cls, include: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(include)) < len(include):
            raise ValueError("name payload and result at most once each")
        return include


class BulkFilter(BaseModel):
    """Which jobs of one queue a bulk action applies to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: QueueName
    type: TypeName | None = None
    created_from: UtcTime | None = None  # created at or after
    created_to: UtcTime | None = None  # created before
    payload_contains: SearchText | None = None  # as the list's search finds it
    status: str  # narrowed by each action

    @classmethod
    def parse(cls, data: object) -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidArgument("invalid filter", details=describe_errors(exc)) from None

    def job_filter(self, tenant: str) -> JobFilter:
        """The filter over `tenant`'s queue of this name."""
        return JobFilter(
            self.queue,
            JobStatus(self.status),
            self.type,
            self.created_from,
            self.created_to,
            self.payload_contains,
            tenant,
        )


class RetryFilter(BulkFilter):
    """The body of POST /v1/jobs/retry: which jobs to put back in line (dead ones by default)."""

    status: Literal["dead", "failed", "cancelled"] = "dead"


class DeleteFilter(BulkFilter):
    """The body of DELETE /v1/jobs: which finished jobs to delete (the status is required)."""

    status: Literal["succeeded", "dead", "cancelled"]


class WaitQuery(BaseModel):
    """The query string of GET /v1/jobs/{id}: ?wait=30s holds the answer until the job is
    finished or the wait ends (at most MAX_WAIT_SECONDS; longer waits are cut to it);
    ?include=attempts_history adds every attempt (one more indexed read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wait: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 0.0
    include: Literal["attempts_history"] | None = None


PLAIN_GET = WaitQuery()  # GET /v1/jobs/{id} without a query string: no wait, no attempts


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


def created_json(submitted: Submitted) -> dict[str, Any]:
    """A submitted job: its id, status and run_at now, and what the submission did."""
    job = submitted.job
    return {
        "id": job.id,
        "status": job.status.value,
        "run_at": timestamp(job.run_at),
        "outcome": submitted.outcome.value,
    }


def job_json(job: Job, include: Sequence[str] = BODIES) -> dict[str, Any]:
    """Every field a client may read, the bodies (payload, result) only if included; the
    lease id stays private to the worker holding it."""
    body = _job_fields(job)
    for name in BODIES:
        if name not in include:
            del body[name]
    return body


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    """One attempt; outcome, finished_at and error are null while it runs, and only the
    attempt in flight has a lease_expires_at."""
    return {
        "attempt": attempt.attempt,
        "worker_id": attempt.worker_id,
        "leased_at": timestamp(attempt.leased_at),
        "finished_at": timestamp(attempt.finished_at),
        "outcome": attempt.outcome.value if attempt.outcome is not None else None,
        "error": attempt.error,
        "lease_expires_at": timestamp(attempt.lease_expires_at),
    }


def _job_fields(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "type": job.type,
        "queue": job.queue,
        "payload": job.payload,
        "priority": job.priority,
        "status": job.status.value,
        # pending, but not before run_at: scheduled, not ready (a view, not a stored status)
        "scheduled": job.status is JobStatus.PENDING and job.run_at > utcnow(),
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "timeout_seconds": job.timeout_seconds,
        "last_error": job.last_error,
        "result": job.result,
        "run_at": timestamp(job.run_at),
        "leased_by": job.leased_by,
        "leased_at": timestamp(job.leased_at),
        "lease_expires_at": timestamp(job.lease_expires_at),
        "created_at": timestamp(job.created_at),
        "updated_at": timestamp(job.updated_at),
        "finished_at": timestamp(job.finished_at),
        "workflow_id": job.workflow_id,
        "ref": job.ref,
        "on_parent_failure": job.on_parent_failure,
        "pending_parents": job.pending_parents,
    }


def links_json(job: Job) -> dict[str, list[str]]:
    """The ids of a job's parents and dependants (read only for a job that has some)."""
    if job.pending_parents is None and not job.has_dependants:
        return {"depends_on": [], "dependants": []}
    parents, dependants = services().store.links(job.id)
    return {"depends_on": parents, "dependants": dependants}
