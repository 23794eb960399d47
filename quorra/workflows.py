"""Workflows: jobs submitted together that refer to each other by a local `ref`. Pure
Python: parsing a workflow, resolving its refs to job ids, refusing unknown refs and
cycles, and the status of the whole. The store creates a workflow in one transaction."""

from __future__ import annotations

import enum
import graphlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StrictStr, ValidationError

from quorra.errors import InvalidJobSpec
from quorra.jobs import (
    MAX_BATCH_SIZE,
    MAX_PARENTS,
    NAME_PATTERN,
    TERMINAL,
    JobSpec,
    JobStatus,
    check_portable_json,
    describe_errors,
    parse_job_id,
)

MAX_REF_CHARS = 100
MAX_WORKFLOW_NAME_CHARS = 200
RefName = Annotated[StrictStr, Field(min_length=1, max_length=MAX_REF_CHARS, pattern=NAME_PATTERN)]


class WorkflowStatus(str, enum.Enum):
    RUNNING = "running"  # some job is not finished (blocked, pending, leased, processing, failed)
    SUCCEEDED = "succeeded"  # every job succeeded
    FAILED = "failed"  # every job finished and some are dead (retrying one reopens the workflow)
    CANCELLED = "cancelled"  # every job finished, none dead, some cancelled

    def __str__(self) -> str:
        return self.value


def workflow_status(counts: Mapping[JobStatus | str, int]) -> WorkflowStatus:
    """The status of a workflow whose jobs are in these states (count by status)."""
    present = {JobStatus(status) for status, count in counts.items() if count}
    if present - TERMINAL:
        return WorkflowStatus.RUNNING
    if JobStatus.DEAD in present:
        return WorkflowStatus.FAILED
    if JobStatus.CANCELLED in present:
        return WorkflowStatus.CANCELLED
    return WorkflowStatus.SUCCEEDED


@dataclass(frozen=True)
class Workflow:
    """One row of the workflows table. `status` and `finished_at` are those recorded when
    its last job finished (running and None until then, and again after a retry)."""

    id: str
    name: str | None
    status: WorkflowStatus
    created_at: datetime
    finished_at: datetime | None = None
    tenant: str = "default"


