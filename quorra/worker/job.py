"""The job as a handler sees it: one leased attempt, decoded from the wire."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from quorra.jobs import JobStatus, ParentOutcome
from quorra.rpc import quorra_pb2 as pb2


class Flag:
    """threading.Event's interface (is_set, set, clear, wait) for a flag that is seldom
    waited for: the Event, a Condition and its locks, is made only by a first wait. Two
    Events per job were a fifth of a worker's CPU with no-op handlers."""

    __slots__ = ("_event", "_set")
    _lock = threading.Lock()  # one for all flags: held for a few instructions only

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with Flag._lock:
            self._set = True
            if self._event is not None:
                self._event.set()

    def clear(self) -> None:
        with Flag._lock:
            self._set = False
            if self._event is not None:
                self._event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        with Flag._lock:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


@dataclass(frozen=True)
class LeasedJob:
    """One attempt of a job, held under `lease_id` until it is acked or nacked.

    `attempt` counts from 1; the job is dead if this attempt fails and `is_last_attempt`.
    `lease_lost` is set when a heartbeat learns that the lease is gone (it expired, or the
    job was cancelled), or when the worker gave the attempt up at its timeout: a long
    handler may check it and stop early, since its ack will be refused. `timed_out` is set
    (with `lease_lost`) when the attempt ran past `timeout_seconds` and was nacked."""

    id: str
    type: str
    queue: str
    payload: dict[str, Any]
    priority: int
    attempt: int
    max_retries: int
    lease_id: str
    lease_expires_at: datetime | None
    created_at: datetime | None
    run_at: datetime | None
    timeout_seconds: int | None = None  # None: the attempt may run as long as it likes
    # A job submitted with depends_on: its parents' outcomes (all succeeded, unless it runs
    # anyway after a failure: on_parent_failure="run"). Empty for a job without parents.
    parents: tuple[ParentOutcome, ...] = ()
    workflow_id: str | None = None
    ref: str | None = None  # its name in the workflow
    # W3C trace context (README, "Tracing"): the submit's, and the parent of the handler's
    # span when it runs in the submit's trace; None for a job submitted outside any trace.
    traceparent: str | None = None
    tracestate: str | None = None
    parent_traceparent: str | None = None
    lease_lost: Flag = field(default_factory=Flag, compare=False, repr=False)
    timed_out: Flag = field(default_factory=Flag, compare=False, repr=False)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt > self.max_retries

    @property
    def parent_results(self) -> dict[str, Any]:
        """Each parent's result (None for a parent that failed), by the parent's ref in its
        workflow, or by its job id when it has none: the fan-in of a workflow."""
        return {parent.ref or parent.id: parent.result for parent in self.parents}

    @classmethod
    def from_message(cls, message: pb2.Job) -> LeasedJob:
        """Raises ValueError (not JSON) or TypeError (not an object) for a bad payload."""
        payload = json.loads(message.payload or "{}")
        if not isinstance(payload, dict):
            raise TypeError("the payload is not a JSON object")
        return cls(
            id=message.id,
            type=message.type,
            queue=message.queue,
            payload=payload,
            priority=message.priority,
            attempt=message.attempts,
            max_retries=message.max_retries,
            lease_id=message.lease_id,
            lease_expires_at=_time(message, "lease_expires_at"),
            created_at=_time(message, "created_at"),
            run_at=_time(message, "run_at"),
            timeout_seconds=message.timeout_seconds or None,
            parents=tuple(map(_parent, message.parents)),
            workflow_id=message.workflow_id or None,
            ref=message.ref or None,
            **(_trace_fields(message) if message.traceparent else {}),
        )

    def log_fields(self) -> dict[str, Any]:
        return {"job_id": self.id, "job_type": self.type, "queue": self.queue, "attempt": self.attempt}


def _parent(message: pb2.ParentResult) -> ParentOutcome:
    return ParentOutcome(
        id=message.job_id,
        type=message.type,
        status=JobStatus(message.status),
        ref=message.ref or None,
        result=json.loads(message.result_json) if message.result_json else None,
        last_error=message.last_error or None,
    )


def _trace_fields(message: pb2.Job) -> dict[str, str | None]:
    return {
        "traceparent": message.traceparent,
        "tracestate": message.tracestate or None,
        "parent_traceparent": message.parent_traceparent or None,
    }


def _time(message: pb2.Job, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    return getattr(message, name).ToDatetime(tzinfo=UTC)
