"""Heartbeats: one thread extends the lease of every running job, a first time soon after
it starts (the job shows `processing`) and then every third of the TTL, so a long job
keeps its lease while a dead worker's jobs expire within one TTL."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from quorra.worker.client import LEASE_GONE_CODES, WorkerClient, status_code
from quorra.worker.job import LeasedJob

logger = logging.getLogger(__name__)

FIRST_BEAT_SECONDS = 1.0
RETRY_BEAT_SECONDS = 1.0  # after a failed heartbeat (server unreachable), try again this soon


@dataclass
class Lease:
    """A running job's lease as this worker knows it: held until `valid_until` (monotonic)
    unless the server said otherwise (`job.lease_lost`)."""

    job: LeasedJob
    valid_until: float
    next_beat: float = field(default=0.0)
    settling: bool = False  # its outcome was handed to the completer
    deadline: float = math.inf  # the job's timeout (monotonic): its lease is not extended past it
    # While tracing is on: ends the job's settle span, with its new status or the error
    on_settled: Callable[[str, str], None] | None = None


class Heartbeats:
    def __init__(self, client: WorkerClient, ttl_seconds: int, *, first_beat: float = FIRST_BEAT_SECONDS):
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.interval = ttl_seconds / 3
        self.first_beat = min(first_beat, self.interval)
        self._leases: dict[str, Lease] = {}
        self._wake_at = float("inf")  # when the heartbeat thread wakes next by itself (monotonic)
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="quorra-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=self.client.call_timeout + 1)

    def track(self, job: LeasedJob, received_at: float) -> Lease:
        now = time.monotonic()
        lease = Lease(job, valid_until=received_at + self.ttl_seconds, next_beat=now + self.first_beat)
        if job.timeout_seconds is not None:
            lease.deadline = now + job.timeout_seconds
        with self._condition:
            self._leases[job.id] = lease
            if lease.next_beat < self._wake_at:  # else the thread wakes in time by itself: no wake-up per job
                self._condition.notify_all()
        return lease

    def untrack(self, job_id: str) -> None:
        with self._condition:
            self._leases.pop(job_id, None)

    def running(self) -> list[Lease]:
        with self._condition:
            return list(self._leases.values())

    def _run(self) -> None:
        while True:
            due = self._wait_for_due()
            if due is None:
                return
            for lease in due:
                self._beat(lease)

    def _wait_for_due(self) -> list[Lease] | None:
        with self._condition:
            while not self._stopped:
                now = time.monotonic()
                due = [lease for lease in self._leases.values() if lease.next_beat <= now]
                if due:
                    return due
                self._wake_at = min((lease.next_beat for lease in self._leases.values()), default=now + self.interval)
                self._condition.wait(min(self._wake_at - now, self.interval))  # a timed-out lease beats at inf
                self._wake_at = float("inf")
            return None

    def _beat(self, lease: Lease) -> None:
        sent_at = time.monotonic()
        if sent_at >= lease.deadline:  # timed out: the job thread nacks it; never extend it again
            lease.next_beat = math.inf
            return
        try:
            self.client.extend(lease.job.id, lease.job.lease_id, self.ttl_seconds)
        except grpc.RpcError as exc:
            self._failed(lease, exc)
            return
        lease.valid_until = sent_at + self.ttl_seconds
        lease.next_beat = sent_at + self.interval
        logger.debug(
            "lease extended",
            extra={"event": "lease.extended", "worker_id": self.client.worker_id, **lease.job.log_fields()},
        )

    def _failed(self, lease: Lease, error: grpc.RpcError) -> None:
        if status_code(error) in LEASE_GONE_CODES and lease.settling:
            self.untrack(lease.job.id)  # its settle landed while this beat was on its way: not a loss
            return
        if status_code(error) in LEASE_GONE_CODES:
            lease.job.lease_lost.set()
            self.untrack(lease.job.id)
            logger.warning(
                "lease lost while the job runs; its ack will be refused",
                extra={
                    "event": "lease.lost",
                    "worker_id": self.client.worker_id,
                    "error": error.details(),
                    **lease.job.log_fields(),
                },
            )
            return
        lease.next_beat = time.monotonic() + min(self.interval, RETRY_BEAT_SECONDS)
        logger.info(
            "heartbeat failed; retrying",
            extra={
                "event": "lease.extend_failed",
                "code": error.code().name,
                "worker_id": self.client.worker_id,
                **lease.job.log_fields(),
            },
        )
