"""The dashboard's pages (GET only). Each page has a live part that the page's script fetches
again every 5 seconds (the request carries X-Quorra-Fragment) and swaps in place. Every read
is of the signed-in key's tenant (`tenant()`): another tenant's job is not found here either."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import abort, render_template, request

from quorra.access import Permission
from quorra.audit import Action
from quorra.dashboard import dashboard
from quorra.dashboard.chart import MINUTES, throughput_chart
from quorra.dashboard.filters import PAGE_SIZE, STATUS_CHOICES, JobsQuery, PageCursors
from quorra.dashboard.web import allowed, bp, error_page, show_payloads, tenant
from quorra.errors import InvalidArgument
from quorra.jobs import (
    CANCELLABLE,
    HOLDING_LEASE,
    LEASABLE,
    RETRYABLE,
    TERMINAL,
    Job,
    JobStatus,
    parse_job_id,
)
from quorra.limits import NO_LIMITS, Limits
from quorra.store import AuditFilter

STATUS_COLUMNS = [status.value for status in JobStatus]
WORKERS_SHOWN_MINUTES = 5  # the workers page: every worker seen this recently
# A queue counts as served when a worker that leases from it was seen this recently (a live
# worker is seen on every long poll and heartbeat); the same rule as GET /v1/queues' has_workers.
ACTIVE_WORKER_SECONDS = 120
WAITING = frozenset(status.value for status in LEASABLE)
QUEUES_PER_PAGE = 50  # however many queues clients make up, a page stays small
AUDIT_ENTRIES = 100  # the audit page shows the latest entries; GET /v1/audit pages through them all
AUDIT_ACTIONS = [action.value for action in Action]


def page(template: str, fragment: str, **context):
    """The whole page, or only its live part when the page's script asks for it."""
    return render_template(fragment if request.headers.get("X-Quorra-Fragment") else template, **context)


# -- overview ---------------------------------------------------------------------------------


@dataclass
class QueueRow:
    name: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_COLUMNS, 0))
    oldest_ready_at: datetime | None = None
    is_paused: bool = False
    paused_at: datetime | None = None
    workers: list[str] = field(default_factory=list)  # ids of the live workers reading it
    limits: Limits = NO_LIMITS

    @property
    def waiting(self) -> int:
        return sum(self.counts[status] for status in WAITING)

    @property
    def unserved(self) -> bool:
        """A job is ready and no worker reads the queue: it would wait in silence."""
        return self.oldest_ready_at is not None and not self.workers and not self.is_paused


def queue_rows(now: datetime) -> list[QueueRow]:
    """The signed-in tenant's queues (a queue is named within its tenant)."""
    store, of = dashboard().store, tenant()
    rows: dict[str, QueueRow] = {}
    for count in store.queue_counts(tenant=of):
        rows.setdefault(count.queue, QueueRow(count.queue)).counts[count.status] = count.count
    for queue, since in store.paused_queues(tenant=of).items():
        row = rows.setdefault(queue, QueueRow(queue))
        row.is_paused, row.paused_at = True, since
    for queue, limits in store.queue_limits(tenant=of).items():
        rows.setdefault(queue, QueueRow(queue)).limits = limits
    for queue, ready_at in store.oldest_ready_at(tenant=of, now=now).items():
        rows.setdefault(queue, QueueRow(queue)).oldest_ready_at = ready_at
    for worker in store.recent_workers(now - timedelta(seconds=ACTIVE_WORKER_SECONDS), tenant=of):
        for queue in worker.queues:
            if queue in rows:  # a queue no job ever used stays off the table
                rows[queue].workers.append(worker.id)
    return [rows[name] for name in sorted(rows)]


@dataclass(frozen=True)
class QueuePage:
    rows: list[QueueRow]
    number: int
    count: int  # of pages
    queues: int  # in all


