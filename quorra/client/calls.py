"""What both clients share, without I/O: each REST call as a `Call` (method, path, body,
which retries are safe), reading an answer into a value or an exception, the job body of
a submit, and the retry policy (tenacity) that Client and AsyncClient apply alike.

Retries: a read is retried on any transport error and on 502/503/504. A submit carries an
Idempotency-Key (a fresh uuid4 per logical submit, the same on each of its retries), so it
is retried on transport errors and on a 503 (Quorra's 503 means nothing was changed). A
cancel or retry of one job is retried only when the request never left (connection
refused) or on a 503. Retry-After is honoured."""

from __future__ import annotations

import enum
import functools
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tenacity.wait import wait_base

from quorra.client.errors import ServerError, Unavailable, Unreachable, error_from_answer

BATCH_SIZE = 1000  # the server's limit per POST /v1/jobs/batch
MAX_WAIT_SECONDS = 60.0  # the server's cap on ?wait=
LIST_PAGE_SIZE = 500  # the server's largest page
RETRY_AFTER_CAP_SECONDS = 10.0


class Kind(enum.Enum):
    READ = "read"  # no effect: always safe to repeat
    SUBMIT = "submit"  # creates jobs; made safe to repeat by its Idempotency-Key
    CHANGE = "change"  # cancel or retry one job: repeated only if it surely did nothing


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    kind: Kind
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    extra_seconds: float = 0.0  # added to the read timeout (a long poll holds the answer)


def get_job(job_id: str, wait_seconds: float | None = None) -> Call:
    if not wait_seconds:
        return Call("GET", f"/v1/jobs/{job_id}", Kind.READ)
    return Call(
        "GET", f"/v1/jobs/{job_id}", Kind.READ, params={"wait": f"{wait_seconds:.3f}s"}, extra_seconds=wait_seconds
    )


def submit(spec: dict[str, Any]) -> Call:
    return Call("POST", "/v1/jobs", Kind.SUBMIT, json=spec, headers=_idempotency_key() | trace_headers())


def submit_batch(specs: list[dict[str, Any]]) -> Call:
    return Call(
        "POST", "/v1/jobs/batch", Kind.SUBMIT, json={"jobs": specs}, headers=_idempotency_key() | trace_headers()
    )


def submit_workflow(jobs: list[dict[str, Any]], name: str | None) -> Call:
    """No Idempotency-Key on this route: repeated only if surely not sent."""
    body: dict[str, Any] = {"jobs": jobs} | ({"name": name} if name is not None else {})
    return Call("POST", "/v1/workflows", Kind.CHANGE, json=body)


def get_workflow(workflow_id: str) -> Call:
    return Call("GET", f"/v1/workflows/{workflow_id}", Kind.READ)


def change(job_id: str, verb: str) -> Call:
    return Call("POST", f"/v1/jobs/{job_id}/{verb}", Kind.CHANGE)


def schedule(method: str, name: str | None = None, verb: str | None = None, body: Any = None) -> Call:
    """A /v1/schedules call. Reads are repeated freely; a change only if surely not sent
    (a create repeated after it landed would answer 409)."""
    path = "/v1/schedules" + (f"/{quote(name, safe='')}" if name else "") + (f"/{verb}" if verb else "")
    return Call(method, path, Kind.READ if method == "GET" else Kind.CHANGE, json=body)


def webhook(method: str, webhook_id: str | None = None, body: Any = None) -> Call:
    """A /v1/webhooks call. Reads are repeated freely; a change only if surely not sent (a
    create repeated after it landed would make a second webhook)."""
    path = "/v1/webhooks" + (f"/{quote(webhook_id, safe='')}" if webhook_id else "")
    return Call(method, path, Kind.READ if method == "GET" else Kind.CHANGE, json=body)


def retry_dead(queue: str, type: str | None) -> Call:
    body = {"queue": queue, "status": "dead", **({"type": type} if type else {})}
    return Call("POST", "/v1/jobs/retry", Kind.CHANGE, json=body)


def queue_action(queue: str, verb: str) -> Call:
    return Call("POST", f"/v1/queues/{quote(queue, safe='')}/{verb}", Kind.CHANGE)


def delete_jobs(
    queue: str, status: str, type: str | None, created_from: datetime | None, created_to: datetime | None
) -> Call:
    body = {"queue": queue, "status": status, "type": type}
    body |= {
        name: moment.isoformat()
        for name, moment in (("created_from", created_from), ("created_to", created_to))
        if moment
    }
    return Call("DELETE", "/v1/jobs", Kind.CHANGE, json={k: v for k, v in body.items() if v is not None})


