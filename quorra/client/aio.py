"""`AsyncClient`: the asyncio twin of Client, on the same calls, answers and retry policy
(quorra.client.calls); only the waiting differs.

    async with AsyncClient.from_env() as client:
        job = await client.enqueue("email_send", {"to": "a@b.c"})
        done = await client.wait(job.id, timeout=30)
        async for dead in client.list(status="dead"): ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Self

import httpx
from tenacity import AsyncRetrying

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
from quorra.client.sync import DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECONDS, DEFAULT_URL, http_options, settings_from_env


class AsyncClient:
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
        self._http = httpx.AsyncClient(**http_options(url, api_key, timeout))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> AsyncClient:
        url, api_key = settings_from_env(environ)
        return cls(url, api_key, **options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # -- jobs ---------------------------------------------------------------------------------

    async def enqueue(
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
        return SubmittedJob.from_json(await self._call(calls.submit(spec)))

    async def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[SubmittedJob]:
        """As Client.enqueue_many: 1,000 per request, ``created`` on the error of a failed one."""
        created: list[SubmittedJob] = []
        for chunk in calls.chunks([calls.spec_of(job) for job in jobs]):
            try:
                answer = await self._call(calls.submit_batch(chunk))
            except Exception as exc:
                exc.created = created  # type: ignore[attr-defined]
                raise
            created.extend(SubmittedJob.from_json(item) for item in answer["jobs"])
        return created

    async def submit_workflow(self, jobs: Iterable[Mapping[str, Any]], *, name: str | None = None) -> SubmittedWorkflow:
        """Jobs that depend on each other by ref (each item: enqueue's arguments plus "ref",
        its depends_on naming refs or existing job ids), created all or none."""
        specs = [calls.spec_of(job) for job in jobs]
        return SubmittedWorkflow.from_json(await self._call(calls.submit_workflow(specs, name)))

    async def workflow(self, workflow_id: str) -> Workflow:
        """The status of a workflow as a whole, its counts by status and its jobs."""
        return Workflow.from_json(await self._call(calls.get_workflow(workflow_id)))

    async def get(self, job_id: str) -> Job:
        return Job.from_json(await self._call(calls.get_job(job_id)))

    async def cancel(self, job_id: str) -> Job:
        return Job.from_json(await self._call(calls.change(job_id, "cancel")))

    async def retry(self, job_id: str) -> Job:
        return Job.from_json(await self._call(calls.change(job_id, "retry")))

    async def retry_dead(self, queue: str, *, type: str | None = None) -> int:
        return (await self._call(calls.retry_dead(queue, type)))["retried"]

    async def list(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        type: str | None = None,
        include: Iterable[str] = (),
        limit: int | None = None,
        page_size: int = calls.LIST_PAGE_SIZE,
    ) -> AsyncIterator[Job]:
        filters = calls.list_filters(queue, status, type, include)
        cursor, seen = None, 0
        while True:
            size = page_size if limit is None else min(page_size, limit - seen)
            page = await self._call(calls.list_page(filters, size, cursor))
            for item in page["jobs"]:
                yield Job.from_json(item)
            seen += len(page["jobs"])
            cursor = page["next_cursor"]
            if not cursor or (limit is not None and seen >= limit):
                return

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = calls.MAX_WAIT_SECONDS if deadline is None else deadline - time.monotonic()
            wait_seconds = min(max(remaining, 0), calls.MAX_WAIT_SECONDS)
            try:
                job = Job.from_json(await self._call(calls.get_job(job_id, wait_seconds)))
            except Unavailable as exc:
                if isinstance(exc, Unreachable) or (deadline is not None and remaining <= 0):
                    raise
                await asyncio.sleep(min(exc.retry_after or 1.0, max(remaining, 0)))
                continue
            if job.is_finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s", job=job)

    async def attempts(self, job_id: str) -> list[Attempt]:
        """Every attempt of the job, oldest first; the one running, if any, last."""
        answer = await self._call(Call("GET", f"/v1/jobs/{job_id}/attempts", calls.Kind.READ))
        return [Attempt.from_json(item) for item in answer["attempts"]]

    async def delete(self, job_id: str) -> None:
        """Delete a finished job (Conflict if it has not finished: cancel it first)."""
        await self._call(Call("DELETE", f"/v1/jobs/{job_id}", calls.Kind.CHANGE))

    async def delete_jobs(
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
        answer = await self._call(calls.delete_jobs(queue, status, type, created_from, created_to))
        return answer["deleted"]

    async def pause_queue(self, queue: str) -> dict[str, Any]:
        """No worker leases the queue's jobs until it is resumed: {"queue", "is_paused", "paused_at"}."""
        return await self._call(calls.queue_action(queue, "pause"))

    async def resume_queue(self, queue: str) -> dict[str, Any]:
        return await self._call(calls.queue_action(queue, "resume"))

    async def workers(self, minutes: int = 5) -> list[Worker]:
        """The workers seen in the last `minutes`, most recently seen first."""
        answer = await self._call(Call("GET", "/v1/workers", calls.Kind.READ, params={"minutes": str(minutes)}))
        return [Worker.from_json(item) for item in answer["workers"]]

    # -- queues and health ---------------------------------------------------------------------

    async def queues(self) -> list[QueueCount]:
        answer = await self._call(Call("GET", "/v1/queues", calls.Kind.READ))
        return [QueueCount.from_json(row) for row in answer["queues"]]

    async def health(self) -> dict[str, Any]:
        return await self._call(Call("GET", "/readyz", calls.Kind.READ))

    # -- the wire ----------------------------------------------------------------------------------

    async def _call(self, call: Call) -> Any:
        async for attempt in AsyncRetrying(**calls.retry_policy(call.kind, self.retries)):
            with attempt:
                return await self._send(call)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True raises first

    async def _send(self, call: Call) -> Any:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                headers=call.headers,
                timeout=httpx.Timeout(self.timeout, read=self.timeout + call.extra_seconds),
            )
        except httpx.TransportError as exc:
            raise calls.transport_error(exc, self.url) from exc
        return calls.read_answer(response)
