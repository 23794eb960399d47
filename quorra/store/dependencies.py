"""Dependencies between jobs and the completion of workflows, inside the transaction of
the verb that caused them. Each function takes the verb's connection and clock.

- link: new jobs with depends_on get their edges, their count of unmet parents and their
  first status (blocked, pending, or cancelled when a parent already failed); their parents
  are marked has_dependants, under a row lock, so a parent settling at the same moment
  either committed first (and is read as such) or waits for this transaction and then sees
  the new edges.
- parents_finished: parents that just succeeded, died or were cancelled release or cancel
  their blocked dependants, set-based, layer by layer down the cascade. Only parents with
  has_dependants come here, so jobs without dependants cost a Python test and nothing else.
- parents_retried: the dependants a failed parent cancelled come back (blocked) when it
  is retried.
- workflows_finished: workflows whose last job just finished are completed, once.

Concurrency (PostgreSQL): the dependants of a batch are locked in id order before their
counts are decremented, so two batches settling parents of the same dependants wait for
each other instead of deadlocking; the decrement reads the row as the lock left it, so
each parent counts once and exactly one transaction sees the count reach zero.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import and_, bindparam, case, exists, func, insert, select, update

from quorra.errors import InvalidJobSpec
from quorra.jobs import (
    PARENT_FAILED,
    TERMINAL,
    Job,
    JobSpec,
    JobStatus,
    ParentFailure,
    ParentOutcome,
    parent_failed_message,
    readiness,
)
from quorra.schema import job_dependencies as edges
from quorra.schema import jobs, workflows
from quorra.store.base import Clock, Effects, log_transition, status_in, to_job
from quorra.store.webhooks import enqueue_followers
from quorra.workflows import Workflow, WorkflowStatus, workflow_status

BLOCKED = JobStatus.BLOCKED.value


def follow(conn, clock: Clock, dialect: str, changed: Iterable[Job], effects: Effects | None) -> list[Job]:
    """What jobs that just changed imply: the dependants of finished parents released or
    cancelled, finished workflows completed (and the webhook events of both). Costs a
    Python test per job when none has dependants or a workflow. Returns the dependants
    changed, to log once committed."""
    changed = list(changed)
    parents = [job for job in changed if job.has_dependants and job.status in TERMINAL]
    dependants = parents_finished(conn, clock, dialect, parents) if parents else []
    in_workflows = [job for job in (*changed, *dependants) if job.workflow_id is not None]
    finished = workflows_finished(conn, clock, dialect, in_workflows) if in_workflows else []
    if dependants or finished:  # their webhook events, in this transaction too
        enqueue_followers(conn, clock, dependants, finished, workflow_counts)
    if effects is not None:
        effects.add(dependants, finished)
    return dependants


def log_dependants(dependants: Iterable[Job]) -> None:
    for job in dependants:
        message, event = _DEPENDANT_LOGS[job.status]
        log_transition(message, event, job)


_DEPENDANT_LOGS = {
    JobStatus.PENDING: ("dependant released", "job.released"),
    JobStatus.CANCELLED: ("dependant cancelled", "job.cancelled"),
    JobStatus.BLOCKED: ("dependant blocked again", "job.blocked"),
}


# -- submit ---------------------------------------------------------------------------------


def link(conn, clock: Clock, dialect: str, children: Sequence[tuple[str, JobSpec]], tenant: str) -> dict[str, Job]:
    """Give `tenant`'s new jobs (inserted `blocked`, in dependency order: in-batch parents
    first) their edges, unmet counts and first status; raise InvalidJobSpec naming unknown
    parents (another tenant's job is unknown here, in the same words)."""
    parent_ids = sorted({parent for _, spec in children for parent in spec.depends_on})
    statuses = _mark_parents(conn, dialect, parent_ids, tenant)
    unknown = [parent for parent in parent_ids if parent not in statuses]
    if unknown:
        details = [{"field": "depends_on", "message": f"no job has the id {parent}"} for parent in unknown]
        raise InvalidJobSpec(f"depends on unknown jobs: {', '.join(unknown)}", details=details)
    rows: dict[str, dict] = {}
    for job_id, spec in children:
        ready = readiness(
            {parent: statuses[parent] for parent in spec.depends_on},
            spec.on_parent_failure,
        )
        statuses[job_id] = ready.status
        rows[job_id] = _first_state(spec.on_parent_failure, ready)
    conn.execute(
        insert(edges),
        [{"job_id": c, "parent_id": p} for c, spec in children for p in spec.depends_on],
    )
    _update_each(conn, rows, lambda values: {"finished_at": clock.now()} if values["cancelled_by_parent"] else {})
    created = conn.execute(select(jobs).where(jobs.c.id.in_([job_id for job_id, _ in children])))
    return {job.id: job for job in map(to_job, created)}


def _mark_parents(conn, dialect: str, parent_ids: list[str], tenant: str) -> dict[str, JobStatus]:
    """Set has_dependants on the parents that are `tenant`'s (locking them, in id order on
    PostgreSQL); their statuses, as committed by whoever held them before."""
    if not parent_ids:
        return {}
    wanted = and_(jobs.c.id.in_(parent_ids), jobs.c.tenant == tenant)
    if dialect == "postgresql":
        locked = select(jobs.c.id).where(wanted).order_by(jobs.c.id).with_for_update().cte("locked")
        wanted = jobs.c.id == locked.c.id
    statement = update(jobs).where(wanted).values(has_dependants=True).returning(jobs.c.id, jobs.c.status)
    return {str(job_id): JobStatus(status) for job_id, status in conn.execute(statement)}


def _first_state(policy: ParentFailure, ready) -> dict:
    failed = ready.failed_parent
    return {
        "status": ready.status.value,
        "pending_parents": ready.unmet,
        "on_parent_failure": ParentFailure(policy).value,
        "last_error": parent_failed_message(*failed) if failed else None,
        "cancelled_by_parent": failed[0] if failed else None,
    }


def _update_each(conn, rows: dict[str, dict], extra=lambda values: {}, guard=()) -> None:
    """Per-job values (plain Python ones) as one UPDATE per distinct set of values, not one
    per job: a batch of dependants takes few (blocked with n unmet, pending, cancelled naming
    one parent). `extra(values)` adds SQL values to a set; `guard` narrows every UPDATE."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for job_id, values in sorted(rows.items()):
        groups[tuple(sorted(values.items()))].append(job_id)
    for values, ids in groups.items():
        plain = dict(values)
        conn.execute(update(jobs).where(jobs.c.id.in_(ids), *guard).values(plain | extra(plain)))


# -- a parent finished -------------------------------------------------------------------------


def parents_finished(conn, clock: Clock, dialect: str, parents: Iterable[Job]) -> list[Job]:
    """Release or cancel the blocked dependants of parents that just ended succeeded, dead
    or cancelled, down the cascade; the dependants whose status changed."""
    changed: list[Job] = []
    frontier = [job for job in parents if job.has_dependants and job.status in TERMINAL]
    while frontier:
        succeeded = [job.id for job in frontier if job.status is JobStatus.SUCCEEDED]
        failed = [job for job in frontier if job.status in PARENT_FAILED]
        released = _count_met(conn, clock, dialect, succeeded, only_run=False) if succeeded else []
        if failed:
            released += _count_met(conn, clock, dialect, [job.id for job in failed], only_run=True)
        cancelled = _cancel_dependants(conn, clock, failed) if failed else []
        changed += released + cancelled
        frontier = [job for job in cancelled if job.has_dependants]
    return changed


def _count_met(conn, clock: Clock, dialect: str, parent_ids: list[str], *, only_run: bool) -> list[Job]:
    """One set-based UPDATE: each blocked dependant of these parents counts them as met;
    those left with no unmet parent become pending. Only the dependants that change status
    are returned."""
    statement = _count_met_statement(dialect, only_run, clock.fixed is None)
    params = {"parent_ids": parent_ids} | ({"now": clock.fixed} if clock.fixed is not None else {})
    return [job for job in map(to_job, conn.execute(statement, params)) if job.status is JobStatus.PENDING]


@functools.lru_cache(maxsize=16)
def _count_met_statement(dialect: str, only_run: bool, db_time: bool):
    """Built once per shape, as the lease statement is (SQLAlchemy then finds its compiled form)."""
    met = (
        select(edges.c.job_id, func.count().label("n"))
        .where(edges.c.parent_id.in_(bindparam("parent_ids", expanding=True)))
        .group_by(edges.c.job_id)
        .cte("met")
    )
    guard = [jobs.c.status == BLOCKED]
    if only_run:
        guard.append(jobs.c.on_parent_failure == ParentFailure.RUN.value)
    if dialect == "postgresql":  # lock the dependants in id order: concurrent batches queue, never deadlock
        locked = (
            select(jobs.c.id, met.c.n)
            .join(met, jobs.c.id == met.c.job_id)
            .where(*guard)
            .order_by(jobs.c.id)
            .with_for_update(of=jobs)
            .cte("locked")
            .prefix_with("MATERIALIZED")
        )
    else:
        locked = select(met.c.job_id.label("id"), met.c.n).subquery("locked")
    left = jobs.c.pending_parents - locked.c.n
    now = func.now() if db_time else bindparam("now", type_=jobs.c.updated_at.type)
    values = {
        "pending_parents": left,
        "status": case((left <= 0, JobStatus.PENDING.value), else_=BLOCKED),
        "updated_at": now,
    }
    return update(jobs).where(jobs.c.id == locked.c.id, *guard).values(values).returning(*jobs.c)


def _cancel_dependants(conn, clock: Clock, failed: list[Job]) -> list[Job]:
    """The blocked dependants of failed parents whose policy is "cancel" are cancelled,
    naming the parent (the first by id when several failed)."""
    status_of = {job.id: job.status for job in failed}
    pairs = conn.execute(
        select(edges.c.job_id, edges.c.parent_id)
        .join(jobs, jobs.c.id == edges.c.job_id)
        .where(
            edges.c.parent_id.in_(list(status_of)),
            jobs.c.status == BLOCKED,
            jobs.c.on_parent_failure == ParentFailure.CANCEL.value,
        )
    ).all()
    cause: dict[str, str] = {}
    for child, parent in sorted((str(c), str(p)) for c, p in pairs):
        cause.setdefault(child, parent)
    if not cause:
        return []
    rows = {
        child: {
            "status": JobStatus.CANCELLED.value,
            "cancelled_by_parent": parent,
            "last_error": parent_failed_message(parent, status_of[parent]),
        }
        for child, parent in cause.items()
    }
    when = {"finished_at": clock.now(), "updated_at": clock.now()}
    _update_each(conn, rows, lambda values: when, guard=[jobs.c.status == BLOCKED])
    cancelled = conn.execute(select(jobs).where(jobs.c.id.in_(list(cause)), jobs.c.status == JobStatus.CANCELLED.value))
    return list(map(to_job, cancelled))


# -- a parent retried ------------------------------------------------------------------------


def parents_retried(conn, clock: Clock, parents: Iterable[Job]) -> list[Job]:
    """A failed parent back in line: the dependants it (or its cascade) cancelled become
    blocked again, unless another of their parents is still dead or cancelled, and blocked
    dependants that run anyway count it as unmet again."""
    changed: list[Job] = []
    revived = {"cancelled_by_parent": None, "last_error": None, "finished_at": None, "updated_at": clock.now()}
    frontier = [job.id for job in parents if job.has_dependants]
    while frontier:
        children = _dependants_to_recount(conn, frontier)
        statuses = _parent_statuses(conn, [child.id for child in children])
        rows: dict[str, dict] = {}
        for child in children:
            ready = readiness(statuses[child.id], child.on_parent_failure or ParentFailure.CANCEL)
            if ready.status is JobStatus.CANCELLED:
                continue  # another parent still failed: it stays cancelled
            rows[child.id] = {"status": ready.status.value, "pending_parents": ready.unmet}
        if not rows:
            break
        _update_each(conn, rows, lambda values: revived)
        recounted = list(map(to_job, conn.execute(select(jobs).where(jobs.c.id.in_(list(rows))))))
        changed += recounted
        frontier = [job.id for job in recounted if job.has_dependants]
    return changed


def _dependants_to_recount(conn, parent_ids: list[str]) -> list[Job]:
    cancelled_by_a_parent = (jobs.c.status == JobStatus.CANCELLED.value) & jobs.c.cancelled_by_parent.is_not(None)
    waiting_to_run_anyway = (jobs.c.status == BLOCKED) & (jobs.c.on_parent_failure == ParentFailure.RUN.value)
    query = (
        select(jobs)
        .where(
            jobs.c.id.in_(select(edges.c.job_id).where(edges.c.parent_id.in_(parent_ids))),
            cancelled_by_a_parent | waiting_to_run_anyway,
        )
        .order_by(jobs.c.id)
    )
    return list(map(to_job, conn.execute(query)))


def _parent_statuses(conn, child_ids: list[str]) -> dict[str, dict[str, JobStatus]]:
    statuses: dict[str, dict[str, JobStatus]] = defaultdict(dict)
    if child_ids:
        query = select(edges.c.job_id, edges.c.parent_id, jobs.c.status).join(jobs, jobs.c.id == edges.c.parent_id)
        for child, parent, status in conn.execute(query.where(edges.c.job_id.in_(child_ids))):
            statuses[str(child)][str(parent)] = JobStatus(status)
    return statuses


def parents_of(conn, job: Job) -> dict[str, JobStatus]:
    """The statuses of one job's parents, by id."""
    return dict(_parent_statuses(conn, [job.id]).get(job.id, {}))


# -- reads --------------------------------------------------------------------------------------


def parent_outcomes(conn, jobs_: Sequence[Job]) -> dict[str, tuple[ParentOutcome, ...]]:
    """For a lease: each dependant's parents as its handler sees them (one query per batch)."""
    child_ids = [job.id for job in jobs_ if job.pending_parents is not None]
    if not child_ids:
        return {}
    parent = jobs.alias("parent")
    query = (
        select(
            edges.c.job_id,
            parent.c.id,
            parent.c.type,
            parent.c.status,
            parent.c.ref,
            parent.c.result,
            parent.c.last_error,
        )
        .join(parent, parent.c.id == edges.c.parent_id)
        .where(edges.c.job_id.in_(child_ids))
        .order_by(edges.c.job_id, parent.c.created_at, parent.c.id)
    )
    outcomes: dict[str, list[ParentOutcome]] = defaultdict(list)
    for child, job_id, type_, status, ref, result, error in conn.execute(query):
        outcomes[str(child)].append(ParentOutcome(str(job_id), type_, JobStatus(status), ref, result, error))
    return {child: tuple(found) for child, found in outcomes.items()}


def links_of(conn, job_id: str) -> tuple[list[str], list[str]]:
    """A job's parents and dependants (ids)."""
    parents = conn.execute(select(edges.c.parent_id).where(edges.c.job_id == job_id).order_by(edges.c.parent_id))
    children = conn.execute(select(edges.c.job_id).where(edges.c.parent_id == job_id).order_by(edges.c.job_id))
    return [str(p) for p in parents.scalars()], [str(c) for c in children.scalars()]


# -- workflows ----------------------------------------------------------------------------------


def workflows_finished(conn, clock: Clock, dialect: str, changed: Iterable[Job]) -> list[Workflow]:
    """Complete the workflows of these jobs whose every job has finished: once each, whoever
    finishes the last jobs concurrently (the workflow row is locked before its jobs are
    counted, so the second of two such transactions sees the first's jobs finished)."""
    ids = sorted({job.workflow_id for job in changed if job.workflow_id is not None and job.status in TERMINAL})
    if not ids:
        return []
    open_ = select(workflows.c.id).where(workflows.c.id.in_(ids), workflows.c.finished_at.is_(None))
    if dialect == "postgresql":
        open_ = open_.order_by(workflows.c.id).with_for_update()
    candidates = [str(workflow_id) for workflow_id in conn.execute(open_).scalars()]
    if not candidates:
        return []
    unfinished = exists().where(jobs.c.workflow_id == workflows.c.id, ~status_in(TERMINAL))
    done = conn.execute(select(workflows.c.id).where(workflows.c.id.in_(candidates), ~unfinished)).scalars()
    completed = []
    for workflow_id, counts in workflow_counts(conn, [str(w) for w in done]).items():
        statement = (
            update(workflows)
            .where(workflows.c.id == workflow_id, workflows.c.finished_at.is_(None))
            .values(status=workflow_status(counts).value, finished_at=clock.now())
            .returning(*workflows.c)
        )
        completed += [to_workflow(row) for row in conn.execute(statement)]
    return completed


def workflows_reopened(conn, changed: Iterable[Job]) -> None:
    """A job of a completed workflow went back in line: the workflow runs again."""
    ids = sorted({job.workflow_id for job in changed if job.workflow_id is not None})
    if ids:
        conn.execute(
            update(workflows)
            .where(workflows.c.id.in_(ids), workflows.c.finished_at.is_not(None))
            .values(status=WorkflowStatus.RUNNING.value, finished_at=None)
        )


def workflow_counts(conn, workflow_ids: list[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {workflow_id: {} for workflow_id in workflow_ids}
    if workflow_ids:
        query = (
            select(jobs.c.workflow_id, jobs.c.status, func.count())
            .where(jobs.c.workflow_id.in_(workflow_ids))
            .group_by(jobs.c.workflow_id, jobs.c.status)
        )
        for workflow_id, status, count in conn.execute(query):
            counts[str(workflow_id)][status] = count
    return counts


def to_workflow(row) -> Workflow:
    data = row._asdict()
    data["id"] = str(data["id"])
    data["status"] = WorkflowStatus(data["status"])
    return Workflow(**data)
