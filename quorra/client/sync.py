"""`Client`: the blocking client, one pooled keep-alive httpx connection pool per client.

    with Client.from_env() as client:
        job = client.enqueue("email_send", {"to": "a@b.c"}, queue="email", delay=timedelta(minutes=5))
        done = client.wait(job.id, timeout=30)

A Client is safe to share between threads (httpx.Client is)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Self

import httpx
from tenacity import Retrying

from quorra.client import calls
from quorra.client.calls import Call
from quorra.client.errors import Unavailable, Unreachable, WaitTimeout
from quorra.client.models import (
    DEV_API_KEY,
    Attempt,
    Job,
    QueueCount,
    SubmittedJob,
    SubmittedWorkflow,
    Worker,
    Workflow,
)

DEFAULT_URL = "http://localhost:8080"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_RETRIES = 3
# The server closes an idle keep-alive connection after QUORRA_WEB_KEEPALIVE (5 s): the
# client lets go of it first, so a request is never sent on a connection being closed.
KEEPALIVE_SECONDS = 4.0


def settings_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """QUORRA_URL (default http://localhost:8080) and the first key of QUORRA_API_KEY."""
    environ = os.environ if environ is None else environ
    keys = [key.strip() for key in environ.get("QUORRA_API_KEY", "").split(",") if key.strip()]
    return environ.get("QUORRA_URL") or DEFAULT_URL, keys[0] if keys else DEV_API_KEY


def http_options(url: str, api_key: str, timeout: float) -> dict[str, Any]:
    return {
        "base_url": url.rstrip("/"),
        "headers": {"X-API-Key": api_key, "Accept": "application/json", "User-Agent": "quorra-client"},
        "timeout": httpx.Timeout(timeout),
        "limits": httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS),
    }


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str = DEV_API_KEY,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retries: int = DEFAULT_RETRIES,
    ):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self._http = httpx.Client(**http_options(url, api_key, timeout))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Client:
        url, api_key = settings_from_env(environ)
        return cls(url, api_key, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- jobs ---------------------------------------------------------------------------------

    def enqueue(
        self,
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
    ) -> SubmittedJob:
        spec = calls.job_spec(
            type,
            payload,
            queue=queue,
            priority=priority,
            delay=delay,
            run_at=run_at,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            depends_on=depends_on,
            on_parent_failure=on_parent_failure,
        )
        return SubmittedJob.from_json(self._call(calls.submit(spec)))

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[SubmittedJob]:
        """Each item holds enqueue's arguments ({"type": ..., "payload": ..., "queue": ...}).
        Sent 1,000 per request; each request is all or nothing. If one fails, the error's
        ``created`` lists the jobs the earlier requests created."""
        created: list[SubmittedJob] = []
        for chunk in calls.chunks([calls.spec_of(job) for job in jobs]):
            try:
                answer = self._call(calls.submit_batch(chunk))
            except Exception as exc:
                exc.created = created  # type: ignore[attr-defined]
                raise
            created.extend(SubmittedJob.from_json(item) for item in answer["jobs"])
        return created

    def submit_workflow(self, jobs: Iterable[Mapping[str, Any]], *, name: str | None = None) -> SubmittedWorkflow:
        """Jobs that depend on each other by ref (each item: enqueue's arguments plus "ref",
        its depends_on naming refs or existing job ids), created all or none."""
        specs = [calls.spec_of(job) for job in jobs]
        return SubmittedWorkflow.from_json(self._call(calls.submit_workflow(specs, name)))

    def workflow(self, workflow_id: str) -> Workflow:
        """The status of a workflow as a whole, its counts by status and its jobs."""
        return Workflow.from_json(self._call(calls.get_workflow(workflow_id)))

    def get(self, job_id: str) -> Job:
        return Job.from_json(self._call(calls.get_job(job_id)))

    def cancel(self, job_id: str) -> Job:
        return Job.from_json(self._call(calls.change(job_id, "cancel")))

    def retry(self, job_id: str) -> Job:
        return Job.from_json(self._call(calls.change(job_id, "retry")))

    def retry_dead(self, queue: str, *, type: str | None = None) -> int:
        """Put every dead job of `queue` (and `type`) back in line; the number retried."""
        return self._call(calls.retry_dead(queue, type))["retried"]

    def list(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        type: str | None = None,
        include: Iterable[str] = (),
        limit: int | None = None,
        page_size: int = calls.LIST_PAGE_SIZE,
    ) -> Iterator[Job]:
        """Jobs newest first, following the cursor page after page (at most `limit`)."""
        filters = calls.list_filters(queue, status, type, include)
        cursor, seen = None, 0
        while True:
            size = page_size if limit is None else min(page_size, limit - seen)
            page = self._call(calls.list_page(filters, size, cursor))
            for item in page["jobs"]:
                yield Job.from_json(item)
            seen += len(page["jobs"])
            cursor = page["next_cursor"]
            if not cursor or (limit is not None and seen >= limit):
                return

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it is succeeded, dead or cancelled (long polls of at most 60 s each,
        woken by the server when the job finishes). WaitTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = calls.MAX_WAIT_SECONDS if deadline is None else deadline - time.monotonic()
            try:
                job = Job.from_json(self._call(calls.get_job(job_id, min(max(remaining, 0), calls.MAX_WAIT_SECONDS))))
            except Unavailable as exc:  # every wait slot taken, or the database is down: poll
                if isinstance(exc, Unreachable) or (deadline is not None and remaining <= 0):
                    raise
                time.sleep(min(exc.retry_after or 1.0, max(remaining, 0)))
                continue
            if job.is_finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s", job=job)

    # -- schedules (plain JSON documents, as GET /v1/schedules shows them) -------------------------

    def schedules(self) -> list[dict[str, Any]]:
        return self._call(calls.schedule("GET"))["schedules"]

    def schedule(self, name: str) -> dict[str, Any]:
        return self._call(calls.schedule("GET", name))

    def create_schedule(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """`spec`: name, cron or interval_seconds, timezone, job {type, queue, payload, ...}, missed_ticks."""
        return self._call(calls.schedule("POST", body=dict(spec)))

    def update_schedule(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        return self._call(calls.schedule("PATCH", name, body=dict(changes)))

    def pause_schedule(self, name: str) -> dict[str, Any]:
        return self._call(calls.schedule("POST", name, "pause"))

    def resume_schedule(self, name: str) -> dict[str, Any]:
        return self._call(calls.schedule("POST", name, "resume"))

    def delete_schedule(self, name: str) -> None:
        self._call(calls.schedule("DELETE", name))

    def attempts(self, job_id: str) -> list[Attempt]:
        """Every attempt of the job, oldest first; the one running, if any, last."""
        answer = self._call(Call("GET", f"/v1/jobs/{job_id}/attempts", calls.Kind.READ))
        return [Attempt.from_json(item) for item in answer["attempts"]]

    def delete(self, job_id: str) -> None:
        """Delete a finished job (Conflict if it has not finished: cancel it first)."""
        self._call(Call("DELETE", f"/v1/jobs/{job_id}", calls.Kind.CHANGE))

    def delete_jobs(
        self,
        queue: str,
        status: str,
        *,
        type: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> int:
        """Delete every finished job (succeeded, dead or cancelled) of `queue` in `status`,
        of `type` and created in [created_from, created_to) if given; the number deleted."""
        answer = self._call(calls.delete_jobs(queue, status, type, created_from, created_to))
        return answer["deleted"]

    def pause_queue(self, queue: str) -> dict[str, Any]:
        """No worker leases the queue's jobs until it is resumed: {"queue", "is_paused", "paused_at"}."""
        return self._call(calls.queue_action(queue, "pause"))

    def resume_queue(self, queue: str) -> dict[str, Any]:
        return self._call(calls.queue_action(queue, "resume"))

    def workers(self, minutes: int = 5) -> list[Worker]:
        """The workers seen in the last `minutes`, most recently seen first."""
        answer = self._call(Call("GET", "/v1/workers", calls.Kind.READ, params={"minutes": str(minutes)}))
        return [Worker.from_json(item) for item in answer["workers"]]

    # -- webhooks (plain JSON documents, as GET /v1/webhooks shows them) --------------------------

    def webhooks(self) -> list[dict[str, Any]]:
        return self._call(calls.webhook("GET"))["webhooks"]

    def webhook(self, webhook_id: str) -> dict[str, Any]:
        return self._call(calls.webhook("GET", webhook_id))

    def create_webhook(
        self,
        url: str,
        events: Iterable[str],
        *,
        queues: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
        description: str | None = None,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        """The new webhook, with its signing `secret`: the only time the server shows it."""
        body: dict[str, Any] = {"url": url, "events": list(events)}
        optional = {"queues": queues, "types": types, "description": description, "max_retries": max_retries}
        body |= {name: list(v) if name in ("queues", "types") else v for name, v in optional.items() if v is not None}
        return self._call(calls.webhook("POST", body=body))

    def delete_webhook(self, webhook_id: str) -> None:
        self._call(calls.webhook("DELETE", webhook_id))

    # -- queues and health ---------------------------------------------------------------------

    def queues(self) -> list[QueueCount]:
        return [QueueCount.from_json(row) for row in self._call(Call("GET", "/v1/queues", calls.Kind.READ))["queues"]]

    def health(self) -> dict[str, Any]:
        """GET /readyz: {"status": "ready" | "degraded", "checks": {...}}; Unavailable if not ready."""
        return self._call(Call("GET", "/readyz", calls.Kind.READ))

    # -- the wire ----------------------------------------------------------------------------------

    def _call(self, call: Call) -> Any:
        for attempt in Retrying(**calls.retry_policy(call.kind, self.retries)):
            with attempt:
                return self._send(call)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True raises first

    def _send(self, call: Call) -> Any:
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                headers=call.headers,
                timeout=self._timeout(call),
            )
        except httpx.TransportError as exc:
            raise calls.transport_error(exc, self.url) from exc
        return calls.read_answer(response)

    def _timeout(self, call: Call) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=self.timeout + call.extra_seconds)
