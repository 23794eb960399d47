"""Every Prometheus metric Quorra exports, declared once, with helpers that the edges
(REST API, gRPC servicer, scheduler) call right after the store verb succeeds, in
whichever process that is. In multi-process mode (PROMETHEUS_MULTIPROC_DIR set) each
process writes its samples to that directory and the web process's /metrics adds them up.

Queue depth and the age of the oldest ready job are read from the database at scrape
time (see ``QueueCollector``), not counted here.

Every series of a job or queue names its tenant (a queue is named within its tenant: A's
"emails" and B's "emails" are two series). Queue and type names are chosen by clients, so
their label values are capped (``limit_labels``, from QUORRA_METRICS_MAX_QUEUES and
QUORRA_METRICS_MAX_JOB_TYPES): each process keeps the first (tenant, queue) pairs and types
it counts, and counts later ones as `other` (a pair past the cap as tenant and queue
`other`). The queue gauges keep the largest queues and add up the rest as `other`. So a
scrape stays bounded however many names clients (and tenants) make up.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from quorra.access import ALL_TENANTS
from quorra.errors import DatabaseUnavailable
from quorra.jobs import Job, JobStatus

if TYPE_CHECKING:
    from quorra.store import QueueCount, Store

_QUEUE_LABELS = ("tenant", "queue")
_JOB_LABELS = (*_QUEUE_LABELS, "type")
OTHER = "other"
# A job queue's waits and runs span milliseconds to hours.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf"))

JOBS_CREATED = Counter("quorra_jobs_created", "Jobs created", _JOB_LABELS)
JOBS_LEASED = Counter("quorra_jobs_leased", "Jobs leased to workers (one per attempt)", _JOB_LABELS)
JOBS_PROCESSED = Counter("quorra_jobs_processed", "Jobs that succeeded", _JOB_LABELS)
JOBS_FAILED = Counter("quorra_jobs_failed", "Failed attempts that will be retried", _JOB_LABELS)
JOBS_DEAD = Counter("quorra_jobs_dead", "Jobs moved to the dead-letter queue", _JOB_LABELS)
JOBS_CANCELLED = Counter(
    "quorra_jobs_cancelled", "Jobs cancelled by a person, or with a parent that failed", _JOB_LABELS
)
WORKFLOWS_COMPLETED = Counter(
    "quorra_workflows_completed", "Workflows whose last job finished, by their status then", ("status",)
)
JOBS_RETRIED = Counter("quorra_jobs_retried", "Jobs put back in line by a person", _JOB_LABELS)
LEASES_EXPIRED = Counter("quorra_leases_expired", "Leases reclaimed by the scheduler after they expired", _QUEUE_LABELS)
LEASES_RELEASED = Counter(
    "quorra_leases_released", "Leases handed back because they never reached a worker", _QUEUE_LABELS
)
JOBS_PRUNED = Counter("quorra_jobs_pruned", "Finished jobs deleted after the retention period")
JOBS_DELETED = Counter("quorra_jobs_deleted", "Finished jobs deleted by a person", _QUEUE_LABELS)
SUBMISSIONS_DEDUPLICATED = Counter(
    "quorra_submissions_deduplicated",
    "Submissions answered with an existing job: replayed (same idempotency key) or duplicate (unique slot held)",
    ("outcome",),
)

JOB_WAIT = Histogram(
    "quorra_job_wait_seconds", "Time from a job being due (run_at) to its lease", _QUEUE_LABELS, buckets=_BUCKETS
)
JOB_DURATION = Histogram(
    "quorra_job_duration_seconds", "Time from lease to ack, nack or expiry", _JOB_LABELS, buckets=_BUCKETS
)


class LabelCap:
    """The first `limit` distinct values of a label keep their name; later ones read `other`.
    No limit until ``limit_labels`` sets one (server entry points do, from Settings)."""

    def __init__(self) -> None:
        self.limit: int | None = None
        self._kept: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if self.limit is None or value in self._kept:
            return value
        with self._lock:
            if len(self._kept) < self.limit:
                self._kept.add(value)
                return value
        return OTHER

    def reset(self, limit: int | None) -> None:
        with self._lock:
            self.limit, self._kept = limit, set()


_queue_label, _type_label = LabelCap(), LabelCap()


def limit_labels(max_queues: int | None, max_job_types: int | None) -> None:
    """Cap the distinct (tenant, queue) pairs and type label values this process counts
    (None: no cap)."""
    _queue_label.reset(max_queues)
    _type_label.reset(max_job_types)


def _place(tenant: str, queue: str) -> tuple[str, str]:
    """A queue's (tenant, queue) labels: a pair past the cap reads (`other`, `other`), so
    neither many queues nor many tenants grow the series without bound."""
    if _queue_label(f"{tenant}\x00{queue}") == OTHER:  # NUL: in no name, so no pair is spelt "other"
        return OTHER, OTHER
    return tenant, queue


def _job_labels(job: Job) -> tuple[str, str, str]:
    return (*_place(job.tenant, job.queue), _type_label(job.type))


_SETTLED = {
    JobStatus.SUCCEEDED: JOBS_PROCESSED,
    JobStatus.FAILED: JOBS_FAILED,
    JobStatus.DEAD: JOBS_DEAD,
}


def jobs_created(jobs: Iterable[Job]) -> None:
    """One increment per (tenant, queue, type) of the batch, not one per job."""
    batch = collections.Counter((job.tenant, job.queue, job.type) for job in jobs)
    for (tenant, queue, type_), count in batch.items():
        JOBS_CREATED.labels(*_place(tenant, queue), _type_label(type_)).inc(count)


def _by_labels(jobs: Iterable[Job]) -> dict[tuple[str, str, str], list[Job]]:
    """A batch's jobs by their (capped) tenant, queue and type labels: each labelled series
    is looked up, and each counter written (a locked write to a shared file in multi-process
    mode), once per group rather than once per job."""
    groups: dict[tuple[str, str, str], list[Job]] = collections.defaultdict(list)
    for job in jobs:
        groups[_job_labels(job)].append(job)
    return groups


def jobs_leased(jobs: Iterable[Job]) -> None:
    for (tenant, queue, type_), group in _by_labels(jobs).items():
        JOBS_LEASED.labels(tenant, queue, type_).inc(len(group))
        wait = JOB_WAIT.labels(tenant, queue)
        for job in group:
            if job.leased_at is not None:
                wait.observe(max(0.0, (job.leased_at - job.run_at).total_seconds()))


def jobs_settled(jobs: Iterable[Job]) -> None:
    """After acks, nacks or lease expiries: count the outcomes and how long the attempts took."""
    for labels, group in _by_labels(jobs).items():
        for status, count in collections.Counter(job.status for job in group).items():
            counter = _SETTLED.get(status)
            if counter is not None:
                counter.labels(*labels).inc(count)
        duration = JOB_DURATION.labels(*labels)
        for job in group:
            if job.leased_at is not None:
                duration.observe(max(0.0, (job.updated_at - job.leased_at).total_seconds()))


def leases_expired(jobs: Iterable[Job]) -> None:
    jobs = list(jobs)
    for place, count in collections.Counter(_place(job.tenant, job.queue) for job in jobs).items():
        LEASES_EXPIRED.labels(*place).inc(count)
    jobs_settled(jobs)


def workflow_completed(workflow) -> None:
    WORKFLOWS_COMPLETED.labels(workflow.status.value).inc()


def lease_released(job: Job) -> None:
    LEASES_RELEASED.labels(*_place(job.tenant, job.queue)).inc()


def job_cancelled(job: Job) -> None:
    JOBS_CANCELLED.labels(*_job_labels(job)).inc()


def job_retried(job: Job) -> None:
    JOBS_RETRIED.labels(*_job_labels(job)).inc()


def dead_jobs_retried(tenant: str, queue: str, by_type: dict[str, int]) -> None:
    for job_type, count in by_type.items():
        JOBS_RETRIED.labels(*_place(tenant, queue), _type_label(job_type)).inc(count)


def jobs_deleted(tenant: str, queue: str, count: int) -> None:
    if count:
        JOBS_DELETED.labels(*_place(tenant, queue)).inc(count)


def jobs_pruned(count: int) -> None:
    JOBS_PRUNED.inc(count)


def submissions_deduplicated(outcomes: Iterable[str]) -> None:
    for outcome in outcomes:
        SUBMISSIONS_DEDUPLICATED.labels(outcome).inc()


# -- schedules ---------------------------------------------------------------------------------

# Schedule names are an operator's (a handful per tenant), so they are labels as they are,
# beside their tenant (a schedule is named within its tenant: A's and B's `nightly` are two).
_SCHEDULE_LABELS = ("tenant", "schedule")
SCHEDULE_TICKS_FIRED = Counter(
    "quorra_schedule_ticks_fired", "Schedule ticks that submitted their job", _SCHEDULE_LABELS
)
SCHEDULE_TICKS_MISSED = Counter(
    "quorra_schedule_ticks_missed",
    "Schedule ticks missed (due longer than the misfire threshold ago); the policy ran one or none of them",
    _SCHEDULE_LABELS,
)
SCHEDULE_LAG = Histogram(
    "quorra_schedule_lag_seconds",
    "Time from a schedule tick being due to its job's submission",
    _SCHEDULE_LABELS,
    buckets=_BUCKETS,
)


def schedule_tick_fired(tenant: str, schedule: str, lag_seconds: float) -> None:
    SCHEDULE_TICKS_FIRED.labels(tenant, schedule).inc()
    SCHEDULE_LAG.labels(tenant, schedule).observe(max(0.0, lag_seconds))


def schedule_ticks_missed(tenant: str, schedule: str, count: int) -> None:
    if count:
        SCHEDULE_TICKS_MISSED.labels(tenant, schedule).inc(count)


# -- the scrape-time queue gauges -----------------------------------------------------------------


class QueueCollector:
    """Queue depth and the age of the oldest ready job, read from the database at scrape
    time: one GROUP BY and one MIN at most every `ttl` seconds however often Prometheus
    (or anyone) scrapes. While the database is down the scrape still answers, without
    these two gauges."""

    def __init__(self, store: Store, ttl: float = 2.0, max_queues: int | None = None):
        self.store = store
        self.ttl = ttl
        self.max_queues = max_queues
        self._lock = threading.Lock()  # a scrape storm waits here for one read, not N
        self._families: list[Metric] = []
        self._fresh_until = float("-inf")

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() >= self._fresh_until:
                self._families = self._read()
                self._fresh_until = time.monotonic() + self.ttl
            return list(self._families)

    def _read(self) -> list[Metric]:
        try:
            counts = self.store.queue_counts(tenant=ALL_TENANTS)
            now = self.store.database_now()
            oldest = self.store.oldest_ready_by_tenant(now=now)
            paused = self.store.paused_by_tenant()
        except DatabaseUnavailable:
            return []  # cached like a success, so a down database is not hammered either
        named = _largest_queues(counts, self.max_queues)
        return [_queue_length(counts, named), _oldest_age(counts, oldest, now, named), _paused(paused)]


Place = tuple[str, str]  # (tenant, queue)


def _largest_queues(counts: list[QueueCount], limit: int | None) -> set[Place] | None:
    """The `limit` queues (of any tenant) with the most jobs (None: every queue keeps its name)."""
    totals: dict[Place, int] = {}
    for count in counts:
        place = (count.tenant, count.queue)
        totals[place] = totals.get(place, 0) + count.count
    if limit is None or len(totals) <= limit:
        return None
    return set(sorted(totals, key=lambda place: (-totals[place], place))[:limit])


def _label(place: Place, named: set[Place] | None) -> Place:
    return place if named is None or place in named else (OTHER, OTHER)


def _queue_length(counts: list[QueueCount], named: set[Place] | None) -> Metric:
    family = GaugeMetricFamily(
        "quorra_job_queue_length", "Jobs in each queue, by status", labels=(*_QUEUE_LABELS, "status")
    )
    summed: dict[tuple[str, str, str], int] = {}
    for count in counts:
        key = (*_label((count.tenant, count.queue), named), count.status)
        summed[key] = summed.get(key, 0) + count.count
    for key, value in summed.items():
        family.add_metric(key, value)
    return family


def _oldest_age(
    counts: list[QueueCount], oldest: dict[Place, datetime], now: datetime, named: set[Place] | None
) -> Metric:
    family = GaugeMetricFamily(
        "quorra_queue_oldest_job_age_seconds",
        "How long the oldest ready job of each queue has waited for a worker (0: none waiting)",
        labels=_QUEUE_LABELS,
    )
    waited: dict[Place, float] = {}
    for place in {(count.tenant, count.queue) for count in counts} | set(oldest):
        age = (now - oldest[place]).total_seconds() if place in oldest else 0.0
        label = _label(place, named)
        waited[label] = max(waited.get(label, 0.0), age)  # `other`: the longest wait among them
    for label in sorted(waited):
        family.add_metric(label, max(0.0, waited[label]))
    return family


def _paused(paused: dict[Place, datetime | None]) -> Metric:
    """Paused queues are an operator's choice (a handful), so each keeps its name."""
    family = GaugeMetricFamily(
        "quorra_queue_paused",
        "1 for each paused queue: no worker leases its jobs until it is resumed",
        labels=_QUEUE_LABELS,
    )
    for place in sorted(paused):
        family.add_metric(place, 1)
    return family


# -- the gRPC server (issue #5) ----------------------------------------------------------------

GRPC_REQUESTS = Counter(
    "quorra_grpc_requests", "gRPC calls served, by method and final status code", ("method", "code")
)
GRPC_DURATION = Histogram(
    "quorra_grpc_request_duration_seconds",
    "Time to serve a gRPC call; a LeaseJobs long poll includes its wait",
    ("method",),
    buckets=_BUCKETS,
)


def grpc_call_observed(method: str, code: str, seconds: float) -> None:
    GRPC_REQUESTS.labels(method, code).inc()
    GRPC_DURATION.labels(method).observe(max(0.0, seconds))
