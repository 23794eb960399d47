"""One home per verb (Faktory's Manager): every way a job changes state goes through one
``JobManager`` method, which runs the store verb, then counts its metrics, then publishes
the wake-ups it implies, each exactly once. The edges (REST views, the gRPC servicer, the
scheduler) hold only a manager, so a new caller cannot forget a side effect.

Batched verbs return one result per item, in order: one stale lease never fails its
neighbours. Wake-ups are best effort: the change is already committed, and a lost wake-up
costs a waiting worker one poll interval at most.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from quorra import metrics
from quorra.access import DEFAULT_TENANT
from quorra.audit import Action, Actor, AuditEntry, audit_entry
from quorra.errors import QuorraError
from quorra.jobs import (
    DEFAULT_IDEMPOTENCY_TTL_SECONDS,
    LEASABLE,
    TERMINAL,
    Job,
    JobSpec,
    JobStatus,
    TraceContext,
)
from quorra.keys import ApiKey, CreatedKey, KeySpec
from quorra.limits import Limits
from quorra.notify import Notifier, finished_key
from quorra.schedules import Schedule, ScheduleSpec, plan_tick
from quorra.store import (
    Effects,
    FiredTick,
    JobFilter,
    QueueState,
    Settlement,
    SettleResult,
    Store,
    Submitted,
    WorkerSighting,
)
from quorra.webhooks import Webhook, WebhookSpec
from quorra.workflows import Workflow, WorkflowPlan

logger = logging.getLogger(__name__)


class JobManager:
    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        *,
        default_timeout_seconds: int | None = None,
    ):
        self.store = store
        self.notifier = notifier
        self.default_timeout_seconds = default_timeout_seconds  # QUORRA_DEFAULT_JOB_TIMEOUT

    # -- a client's verbs ---------------------------------------------------------------------

    def enqueue(self, spec: JobSpec, **options: Any) -> Submitted:
        return self.enqueue_many([spec], **options)[0]

    def enqueue_many(
        self,
        specs: Sequence[JobSpec],
        *,
        scope: str = "",
        key_ttl_seconds: float = DEFAULT_IDEMPOTENCY_TTL_SECONDS,
        tenant: str = DEFAULT_TENANT,
        trace: TraceContext | None = None,
    ) -> list[Submitted]:
        """All the jobs in one transaction, as `tenant`'s, each created, or replayed (its
        idempotency key within `scope` was used for the same job) or a duplicate (its unique
        slot is held). The jobs created keep `trace`, the context of the submit. Waiting
        workers of the queues that got a new job are woken."""
        submitted = self.store.submit_many(
            [self._with_defaults(spec) for spec in specs],
            scope=scope,
            key_ttl_seconds=key_ttl_seconds,
            tenant=tenant,
            trace=trace,
        )
        created = [item.job for item in submitted if item.created]
        metrics.jobs_created(created)
        metrics.submissions_deduplicated(item.outcome.value for item in submitted if not item.created)
        self._wake(job.queue for job in created if job.status in LEASABLE)  # blocked jobs wait for their parents
        return submitted

    def submit_workflow(
        self, plan: WorkflowPlan, *, tenant: str = DEFAULT_TENANT, trace: TraceContext | None = None
    ) -> tuple[Workflow, list[Job]]:
        """`tenant`'s workflow and all its jobs, in one transaction, each keeping `trace`
        (the submit's context); the workers of the queues that got a job ready to run are woken."""
        workflow, created = self.store.submit_workflow(self._with_workflow_defaults(plan), tenant=tenant, trace=trace)
        metrics.jobs_created(created)
        self._wake(job.queue for job in created if job.status in LEASABLE)
        return workflow, created

    def _with_workflow_defaults(self, plan: WorkflowPlan) -> WorkflowPlan:
        return dataclasses.replace(plan, specs=[self._with_defaults(spec) for spec in plan.specs])

    def _with_defaults(self, spec: JobSpec) -> JobSpec:
        if spec.timeout_seconds is None and self.default_timeout_seconds is not None:
            return spec.model_copy(update={"timeout_seconds": self.default_timeout_seconds})
        return spec

    def cancel(self, job_id: str, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None) -> Job:
        effects = Effects()
        audit = audit_entry(actor, Action.JOB_CANCEL, job_id)
        job = self.store.cancel(job_id, tenant=tenant, effects=effects, audit=audit)
        metrics.job_cancelled(job)
        self._announce_finished([job])
        self._follow(effects)
        return job

    def retry(self, job_id: str, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None) -> Job:
        effects = Effects()
        job = self.store.retry(
            job_id, tenant=tenant, effects=effects, audit=audit_entry(actor, Action.JOB_RETRY, job_id)
        )
        metrics.job_retried(job)
        self._wake([job.queue] if job.status in LEASABLE else [])
        self._follow(effects)
        return job

    def retry_dead(
        self, queue: str, *, type: str | None = None, tenant: str = DEFAULT_TENANT, actor: Actor | None = None
    ) -> int:
        """Every dead job of `tenant`'s `queue` (and `type`) back in line in one statement; the count."""
        audit = audit_entry(actor, Action.JOBS_RETRY_DEAD, queue, **({"type": type} if type else {}))
        return self._retry_matching(JobFilter(queue, JobStatus.DEAD, type, tenant=tenant), audit)

    def retry_matching(self, chosen: JobFilter, *, actor: Actor | None = None) -> int:
        """Every job the filter chooses (of its tenant) back in line in one statement; the count."""
        return self._retry_matching(
            chosen,
            audit_entry(actor, Action.JOBS_RETRY, chosen.queue, **_filter_details(chosen)),
        )

    def _retry_matching(self, chosen: JobFilter, audit: AuditEntry | None) -> int:
        effects = Effects()
        by_type = self.store.retry_matching(chosen, effects=effects, audit=audit)
        metrics.dead_jobs_retried(chosen.tenant, chosen.queue, by_type)
        if by_type:
            self._wake([chosen.queue])
        self._follow(effects)
        return sum(by_type.values())

    def delete_matching(self, chosen: JobFilter, *, actor: Actor | None = None) -> int:
        """Every finished job the filter chooses deleted in one statement; the count."""
        audit = audit_entry(actor, Action.JOBS_DELETE, chosen.queue, **_filter_details(chosen))
        deleted = self.store.delete_matching(chosen, audit=audit)
        metrics.jobs_deleted(chosen.tenant, chosen.queue, deleted)
        return deleted

    def delete_job(self, job_id: str, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None) -> Job:
        job = self.store.delete_job(job_id, tenant=tenant, audit=audit_entry(actor, Action.JOB_DELETE, job_id))
        metrics.jobs_deleted(job.tenant, job.queue, 1)
        return job

    # -- an operator's verbs on queues ----------------------------------------------------------

    def pause_queue(self, queue: str, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None) -> QueueState:
        """No lease takes a job of `tenant`'s `queue` until it is resumed (jobs in flight run on)."""
        audit = audit_entry(actor, Action.QUEUE_PAUSE, queue)
        return self.store.set_queue_paused(queue, True, tenant=tenant, audit=audit)

    def resume_queue(self, queue: str, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None) -> QueueState:
        """Lease `tenant`'s `queue` again, and wake the workers waiting on it now (wake-ups
        are by queue name: another tenant's workers of a queue so named look and find nothing)."""
        audit = audit_entry(actor, Action.QUEUE_RESUME, queue)
        state = self.store.set_queue_paused(queue, False, tenant=tenant, audit=audit)
        self._wake([queue])
        return state

    def set_queue_limits(
        self, queue: str, limits: Limits, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None
    ) -> Limits:
        """Replace `queue`'s limits; wake its workers, which may take more now."""
        audit = audit_entry(actor, Action.QUEUE_LIMITS, queue, **limits.as_json())
        limits = self.store.set_queue_limits(queue, limits, tenant=tenant, audit=audit)
        self._wake([queue])
        return limits

    def set_tenant_limits(self, tenant: str, limits: Limits, *, actor: Actor | None = None) -> Limits:
        """Replace the limits of `tenant`'s queues all together."""
        audit = audit_entry(actor, Action.TENANT_LIMITS, tenant, **limits.as_json())
        return self.store.set_tenant_limits(tenant, limits, audit=audit)

    # -- a worker's verbs -----------------------------------------------------------------------

    def lease(
        self,
        queues: Sequence[str],
        worker_id: str,
        max_jobs: int,
        ttl_seconds: float,
        *,
        tenant: str = DEFAULT_TENANT,
        **options: Any,
    ) -> list[Job]:
        """Up to `max_jobs` of `tenant`'s ready jobs of `queues` (ALL_TENANTS: a fleet
        worker's lease, of every tenant's queues so named)."""
        jobs = self.store.lease_jobs(queues, worker_id, max_jobs, ttl_seconds, tenant=tenant, **options)
        metrics.jobs_leased(jobs)
        return jobs

    def record_workers(self, sightings: Sequence[WorkerSighting]) -> None:
        """The workers a gRPC server saw (throttled by quorra.rpc.sightings): no job changes."""
        self.store.record_workers(sightings)

    def settle_many(
        self, settlements: Sequence[Settlement], *, worker_id: str | None, tenant: str = DEFAULT_TENANT
    ) -> list[SettleResult]:
        """Acks and nacks in one store call; one result per settlement, in order (another
        tenant's job: NOT_FOUND). A failed attempt is retried after its backoff, so its
        wake-up is the scheduler's (wake_due)."""
        effects = Effects()
        results = self.store.settle_many(settlements, worker_id=worker_id, tenant=tenant, effects=effects)
        settled = [result.job for result in results if result.job is not None]
        metrics.jobs_settled(settled)
        self._announce_finished(settled)
        self._follow(effects)
        self._wake_limited(settled)
        return results

    def lease_retry_after(self, queues: Sequence[str], *, tenant: str = DEFAULT_TENANT) -> float | None:
        """How long a worker waiting on `queues` may sleep at most before it asks again: a
        rate's tokens come back with time, not with a wake-up (None: no rate applies)."""
        return self.store.known_limits().retry_after(tenant, queues)

    def ack(
        self, job_id: str, lease_id: str, result: Any = None, *, worker_id: str | None, tenant: str = DEFAULT_TENANT
    ) -> Job:
        settlement = Settlement(job_id, lease_id, success=True, result=result)
        return self.settle_many([settlement], worker_id=worker_id, tenant=tenant)[0].job_or_raise()

    def nack(
        self, job_id: str, lease_id: str, error: str, *, worker_id: str | None, tenant: str = DEFAULT_TENANT
    ) -> Job:
        settlement = Settlement(job_id, lease_id, success=False, error=error)
        return self.settle_many([settlement], worker_id=worker_id, tenant=tenant)[0].job_or_raise()

    def extend(
        self, job_id: str, lease_id: str, ttl_seconds: float, *, worker_id: str | None, tenant: str = DEFAULT_TENANT
    ) -> Job:
        return self.store.extend_lease(job_id, lease_id, ttl_seconds, worker_id=worker_id, tenant=tenant)

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
            return self.store.release(job.id, job.lease_id or "", tenant=job.tenant)
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

    # -- schedules (an operator's verbs; firing is the scheduler's) --------------------------------
    # A schedule is named within its tenant: each verb takes the tenant of the caller.

    def create_schedule(
        self, spec: ScheduleSpec, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None
    ) -> Schedule:
        audit = audit_entry(actor, Action.SCHEDULE_CREATE, spec.name)
        return self._logged(
            "schedule created",
            "schedule.created",
            self.store.create_schedule(spec, tenant=tenant, audit=audit),
        )

    def update_schedule(
        self, name: str, changes: dict[str, Any], *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None
    ) -> Schedule:
        # the names of the fields changed, not their values (a job template may hold secrets)
        fields = sorted(map(str, changes)) if isinstance(changes, dict) else []  # the store refuses a non-object
        audit = audit_entry(actor, Action.SCHEDULE_UPDATE, name, fields=fields)
        return self._logged(
            "schedule updated",
            "schedule.updated",
            self.store.update_schedule(name, changes, tenant=tenant, audit=audit),
        )

    def pause_schedule(self, name: str, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None) -> Schedule:
        audit = audit_entry(actor, Action.SCHEDULE_PAUSE, name)
        return self._logged(
            "schedule paused",
            "schedule.paused",
            self.store.set_schedule_paused(name, True, tenant=tenant, audit=audit),
        )

    def resume_schedule(self, name: str, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None) -> Schedule:
        audit = audit_entry(actor, Action.SCHEDULE_RESUME, name)
        schedule = self.store.set_schedule_paused(name, False, tenant=tenant, audit=audit)
        return self._logged("schedule resumed", "schedule.resumed", schedule)

    def delete_schedule(self, name: str, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None) -> None:
        self.store.delete_schedule(name, tenant=tenant, audit=audit_entry(actor, Action.SCHEDULE_DELETE, name))
        logger.info("schedule deleted", extra={"event": "schedule.deleted", "schedule": name, "tenant": tenant})

    def sync_schedules(self, specs: Sequence[ScheduleSpec]) -> list[Schedule]:
        """The QUORRA_SCHEDULES_FILE's schedules: the default tenant's (the installation's)."""
        synced = self.store.sync_schedules(specs)
        logger.info(
            "schedules synced",
            extra={"event": "schedules.synced", "schedules": [s.name for s in synced]},
        )
        return synced

    @staticmethod
    def _logged(message: str, event: str, schedule: Schedule) -> Schedule:
        logger.info(
            message,
            extra={
                "event": event,
                "schedule": schedule.name,
                "schedule_id": schedule.id,
                "tenant": schedule.tenant,
                "next_run_at": schedule.next_run_at.isoformat(),
            },
        )
        return schedule

    # -- webhooks (an admin's verbs; delivering is the scheduler's) ----------------------------------

    def create_webhook(
        self, spec: WebhookSpec, secret: str, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None
    ) -> Webhook:
        """A webhook of `tenant`: it hears that tenant's events only."""
        audit = audit_entry(actor, Action.WEBHOOK_CREATE)
        return self.store.create_webhook(spec, secret, tenant=tenant, audit=audit)

    def delete_webhook(self, webhook_id: str, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None) -> None:
        audit = audit_entry(actor, Action.WEBHOOK_DELETE, webhook_id)
        self.store.delete_webhook(webhook_id, tenant=tenant, audit=audit)

    # -- API keys (an admin's verbs) ---------------------------------------------------------------

    def create_key(self, spec: KeySpec, *, actor: Actor) -> CreatedKey:
        return self.store.create_api_key(spec, created_by=actor.subject, audit=audit_entry(actor, Action.KEY_CREATE))

    def revoke_key(self, key_id: str, *, tenant: str | None = None, actor: Actor) -> ApiKey:
        """Revoke a key of `tenant` (None: of any, the server-side CLI)."""
        audit = audit_entry(actor, Action.KEY_REVOKE, key_id)
        return self.store.revoke_api_key(key_id, tenant=tenant, audit=audit)

    # -- the audit log -------------------------------------------------------------------------

    def record_signin(self, actor: Actor, *, role: str) -> None:
        """Someone signed in to the dashboard with a key: who, with which role, from where."""
        self.store.record_event(AuditEntry(actor, Action.DASHBOARD_SIGNIN, actor.subject, {"role": role}))

    # -- the scheduler's verbs ------------------------------------------------------------------

    def reap_expired(self, *, now: datetime | None = None, limit: int = 500) -> list[Job]:
        """One batch of expired leases, settled as failed attempts ('lease expired'). A reaped
        job is retried after its backoff, so its wake-up is wake_due's."""
        effects = Effects()
        reaped = self.store.reap_expired_leases(now=now, limit=limit, effects=effects)
        metrics.leases_expired(reaped)
        self._announce_finished(reaped)  # those out of retries are dead
        self._follow(effects)
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

    def prune_audit(self, before: datetime, *, limit: int = 500) -> int:
        return self.store.prune_audit(before, limit=limit)

    def prune_workers(self, seen_before: datetime) -> int:
        return self.store.prune_workers(seen_before)

    def fire_schedules(self, now: datetime, misfire_threshold_seconds: float, *, limit: int = 100) -> list[FiredTick]:
        """Carry out the due tick of every due schedule (one pass: each due schedule once;
        a schedule with more late ticks fires the next of them on the next pass). Returns
        the ticks carried out here; waiting workers of their jobs' queues are woken."""
        done = [
            self._fire(schedule, now, misfire_threshold_seconds)
            for schedule in self.store.due_schedules(now=now, limit=limit)
        ]
        carried = [tick for tick in done if tick.carried_out]
        self._wake(tick.job.queue for tick in carried if tick.job is not None)
        return carried

    def _fire(self, schedule: Schedule, now: datetime, misfire_threshold_seconds: float) -> FiredTick:
        plan = plan_tick(schedule, now, misfire_threshold_seconds)
        if schedule.timeout_seconds is None and self.default_timeout_seconds is not None:
            schedule = dataclasses.replace(schedule, timeout_seconds=self.default_timeout_seconds)
        done = self.store.fire_tick(schedule, plan, now=now)
        if not done.carried_out:
            return done
        metrics.schedule_ticks_missed(schedule.tenant, schedule.name, plan.missed)
        if plan.missed:
            logger.warning(
                "schedule ticks missed",
                extra={
                    "event": "schedule.missed",
                    "schedule": schedule.name,
                    "count": plan.missed,
                    "policy": schedule.missed_ticks.value,
                    "next_run_at": plan.next_run_at.isoformat(),
                },
            )
        if done.job is not None:
            metrics.schedule_tick_fired(schedule.tenant, schedule.name, (now - plan.fire_for).total_seconds())
            metrics.jobs_created([done.job])
        return done

    # -- what a verb did to other jobs -------------------------------------------------------------

    def _follow(self, effects: Effects) -> None:
        """Dependants released (their queues woken), cancelled with a failed parent (counted,
        their waiters woken), and workflows completed."""
        if effects.dependants:
            cancelled = [job for job in effects.dependants if job.status is JobStatus.CANCELLED]
            for job in cancelled:
                metrics.job_cancelled(job)
            self._announce_finished(cancelled)
            self._wake(job.queue for job in effects.dependants if job.status in LEASABLE)
        for workflow in effects.workflows:
            self._workflow_completed(workflow)

    def _workflow_completed(self, workflow: Workflow) -> None:
        """The workflow's last job finished (recorded once, in that job's transaction)."""
        metrics.workflow_completed(workflow)
        logger.info(
            "workflow completed",
            extra={
                "event": "workflow.completed",
                "workflow_id": workflow.id,
                "status": workflow.status.value,
            },
        )

    # -- wake-ups ---------------------------------------------------------------------------------

    def _announce_finished(self, jobs: Iterable[Job]) -> None:
        """Wake the waits on jobs that just finished (GET /v1/jobs/{id}?wait=): one publish
        per queue of the batch, not one per job; a waiter re-reads its own job."""
        self._publish(finished_key(job.queue) for job in jobs if job.status in TERMINAL)

    def _wake_limited(self, settled: Sequence[Job]) -> None:
        """A job of a queue with max_in_flight that settled freed a place: wake the queue's
        waiting workers, which the limit turned away."""
        known = self.store.known_limits()
        self._wake({job.queue for job in settled if known.apply_to(job.tenant, [job.queue])})

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


def _filter_details(chosen: JobFilter) -> dict[str, Any]:
    """What a bulk action's audit entry says of its filter (the queue is its target)."""
    details: dict[str, Any] = {"status": chosen.status.value}
    if chosen.type is not None:
        details["type"] = chosen.type
    if chosen.created_from is not None:
        details["created_from"] = chosen.created_from.isoformat()
    if chosen.created_to is not None:
        details["created_to"] = chosen.created_to.isoformat()
    if chosen.payload_contains is not None:
        details["payload_contains"] = chosen.payload_contains
    return details
