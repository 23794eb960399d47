"""GET /v1/jobs/{id}?wait=30s: the answer is held until the job finishes (succeeded, dead,
cancelled) or the wait ends, whichever comes first; then the job as it is, 200 either way.

A wait holds one of the web process's request threads (gunicorn gthread), so waits are
bounded per process: at most ``max_job_waits(QUORRA_WEB_THREADS)`` at once (all threads
but a quarter, at least 2 kept for other requests, as for the gRPC lease long polls); one
more is answered 503 with Retry-After at once, and the client polls. A wait lasts at most
MAX_WAIT_SECONDS. It is woken by the ``finished_key(queue)`` publish of the JobManager
(the same notifier as lease wake-ups: Redis, LISTEN/NOTIFY or in-process) and re-reads its
job then, and at least every SLICE_SECONDS (the notifier's re-check, and to notice that the
process is stopping: SIGTERM answers every wait at once with the job as it is)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from quorra.errors import QuorraError
from quorra.jobs import TERMINAL, Job
from quorra.notify import Notifier, finished_key
from quorra.store import Store

MAX_WAIT_SECONDS = 60.0
SLICE_SECONDS = 1.0
RETRY_AFTER_SECONDS = 1


class TooManyWaits(QuorraError):
    """Too many waits in progress on this server; retry shortly, or read the job without wait."""

    code = "unavailable"
    retry_after_seconds = RETRY_AFTER_SECONDS


def max_job_waits(threads: int) -> int:
    """All request threads but a quarter (at least 2 kept for other requests); at least 1."""
    return max(1, threads - max(2, threads // 4))


class JobWaits:
    def __init__(self, store: Store, notifier: Notifier, max_waits: int):
        self.store = store
        self.notifier = notifier
        self.max_waits = max_waits
        self.waiting = 0
        self._lock = threading.Lock()
        # Set from a signal handler, so a plain attribute (see quorra.shutdown); read each slice.
        self.stopping = False

    def stop(self) -> None:
        """Answer every wait within SLICE_SECONDS and start no new one (the process is stopping)."""
        self.stopping = True

    def until_finished(self, job: Job, seconds: float) -> Job:
        """`job` once finished, or as it is after `seconds` (capped at MAX_WAIT_SECONDS)."""
        if job.status in TERMINAL or seconds <= 0 or self.stopping:
            return job
        deadline = time.monotonic() + min(seconds, MAX_WAIT_SECONDS)
        with self._slot():
            subscription = self.notifier.listen([finished_key(job.queue)])
            job = self.store.get_job(
                job.id, tenant=job.tenant
            )  # a finish between the first read and listen() is not lost
            while job.status not in TERMINAL and not self.stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                subscription.wait(min(remaining, SLICE_SECONDS))
                job = self.store.get_job(job.id, tenant=job.tenant)
        return job

    @contextmanager
    def _slot(self) -> Iterator[None]:
        with self._lock:
            if self.waiting >= self.max_waits:
                raise TooManyWaits()
            self.waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self.waiting -= 1
