"""Faults of a worker: SIGTERM with jobs in flight, and a stalled worker whose lease was
taken over (its late ack must be refused)."""

from __future__ import annotations

import os
import signal

import pytest

from quorra.jobs import JobStatus
from tests.faults.processes import enqueue
from tests.worker.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_sigterm_with_10_jobs_in_flight_acks_all_10_and_exits_0(figures, database_url, store, deploy, executions):
    # Given a worker running 10 jobs of 1.5 s at once
    ids = enqueue(store, 10, seconds=1.5)
    cluster = deploy(database_url)
    cluster.start_grpc()
    worker = cluster.start_worker(max_jobs=10, QUORRA_WORKER_SHUTDOWN_GRACE="20s")
    wait_until(lambda: executions.count() == 10, timeout=120, what="10 jobs running")

    # When it gets SIGTERM
    worker.signal(signal.SIGTERM)
    exit_code = worker.stop(timeout=60)

    # Then it exits 0 once all 10 are acked, each run exactly once
    jobs = [store.get_job(job_id) for job_id in ids]
    settled = [line.record for line in worker.events("job.settled")]
    figures.update(
        jobs=10, in_flight_at_sigterm=10, acked=len(settled), executions=executions.count(), exit_code=exit_code
    )
    assert exit_code == 0
    assert [(job.status, job.attempts) for job in jobs] == [(JobStatus.SUCCEEDED, 1)] * 10
    assert sorted(line["job_id"] for line in settled) == sorted(ids)
    assert {line["status"] for line in settled} == {"succeeded"}
    assert executions.count() == 10
    assert worker.wait_for("worker.stopped").record["clean"] is True


def test_ack_of_a_stalled_worker_after_its_lease_was_taken_over_is_refused(
    figures, database_url, store, deploy, executions
):
    # Given two workers and a scheduler, and a job that one of them (A) has started
    [job_id] = enqueue(store, 1, seconds=1.0)
    cluster = deploy(database_url, ttl_seconds=2)
    cluster.start_grpc()
    scheduler = cluster.start_scheduler()
    workers = {worker.popen.pid: worker for worker in (cluster.start_worker(1), cluster.start_worker(1))}
    [first] = wait_until(lambda: executions.of(job_id), timeout=120, what="the job started")
    stalled = workers.pop(first.pid)
    [other] = workers.values()

    # When A stalls (SIGSTOP) past its lease, the scheduler reaps it, and B runs the job again
    os.kill(stalled.popen.pid, signal.SIGSTOP)
    reaped = scheduler.wait_for("lease.expired", job_id=job_id, timeout=60)
    settled = other.wait_for("job.settled", job_id=job_id, timeout=60)
    os.kill(stalled.popen.pid, signal.SIGCONT)
    refused = stalled.wait_for("job.settle_refused", job_id=job_id, timeout=60)

    # Then A's ack is refused, B's ack stands, and the job ran once per lease
    job = store.get_job(job_id)
    runs = executions.of(job_id)
    figures.update(
        jobs=1, stalls=1, executions=len(runs), duplicates=len(runs) - 1, refused_code=refused.record["code"]
    )
    assert reaped.record["attempt"] == 1
    assert settled.record["status"] == "succeeded" and settled.record["attempt"] == 2
    assert refused.record["code"] == "STALE_LEASE"  # SettleJobs' per-lease outcome
    assert (job.status, job.attempts, job.result) == (JobStatus.SUCCEEDED, 2, {"pid": other.popen.pid})
    assert [(run.pid, run.attempt) for run in sorted(runs, key=lambda r: r.attempt)] == [
        (stalled.popen.pid, 1),
        (other.popen.pid, 2),
    ]
    assert len({run.lease_id for run in runs}) == 2
    assert store.get_job(job_id) == job  # the refused ack changed nothing
