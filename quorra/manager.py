"""One home per verb (Faktory's Manager): every way a job changes state goes through one
``JobManager`` method, which runs the store verb, then counts its metrics, then publishes
the wake-ups it implies, each exactly once. The edges (REST views, the gRPC servicer, the
scheduler) hold only a manager, so a new caller cannot forget a side effect.

Batched verbs return one result per item, in order: one stale lease never fails its
neighbours. Wake-ups are best effort: the change is already committed, and a lost wake-up
costs a waiting worker one poll interval at most.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from quorra import metrics
from quorra.errors import QuorraError
from quorra.jobs import DEFAULT_IDEMPOTENCY_TTL_SECONDS, TERMINAL, Job, JobSpec
from quorra.notify import Notifier, finished_key
from quorra.store import Settlement, SettleResult, Store, Submitted

logger = logging.getLogger(__name__)


class JobManager:
    def __init__(self, store: Store, notifier: Notifier):
        self.store = store
        self.notifier = notifier

    # -- a client's verbs ---------------------------------------------------------------------

    def enqueue(self, spec: JobSpec, **options: Any) -> Submitted:
        return self.enqueue_many([spec], **options)[0]

    def enqueue_many(
        self,
        specs: Sequence[JobSpec],
        *,
        scope: str = "",
        key_ttl_seconds: float = DEFAULT_IDEMPOTENCY_TTL_SECONDS,
    ) -> list[Submitted]:
        """All the jobs in one transaction, each created, or replayed (its idempotency key
        within `scope` was used for the same job) or a duplicate (its unique slot is held).
        Waiting workers of the queues that got a new job are woken."""
        submitted = self.store.submit_many(specs, scope=scope, key_ttl_seconds=key_ttl_seconds)
        created = [item.job for item in submitted if item.created]
        metrics.jobs_created(created)
        metrics.submissions_deduplicated(item.outcome.value for item in submitted if not item.created)
        self._wake(job.queue for job in created)
        return submitted

    def cancel(self, job_id: str) -> Job:
        job = self.store.cancel(job_id)
        metrics.job_cancelled(job)
        self._announce_finished([job])
        return job

    def retry(self, job_id: str) -> Job:
        job = self.store.retry(job_id)
        metrics.job_retried(job)
        self._wake([job.queue])
        return job

    def retry_dead(self, queue: str, *, type: str | None = None) -> int:
        """Every dead job of `queue` (and `type`) back in line in one statement; the count."""
        by_type = self.store.retry_dead(queue, type=type)
        metrics.dead_jobs_retried(queue, by_type)
        if by_type:
            self._wake([queue])
        return sum(by_type.values())

    # -- a worker's verbs -----------------------------------------------------------------------

    def lease(
        self,
        queues: Sequence[str],
        worker_id: str,
        max_jobs: int,
        ttl_seconds: float,
        **options: Any,
    ) -> list[Job]:
        jobs = self.store.lease_jobs(queues, worker_id, max_jobs, ttl_seconds, **options)
        metrics.jobs_leased(jobs)
        return jobs

    def settle_many(self, settlements: Sequence[Settlement], *, worker_id: str | None) -> list[SettleResult]:
        """Acks and nacks in one store call; one result per settlement, in order. A failed
        attempt is retried after its backoff, so its wake-up is the scheduler's (wake_due)."""
        results = self.store.settle_many(settlements, worker_id=worker_id)
        settled = [result.job for result in results if result.job is not None]
        for job in settled:
            metrics.job_settled(job)
        self._announce_finished(settled)
        return results

    def ack(self, job_id: str, lease_id: str, result: Any = None, *, worker_id: str | None) -> Job:
        settlement = Settlement(job_id, lease_id, success=True, result=result)
        return self.settle_many([settlement], worker_id=worker_id)[0].job_or_raise()

    def nack(self, job_id: str, lease_id: str, error: str, *, worker_id: str | None) -> Job:
        settlement = Settlement(job_id, lease_id, success=False, error=error)
        return self.settle_many([settlement], worker_id=worker_id)[0].job_or_raise()

    def extend(self, job_id: str, lease_id: str, ttl_seconds: float, *, worker_id: str | None) -> Job:
        return self.store.extend_lease(job_id, lease_id, ttl_seconds, worker_id=worker_id)

    def release_many(self, jobs: Iterable[Job]) -> list[Job]:
        """Hand back leases that never reached their worker (no attempt spent) and wake the
        queues' other workers. A lease that cannot be handed back is left to expire."""
        released = [job for job in map(self._release_or_warn, jobs) if job is not None]
        for job in released:
            metrics.lease_released(job)
        self._wake(job.queue for job in released)
        return released

    def _release_or_warn(self, job: Job) -> Job | None:
        try:
            return self.store.release(job.id, job.lease_id or "")
        except QuorraError as exc:
            logger.warning(
                "undelivered lease not handed back; it will expire",
                extra={
                    "event": "lease.release_failed",
                    "job_id": job.id,
                    "queue": job.queue,
                    "worker_id": job.leased_by,
                    "error": exc.message,
                },
            )
            return None

    # -- the scheduler's verbs ------------------------------------------------------------------

    def reap_expired(self, *, now: datetime | None = None, limit: int = 500) -> list[Job]:
        """One batch of expired leases, settled as failed attempts ('lease expired'). A reaped
        job is retried after its backoff, so its wake-up is wake_due's."""
        reaped = self.store.reap_expired_leases(now=now, limit=limit)
        metrics.leases_expired(reaped)
        self._announce_finished(reaped)  # those out of retries are dead
        return reaped

    def wake_due(self, after: datetime, *, now: datetime | None = None) -> list[str]:
        """Wake the queues with a waiting job whose run_at fell in (after, now]."""
        queues = self.store.queues_due_between(after, now=now)
        self._wake(queues)
        return queues

    def prune(self, finished_before: datetime, *, limit: int = 500) -> int:
        pruned = self.store.prune(finished_before, limit=limit)
        if pruned:
            metrics.jobs_pruned(pruned)
        return pruned

    def prune_idempotency_keys(self, now: datetime, *, limit: int = 500) -> int:
        return self.store.prune_idempotency_keys(now=now, limit=limit)

    # -- wake-ups ---------------------------------------------------------------------------------

    def _announce_finished(self, jobs: Iterable[Job]) -> None:
        """Wake the waits on jobs that just finished (GET /v1/jobs/{id}?wait=): one publish
        per queue of the batch, not one per job; a waiter re-reads its own job."""
        self._publish(finished_key(job.queue) for job in jobs if job.status in TERMINAL)

    def _wake(self, queues: Iterable[str]) -> None:
        self._publish(queues)

    def _publish(self, keys: Iterable[str]) -> None:
        for queue in sorted(set(keys)):
            try:
                self.notifier.publish(queue)
            except Exception:  # best effort, see the module docstring
                logger.warning(
                    "wake-up not published",
                    extra={"event": "notify.failed", "queue": queue},
                    exc_info=True,
                )
