"""Per-job execution timeouts (a job's `timeout_seconds`).

A job without a timeout runs on its job thread, as always. A job with one runs where the
job thread can stop waiting for it:

- a coroutine handler (``async def``) runs on the worker's event loop, and past the timeout
  its task is cancelled for real: CancelledError is raised at its current ``await``;
- a sync handler runs on a thread of its own. Python cannot kill a thread, so past the
  timeout the worker sets ``job.timed_out`` and ``job.lease_lost``, waits a moment
  (ABANDON_GRACE_SECONDS) for a handler that checks them to return, and then *abandons*
  the thread: it goes on running in the background, its result is ignored, and it is
  counted (``abandoned_threads``, the ``quorra_worker_threads_abandoned_total`` metric and
  a ``job.thread_abandoned`` warning). After QUORRA_WORKER_MAX_ABANDONED abandoned threads
  (0: never) the worker stops as on SIGTERM and exits 3, so that its supervisor starts a
  fresh process, as Celery's max_tasks_per_child recycles a worker.

Either way the attempt is nacked with "timed out after N s" and retried by the usual
policy; the heartbeats stop extending its lease at the timeout.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from quorra.config import prepare_multiprocess_dir
from quorra.worker.aio import CoroutineRunner, TimedOut
from quorra.worker.job import LeasedJob

logger = logging.getLogger(__name__)

ABANDON_GRACE_SECONDS = 1.0  # a handler that sees job.timed_out and returns within this is not abandoned


@functools.cache
def threads_abandoned() -> Counter:
    """The worker's one metric, declared by the first TimeLimits, not at import: declaring a
    metric opens its file in PROMETHEUS_MULTIPROC_DIR at once when that is set, and importing
    the SDK must not depend on that directory. It is made first if missing (a worker may start
    before the servers that make it: a Procfile starts all at once); InvalidConfig if it cannot
    be made, which quorra-worker reports with exit code 2."""
    prepare_multiprocess_dir()
    return Counter(
        "quorra_worker_threads_abandoned",
        "Handler threads still running past their job's timeout, left to run on in the background",
    )


class TimeLimits:
    def __init__(
        self,
        coroutines: CoroutineRunner,
        *,
        worker_id: str,
        max_abandoned: int = 0,
        on_limit: Callable[[], None] = lambda: None,
    ):
        threads_abandoned()  # exposed from the start, at 0
        self.coroutines = coroutines
        self.worker_id = worker_id
        self.max_abandoned = max_abandoned
        self.on_limit = on_limit  # called once, when max_abandoned is reached
        self.abandoned_threads = 0
        self._lock = threading.Lock()

    def call(self, function: Callable[[LeasedJob], Any], job: LeasedJob) -> Any:
        """The handler's value; raises what it raised, or TimedOut past the job's timeout."""
        if job.timeout_seconds is None:
            value = function(job)
            return self.coroutines.run(value) if inspect.isawaitable(value) else value
        if inspect.iscoroutinefunction(function):
            return self._await(function(job), job)
        return self._in_thread(function, job)

    def _await(self, awaitable: Any, job: LeasedJob) -> Any:
        try:
            return self.coroutines.run(awaitable, timeout=job.timeout_seconds)
        except TimedOut:
            _mark_timed_out(job)
            raise

    def _in_thread(self, function: Callable[[LeasedJob], Any], job: LeasedJob) -> Any:
        future: concurrent.futures.Future = concurrent.futures.Future()
        thread = threading.Thread(  # with the job thread's context variables (the handler's span, if tracing)
            target=contextvars.copy_context().run,
            args=(self._run_into, future, function, job),
            name=f"quorra-handler-{job.id}",
            daemon=True,
        )
        thread.start()
        concurrent.futures.wait([future], job.timeout_seconds)
        if future.done():
            return future.result()
        _mark_timed_out(job)
        concurrent.futures.wait([future], ABANDON_GRACE_SECONDS)
        if not future.done():
            self._abandon(job)
        raise TimedOut()

    def _run_into(self, future: concurrent.futures.Future, function: Callable[[LeasedJob], Any], job: LeasedJob):
        try:
            value = function(job)
            if inspect.isawaitable(value):  # a sync function that returned a coroutine
                value = self.coroutines.run(value)
        except BaseException as exc:  # noqa: BLE001 - handed to the job thread, which nacks
            future.set_exception(exc)
        else:
            future.set_result(value)

    def _abandon(self, job: LeasedJob) -> None:
        with self._lock:
            self.abandoned_threads += 1
            count = self.abandoned_threads
        threads_abandoned().inc()
        logger.warning(
            "handler thread abandoned past the job's timeout; it runs on in the background",
            extra={
                "event": "job.thread_abandoned",
                "worker_id": self.worker_id,
                "timeout_seconds": job.timeout_seconds,
                "abandoned_threads": count,
                **job.log_fields(),
            },
        )
        if self.max_abandoned and count == self.max_abandoned:
            logger.warning(
                "too many abandoned handler threads; the worker stops to be restarted fresh",
                extra={"event": "worker.recycling", "worker_id": self.worker_id, "abandoned_threads": count},
            )
            self.on_limit()


def _mark_timed_out(job: LeasedJob) -> None:
    job.timed_out.set()
    job.lease_lost.set()


def timed_out_error(job: LeasedJob) -> str:
    return f"timed out after {job.timeout_seconds} s"