def queue_page(rows: list[QueueRow]) -> QueuePage:
    """The page of queues asked for by ?queue_page= (within 1..last; anything else is page 1)."""
    pages = max(1, -(-len(rows) // QUEUES_PER_PAGE))
    given = request.args.get("queue_page", "")
    number = min(max(1, int(given)), pages) if given.isdigit() else 1
    first = (number - 1) * QUEUES_PER_PAGE
    return QueuePage(rows[first : first + QUEUES_PER_PAGE], number, pages, len(rows))


@bp.get("/")
def overview():
    store = dashboard().store
    now = store.database_now()
    return page(
        "overview.html",
        "_overview.html",
        queues=queue_page(queue_rows(now)),
        chart=throughput_chart(
            _per_minute(store.throughput(now - timedelta(minutes=MINUTES - 1), tenant=tenant())), now
        ),
        now=now,
        columns=STATUS_COLUMNS,
    )


def _per_minute(counts) -> list[tuple[datetime, int, int]]:
    """The store's counts per queue and minute, summed over the queues."""
    totals: dict[datetime, list[int]] = {}
    for count in counts:
        total = totals.setdefault(count.minute, [0, 0])
        total[0] += count.succeeded
        total[1] += count.failed
    return [(minute, ok, bad) for minute, (ok, bad) in sorted(totals.items())]


# -- jobs -------------------------------------------------------------------------------------


@bp.get("/jobs")
def jobs():
    chosen = JobsQuery.from_args(request.args)
    store = dashboard().store
    found, next_query = _jobs_page(chosen)
    return page(
        "jobs.html",
        "_jobs.html",
        jobs=found,
        chosen=chosen,
        next_query=next_query,
        now=store.database_now(),
        statuses=STATUS_CHOICES,
        queues=sorted({count.queue for count in store.queue_counts(tenant=tenant())}),
    )


def _jobs_page(chosen: JobsQuery, **overrides: Any) -> tuple[list[Job], str | None]:
    """One page of the jobs `chosen` picks (newest first, without bodies), and the query
    string of the next page, if there is one; `overrides` replace filter fields."""
    cursors = PageCursors(dashboard().settings.session_keys[0])
    job_page = dashboard().store.list_jobs(
        **(chosen.store_filter() | overrides),
        tenant=tenant(),
        limit=PAGE_SIZE,
        cursor=cursors.decode(chosen.cursor) if chosen.cursor else None,
        bodies=False,
    )
    if job_page.next_cursor is None:
        return job_page.jobs, None
    return job_page.jobs, chosen.url_query(cursor=cursors.encode(job_page.next_cursor))


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    canonical = parse_job_id(job_id)
    if canonical is None:
        abort(404, f"No job has the id {job_id!r}.")
    store = dashboard().store
    found, attempts = store.job_attempts(canonical, tenant=tenant())  # another tenant's: not found
    # Only a job in a dependency graph has links to read (all of its own tenant).
    in_graph = found.pending_parents is not None or found.has_dependants
    parents, dependants = store.links(canonical) if in_graph else ([], [])
    return page(
        "job.html",
        "_job.html",
        job=found,
        attempts=attempts,
        parents=parents,
        dependants=dependants,
        now=store.database_now(),
        show_payloads=show_payloads(),
        retryable=_values(RETRYABLE),
        cancellable=_values(CANCELLABLE),
        deletable=_values(TERMINAL),
        holding_lease=_values(HOLDING_LEASE),
    )


def _values(statuses) -> frozenset[str]:
    return frozenset(status.value for status in statuses)


def shown_status(job: Job, now: datetime) -> str:
    """The status a person reads: a pending job whose run_at is ahead is 'scheduled'."""
    if job.status is JobStatus.PENDING and job.run_at > now:
        return "scheduled"
    return job.status.value


@bp.app_template_global("shown_status")
def _shown_status(job: Job, now: datetime) -> str:
    return shown_status(job, now)


# -- dead letters -----------------------------------------------------------------------------


@bp.get("/dead")
def dead_letters():
    chosen = JobsQuery.from_args(request.args)
    if chosen.status not in (None, JobStatus.DEAD.value):
        raise InvalidArgument("the dead-letter view shows dead jobs only")
    store = dashboard().store
    now = store.database_now()
    rows = queue_rows(now)
    found, next_query = _jobs_page(chosen, status=JobStatus.DEAD.value)
    return page(
        "dead.html",
        "_jobs.html",
        jobs=found,
        chosen=chosen,
        next_query=next_query,
        now=now,
        dead_by_queue={row.name: row.counts[JobStatus.DEAD.value] for row in rows if row.counts[JobStatus.DEAD.value]},
        queues=[row.name for row in rows],
    )


# -- queues and workers ---------------------------------------------------------------------------


@bp.get("/queues")
def queues():
    now = dashboard().store.database_now()
    return page(
        "queues.html",
        "_queues.html",
        queues=queue_page(queue_rows(now)),
        now=now,
        columns=STATUS_COLUMNS,
    )


@bp.get("/workers")
def workers():
    store = dashboard().store
    now = store.database_now()
    seen = store.recent_workers(now - timedelta(minutes=WORKERS_SHOWN_MINUTES), tenant=tenant())
    rows = queue_rows(now)
    return page(
        "workers.html",
        "_workers.html",
        workers=seen,
        minutes=WORKERS_SHOWN_MINUTES,
        unserved=[row for row in rows if row.unserved],
        now=now,
    )


# -- audit log --------------------------------------------------------------------------------


@bp.get("/audit")
def audit_log():
    """The latest audit entries, optionally of one action (audit:read); read only."""
    if not allowed(Permission.AUDIT_READ):
        return error_page(
            403,
            f"Your key may not read the audit log: it lacks the {Permission.AUDIT_READ} permission.",
        )
    unknown = sorted(set(request.args) - {"action"})
    if unknown:
        raise InvalidArgument(f"unknown query parameters: {', '.join(unknown)}")
    action = request.args.get("action") or None
    if action is not None and action not in AUDIT_ACTIONS:
        raise InvalidArgument(f"unknown action {action!r}; one of: {', '.join(AUDIT_ACTIONS)}")
    store = dashboard().store
    records = store.list_audit(AuditFilter(action=action), tenant=tenant(), limit=AUDIT_ENTRIES).records
    return render_template(
        "audit.html",
        records=records,
        actions=AUDIT_ACTIONS,
        action=action,
        limit=AUDIT_ENTRIES,
        now=store.database_now(),
    )
