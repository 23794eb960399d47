"""What the client returns: frozen dataclasses with parsed timestamps (aware, UTC).

The fields are the server's (GET /v1/jobs/{id}); tests/client checks them against the
OpenAPI document, and the statuses against quorra.jobs, which this module does not import
(it stays free of pydantic and the server's code)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

DEV_API_KEY = "dev-api-key-change-in-production"  # quorra.config's default key; a test keeps them equal


class JobStatus(str, enum.Enum):
    """A job's status; compares equal to its string ('succeeded')."""

    PENDING = "pending"
    LEASED = "leased"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an attempt failed; retried at run_at
    DEAD = "dead"  # out of retries
    CANCELLED = "cancelled"
    BLOCKED = "blocked"  # waiting for its parents (depends_on) to succeed

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED})


def parse_timestamp(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job (GET /v1/jobs/{id}/attempts). ``outcome`` (succeeded, failed,
    expired, cancelled), ``finished_at`` and ``error`` are None while it runs."""

    attempt: int
    worker_id: str | None
    leased_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = None
    error: str | None = None
    lease_expires_at: datetime | None = None  # the attempt in flight only

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Attempt:
        values = {field.name: body.get(field.name) for field in fields(cls)}
        for name in ("leased_at", "finished_at", "lease_expires_at"):
            values[name] = parse_timestamp(values[name])
        return cls(**values)


@dataclass(frozen=True)
class Job:
    """A job as the server shows it. ``payload`` and ``result`` are None in a list that did
    not include them."""

    id: str
    type: str
    queue: str
    status: JobStatus
    priority: int
    attempts: int
    max_retries: int
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    payload: dict[str, Any] | None = None
    result: Any = None
    last_error: str | None = None
    leased_by: str | None = None
    leased_at: datetime | None = None
    lease_expires_at: datetime | None = None
    finished_at: datetime | None = None
    timeout_seconds: int | None = None  # how long the worker lets one attempt run (None: no limit)
    workflow_id: str | None = None  # the workflow it was submitted in
    ref: str | None = None  # its name in that workflow
    on_parent_failure: str | None = None  # "cancel" or "run"; None for a job without parents
    pending_parents: int | None = None  # parents it still waits for
    depends_on: tuple[str, ...] = ()  # its parents' ids (GET of one job only)
    dependants: tuple[str, ...] = ()  # the ids of the jobs that depend on it (GET of one job only)
    scheduled: bool = False  # pending, with run_at still to come
    attempts_history: tuple[Attempt, ...] | None = None  # only when asked for (Client.get(attempts=True))

    @property
    def is_finished(self) -> bool:
        """succeeded, dead or cancelled: nothing more happens unless someone retries it."""
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Job:
        values = {name: body.get(name) for name in _JOB_FIELDS}
        values["status"] = JobStatus(body["status"])
        values["scheduled"] = bool(body.get("scheduled", False))
        if values["attempts_history"] is not None:
            values["attempts_history"] = tuple(map(Attempt.from_json, values["attempts_history"]))
        for name in _TIMESTAMPS:
            values[name] = parse_timestamp(values[name])
        for name in ("depends_on", "dependants"):
            values[name] = tuple(values[name] or ())
        return cls(**values)


@dataclass(frozen=True)
class SubmittedJob:
    """What a submit answers: the new job's id, status (pending) and when it may run."""

    id: str
    status: JobStatus
    run_at: datetime

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SubmittedJob:
        return cls(id=body["id"], status=JobStatus(body["status"]), run_at=parse_timestamp(body["run_at"]))


@dataclass(frozen=True)
class SubmittedWorkflow:
    """What POST /v1/workflows answers: the workflow's id and status, and each job's id by ref."""

    id: str
    status: str
    job_ids: dict[str, str]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SubmittedWorkflow:
        return cls(id=body["id"], status=body["status"], job_ids={ref: job["id"] for ref, job in body["jobs"].items()})


@dataclass(frozen=True)
class Workflow:
    """GET /v1/workflows/{id}: the status of the whole (running, succeeded, failed or
    cancelled), the count of its jobs by status, and its jobs (without bodies)."""

    id: str
    name: str | None
    status: str
    counts: dict[str, int]
    jobs: tuple[Job, ...]
    created_at: datetime
    finished_at: datetime | None = None

    @property
    def is_finished(self) -> bool:
        return self.status != "running"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Workflow:
        return cls(
            id=body["id"],
            name=body["name"],
            status=body["status"],
            counts=dict(body["counts"]),
            jobs=tuple(Job.from_json(job) for job in body["jobs"]),
            created_at=parse_timestamp(body["created_at"]),
            finished_at=parse_timestamp(body["finished_at"]),
        )


@dataclass(frozen=True)
class QueueCount:
    queue: str
    status: JobStatus
    count: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> QueueCount:
        return cls(queue=body["queue"], status=JobStatus(body["status"]), count=body["count"])


@dataclass(frozen=True)
class Worker:
    """A worker the servers saw lately (GET /v1/workers)."""

    id: str
    host: str | None
    pid: int | None
    queues: tuple[str, ...]
    handlers: tuple[str, ...] | None  # None: the worker did not say
    jobs_in_flight: int
    first_seen_at: datetime
    last_seen_at: datetime

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Worker:
        values = {field.name: body.get(field.name) for field in fields(cls)}
        values["queues"] = tuple(values["queues"] or ())
        values["handlers"] = tuple(values["handlers"]) if values["handlers"] is not None else None
        for name in ("first_seen_at", "last_seen_at"):
            values[name] = parse_timestamp(values[name])
        return cls(**values)


_JOB_FIELDS = tuple(field.name for field in fields(Job))
_TIMESTAMPS = ("run_at", "created_at", "updated_at", "leased_at", "lease_expires_at", "finished_at")
