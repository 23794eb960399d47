"""Race: 16 worker threads in 4 processes lease from one queue of 2,000 jobs on PostgreSQL
at once. With no fault injected, every job runs exactly once.

2,000 jobs are 125 a thread: every lease of the run is contended by the other processes'
(a double lease shows as a duplicate execution whatever the number of jobs), and the run
is short enough to leave the CPU to the rest of the suite. tests/store/test_concurrency.py
races the store itself, without the gRPC server in between."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from quorra.notify import PgNotifier
from tests.faults.executions import duplicates, per_job
from tests.faults.processes import QUEUE, all_jobs, enqueue, status_counts, wait_all_succeeded
from tests.worker.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(600)]

JOBS = 2000
PROCESSES = 4
THREADS = 4  # per process: 16 in all


def test_16_threads_in_4_processes_run_2000_jobs_exactly_once(
    figures, postgres_url, postgres_store, deploy, executions
):
    # Given 4 worker processes of 4 threads each, all waiting for jobs (on a busy machine one
    # started after the others could find every job leased already, and take no part)
    # No lease expires in this run (no fault at all), and no log line is read: warnings only.
    cluster = deploy(postgres_url, ttl_seconds=30, log_level="warning")
    cluster.start_grpc()
    cluster.start_scheduler()
    since = datetime.now(UTC) - timedelta(minutes=1)
    workers = [cluster.start_worker(THREADS) for _ in range(PROCESSES)]
    wait_until(
        lambda: {seen.id for seen in postgres_store.recent_workers(since)} >= {w.worker_id for w in workers},
        timeout=120,
        what="every worker leasing",
    )

    # When 2,000 jobs become ready at once, and they race for them
    started = time.monotonic()
    ids = enqueue(postgres_store, JOBS)
    wake = PgNotifier(postgres_url, interval=1.0, backstop=1.0)
    wake.publish(QUEUE)
    wake.close()
    finished = wait_all_succeeded(postgres_store, JOBS, timeout=400, deployment=cluster)

    # Then each job ran exactly once, at its first attempt, every process took part, and none
    # stopped (a worker whose lease once asked for fewer than one job was refused, and gave up)
    runs = executions.all()
    by_process = Counter(run.pid for run in runs)
    figures.update(
        jobs=JOBS,
        processes=PROCESSES,
        threads=PROCESSES * THREADS,
        executions=len(runs),
        duplicates=duplicates(runs),
        jobs_per_second=round(JOBS / (finished - started)),
        per_process=sorted(by_process.values()),
    )
    assert len(runs) == JOBS and duplicates(runs) == 0
    assert set(per_job(runs)) == set(ids)
    assert status_counts(postgres_store) == {"succeeded": JOBS}
    assert {job.attempts for job in all_jobs(postgres_store).values()} == {1}
    assert set(by_process) == {worker.popen.pid for worker in workers}
    assert [worker.popen.poll() for worker in workers] == [None] * PROCESSES