def list_page(filters: Mapping[str, Any], page_size: int, cursor: str | None) -> Call:
    params = {name: str(value) for name, value in filters.items() if value is not None}
    params["limit"] = str(page_size)
    if cursor:
        params["cursor"] = cursor
    return Call("GET", "/v1/jobs", Kind.READ, params=params)


def list_filters(queue: str | None, status: str | None, type: str | None, include: Iterable[str]) -> dict[str, Any]:
    return {"queue": queue, "status": status, "type": type, "include": ",".join(include) or None}


def _idempotency_key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def trace_headers() -> dict[str, str]:
    """The current span's context (traceparent, tracestate, baggage: OpenTelemetry's
    configured propagators) when the opentelemetry API is installed and a span is active,
    so that jobs submitted inside a span are traced from there (README, "Tracing")."""
    inject = _propagator_inject()
    headers: dict[str, str] = {}
    if inject is not None:
        inject(headers)
    return headers


@functools.cache
def _propagator_inject() -> Any:
    """opentelemetry.propagate.inject, looked up at the first submit; None when not installed."""
    try:
        from opentelemetry.propagate import inject
    except ImportError:
        return None
    return inject


# -- the job body of a submit ---------------------------------------------------------------------


def job_spec(
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    delay: timedelta | float | None = None,
    run_at: datetime | None = None,
    max_retries: int | None = None,
    timeout_seconds: int | None = None,
    depends_on: Iterable[str] | None = None,
    on_parent_failure: str | None = None,
    ref: str | None = None,
) -> dict[str, Any]:
    """The body of POST /v1/jobs. Options left None take the server's defaults. `delay`
    (a timedelta or seconds) and `run_at` (an aware datetime, compared with this machine's
    clock) become whole `delay_seconds`, rounded up. `depends_on`: job ids (or, in a
    workflow, refs) that must succeed first; `ref`: the job's name in a workflow."""
    if delay is not None and run_at is not None:
        raise ValueError("give delay or run_at, not both")
    spec: dict[str, Any] = {"type": type, "payload": dict(payload or {})}
    options = {
        "queue": queue,
        "priority": priority,
        "max_retries": max_retries,
        "delay_seconds": _delay(delay, run_at),
        "timeout_seconds": timeout_seconds,
        "depends_on": list(depends_on) if depends_on is not None else None,
        "on_parent_failure": on_parent_failure,
        "ref": ref,
    }
    spec.update({name: value for name, value in options.items() if value is not None})
    return spec


def _delay(delay: timedelta | float | None, run_at: datetime | None) -> int | None:
    if run_at is not None:
        if run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware (datetime.now(UTC) + ...)")
        delay = run_at - datetime.now(UTC)
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    return max(0, math.ceil(seconds))


def spec_of(job: Mapping[str, Any]) -> dict[str, Any]:
    """One item of enqueue_many: the keyword arguments of enqueue, as a mapping."""
    options = dict(job)
    return job_spec(options.pop("type"), options.pop("payload", None), **options)


def chunks(items: list[Any], size: int = BATCH_SIZE) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


# -- answers ------------------------------------------------------------------------------------------


def read_answer(response: httpx.Response) -> Any:
    """The decoded JSON of a 2xx answer (None for a 204); any other answer raises its
    QuorraClientError."""
    if response.status_code == 204:
        return None
    body = _json_or_text(response)
    if response.is_success:
        if isinstance(body, str):
            raise ServerError(f"answer is not JSON: {body[:100]!r}", status=response.status_code)
        return body
    raise error_from_answer(response.status_code, body, response.headers)


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def transport_error(exc: httpx.TransportError, base_url: str) -> Unreachable:
    sent = not isinstance(
        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol
    )
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return Unreachable(f"cannot reach {base_url}: {reason}", request_sent=sent)


# -- retries --------------------------------------------------------------------------------------------


def is_retryable(kind: Kind, exc: BaseException) -> bool:
    if isinstance(exc, Unreachable):
        return kind is not Kind.CHANGE or not exc.request_sent
    if isinstance(exc, Unavailable):
        return exc.status == 503 or (kind is Kind.READ and exc.status in (502, 504))
    return False


class wait_retry_after(wait_base):
    """The server's Retry-After when it gave one (capped), else the fallback backoff."""

    def __init__(self, fallback: wait_base):
        self.fallback = fallback

    def __call__(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_SECONDS)
        return self.fallback(retry_state)


def retry_policy(kind: Kind, retries: int) -> dict[str, Any]:
    """Keyword arguments for tenacity.Retrying / AsyncRetrying."""
    return {
        "stop": stop_after_attempt(retries + 1),
        "wait": wait_retry_after(wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2)),
        "retry": retry_if_exception(lambda exc: is_retryable(kind, exc)),
        "reraise": True,
    }
