"""What the scenarios measure: the leases a killed worker held, how long each took to be
reclaimed, and how long any lease stays held past its expiry."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Self

from quorra.errors import DatabaseUnavailable
from quorra.jobs import Job, JobStatus
from quorra.store import Store
from tests.faults.executions import Execution, per_job
from tests.faults.processes import held_leases
from tests.scheduler.processes import LogLine


def seconds(values: list[float]) -> dict[str, float | None]:
    """max and p50, rounded to ms (None when there is nothing to measure)."""
    if not values:
        return {"max": None, "p50": None}
    return {"max": round(max(values), 3), "p50": round(statistics.median(values), 3)}


@dataclass(frozen=True)
class Kill:
    """A kill -9 of a worker: when (monotonic), and the leases it held at that moment."""

    worker_id: str
    at: float
    held: list[Job]


def kill_worker(store: Store, worker) -> Kill:
    at = time.monotonic()
    worker.kill()  # SIGKILL, and wait until it is gone: its leases can change no more
    return Kill(worker.worker_id, at, held_leases(store, worker.worker_id))


def taken_back_at(lines: list[LogLine], given_back: int = 0) -> dict[tuple[str, int], float]:
    """(job_id, attempt of the lease) -> when a `lease.expired` line (scheduler) or a
    `lease.released` line (server, for a lease it could not deliver; that line shows the
    attempt already given back: pass given_back=1) arrived."""
    return {(line.record["job_id"], line.record["attempt"] + given_back): line.received_at for line in lines}


@dataclass
class Reclaims:
    reaped: list[float]  # kill -> reaped by the scheduler, per lease
    handed_back: list[float]  # kill -> handed back by the server (it could not send the lease)
    acked_in_flight: int  # leases settled by an ack the worker sent just before it died
    unaccounted: list[Job]  # none of these: stranded

    @property
    def seconds(self) -> list[float]:
        return self.reaped + self.handed_back


def reclaims(store: Store, kills: list[Kill], reaped: dict, handed_back: dict) -> Reclaims:
    found = Reclaims([], [], 0, [])
    for kill in kills:
        for job in kill.held:
            lease = (job.id, job.attempts)
            if lease in reaped:
                found.reaped.append(reaped[lease] - kill.at)
            elif lease in handed_back:
                found.handed_back.append(handed_back[lease] - kill.at)
            elif _acked_under(store.get_job(job.id), job.lease_id):
                found.acked_in_flight += 1
            else:
                found.unaccounted.append(job)
    return found


def _acked_under(job: Job, lease_id: str) -> bool:
    return job.status is JobStatus.SUCCEEDED and job.lease_id == lease_id


def ran_more_often_than_leased(runs: list[Execution], jobs: dict[str, Job], handed_back: list[LogLine]) -> list[str]:
    """Jobs that ran more often than they were leased (there must be none). A lease the
    server handed back as undelivered gave its attempt back, yet it may have reached a
    worker that died at that instant (the send failed only because the stream broke), so
    each hand-back allows one run more."""
    allowed = Counter(line.record["job_id"] for line in handed_back)
    for job in jobs.values():
        allowed[job.id] += job.attempts
    return [job_id for job_id, count in per_job(runs).items() if count > allowed[job_id]]


def unsettled_acks(workers, jobs: dict[str, Job]) -> Counter[str]:
    """What became of each settle a worker could not get through (refused, or given up
    after its retries): 'landed' (the job succeeded under that very lease: the ack went
    through, its reply was lost), 're-leased' (the job was leased again and ran again), or
    'lost' (neither: the job is stranded; there must be none)."""
    outcomes: Counter[str] = Counter()
    for worker in workers:
        for line in worker.events("job.settle_refused") + worker.events("job.settle_failed"):
            job, attempt = jobs[line.record["job_id"]], line.record["attempt"]
            if job.attempts > attempt:
                outcomes["re-leased"] += 1
            else:
                outcomes["landed" if job.status is JobStatus.SUCCEEDED else "lost"] += 1
    return outcomes


class Ticker:
    """Calls `tick()` every `every` seconds in a daemon thread while inside a `with` block."""

    def __init__(self, every: float):
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.tick()

    def tick(self) -> None:
        raise NotImplementedError


class LeaseWatch(Ticker):
    """Samples the held leases every `every` seconds in a thread and keeps the longest time
    any of them was seen held past its lease_expires_at (on the store's clock)."""

    def __init__(self, store: Store, every: float = 0.1):
        super().__init__(every)
        self.store = store
        self.max_overdue = 0.0
        self.samples = 0

    def tick(self) -> None:
        try:
            self._sample()
        except DatabaseUnavailable:
            pass  # a scenario that stops the database: sample again once it is back

    def _sample(self) -> None:
        now = self.store.database_now()
        overdue = [_age(now, job.lease_expires_at) for job in held_leases(self.store) if job.lease_expires_at]
        self.max_overdue = max([self.max_overdue, *overdue])
        self.samples += 1


def _age(now: datetime, then: datetime) -> float:
    return (now.astimezone(UTC) - then).total_seconds()