class WorkflowJob(JobSpec):
    """A job of a workflow: a JobSpec with a `ref`, whose depends_on names refs of the same
    workflow or ids of existing jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ref: RefName
    depends_on: tuple[StrictStr, ...] = Field((), max_length=MAX_PARENTS)  # type: ignore[assignment]


@dataclass(frozen=True)
class WorkflowPlan:
    """A validated workflow: its id, and its jobs in dependency order (parents first), each
    with the id it will have and its depends_on resolved to job ids."""

    workflow_id: str
    name: str | None
    refs: list[str]
    ids: list[str]
    specs: list[JobSpec]

    @property
    def job_ids(self) -> dict[str, str]:
        return dict(zip(self.refs, self.ids, strict=True))


def parse_workflow(data: object, *, max_payload_bytes: int | None = None) -> WorkflowPlan:
    """A body {"name"?, "jobs": [...]}: a plan, or InvalidJobSpec naming every bad job,
    unknown ref and cycle."""
    if not isinstance(data, dict) or not set(data) <= {"name", "jobs"} or not isinstance(data.get("jobs"), list):
        raise InvalidJobSpec('a workflow must be {"name"?: "...", "jobs": [...]}')
    name = _name(data.get("name"))
    items = data["jobs"]
    if not 1 <= len(items) <= MAX_BATCH_SIZE:
        raise InvalidJobSpec(f"a workflow holds 1 to {MAX_BATCH_SIZE} jobs, got {len(items)}")
    jobs = _parse_jobs(items, max_payload_bytes)
    ids = {job.ref: str(uuid.uuid4()) for job in jobs}
    parents = _resolve(jobs, ids)
    order = _dependency_order(jobs, parents, ids)
    by_ref = {job.ref: job for job in jobs}
    specs = [_as_spec(by_ref[ref], parents[ref]) for ref in order]
    return WorkflowPlan(str(uuid.uuid4()), name, order, [ids[ref] for ref in order], specs)


def _name(name: object) -> str | None:
    """None, or 1 to MAX_WORKFLOW_NAME_CHARS characters either database stores as given."""
    message = f"1 to {MAX_WORKFLOW_NAME_CHARS} characters, or null"
    if isinstance(name, str) and 1 <= len(name) <= MAX_WORKFLOW_NAME_CHARS:
        try:
            check_portable_json(name, "name")
            return name
        except ValueError as exc:
            message = str(exc)
    elif name is None:
        return None
    raise InvalidJobSpec("the workflow is invalid", details=[{"field": "name", "message": message}])


def _parse_jobs(items: list, max_payload_bytes: int | None) -> list[WorkflowJob]:
    jobs, problems = [], []
    for index, item in enumerate(items):
        try:
            jobs.append(_parse_job(item, max_payload_bytes))
        except InvalidJobSpec as exc:
            for detail in exc.details or [{"field": "", "message": exc.message}]:
                problems.append({**detail, "field": f"jobs[{index}].{detail['field']}".rstrip(".")})
    seen: dict[str, int] = {}
    for index, job in enumerate(jobs):
        if job.ref in seen:
            problems.append(
                {
                    "field": f"jobs[{index}].ref",
                    "message": f"the ref {job.ref!r} is used twice",
                }
            )
        seen[job.ref] = index
    if problems:
        raise InvalidJobSpec("the workflow is invalid; no job was created", details=problems)
    return jobs


def _parse_job(item: object, max_payload_bytes: int | None) -> WorkflowJob:
    if not isinstance(item, dict):
        raise InvalidJobSpec("a job must be a JSON object")
    unsupported = [
        {"field": name, "message": "not supported in a workflow"}
        for name in ("idempotency_key", "unique")
        if name in item
    ]
    if unsupported:
        raise InvalidJobSpec("the job is invalid", details=unsupported)
    try:
        job = WorkflowJob.model_validate(item)
    except ValidationError as exc:
        raise InvalidJobSpec("the job is invalid", details=describe_errors(exc)) from None
    if max_payload_bytes is not None and len(job.payload_json.encode()) > max_payload_bytes:
        raise InvalidJobSpec(
            "payload is too large",
            details=[
                {
                    "field": "payload",
                    "message": f"larger than {max_payload_bytes} bytes",
                }
            ],
        )
    return job


def _resolve(jobs: list[WorkflowJob], ids: dict[str, str]) -> dict[str, list[str]]:
    """Each job's parents as job ids: a ref of this workflow, else the id of an existing job
    (the store checks that it exists). Anything else is an unknown ref."""
    parents: dict[str, list[str]] = {}
    problems = []
    for index, job in enumerate(jobs):
        resolved = []
        for position, name in enumerate(job.depends_on):
            parent = ids.get(name) or parse_job_id(name)
            if parent is None:
                message = f"unknown ref {name!r}: not a ref of this workflow nor a job id"
                problems.append(
                    {
                        "field": f"jobs[{index}].depends_on.{position}",
                        "message": message,
                    }
                )
            resolved.append(parent)
        parents[job.ref] = resolved
    if problems:
        raise InvalidJobSpec("the workflow refers to unknown refs; no job was created", details=problems)
    return parents


def _dependency_order(jobs: list[WorkflowJob], parents: dict[str, list[str]], ids: dict[str, str]) -> list[str]:
    """The refs, parents before dependants; a cycle is refused, naming its refs."""
    ref_of = {job_id: ref for ref, job_id in ids.items()}
    graph = {job.ref: [ref_of[p] for p in parents[job.ref] if p in ref_of] for job in jobs}
    try:
        return list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = list(reversed(exc.args[1]))
        raise InvalidJobSpec(
            f"the workflow has a cycle: {' -> '.join(cycle)}; no job was created",
            details=[
                {
                    "field": "jobs",
                    "message": f"cycle: {' -> '.join(cycle)}",
                    "refs": sorted(set(cycle)),
                }
            ],
        ) from None


def _as_spec(job: WorkflowJob, parents: list[str]) -> JobSpec:
    fields: dict[str, Any] = {name: getattr(job, name) for name in JobSpec.model_fields}
    return JobSpec.model_construct(**(fields | {"depends_on": tuple(dict.fromkeys(parents))}))
