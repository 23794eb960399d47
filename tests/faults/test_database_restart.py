"""Database restart: a private PostgreSQL cluster is stopped for 2 s in the middle of a run
(clients submitting over REST, workers acking over gRPC) and started again. The web
answers 503 while it is down and recovers by itself; every process stays up; no accepted
job is lost, and every ack that failed was retried or its job leased again."""

from __future__ import annotations

import time

import pytest
import requests

from quorra.store import Store
from tests.faults.executions import leases_run_twice, per_job
from tests.faults.measure import unsettled_acks
from tests.faults.postgres import PrivatePostgres
from tests.faults.processes import all_jobs, status_counts, wait_all_succeeded
from tests.faults.traffic import Submitter
from tests.worker.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(600)]

TTL_SECONDS = 3
INTERVAL_SECONDS = 0.25
WORKERS = 2
OUTAGE_SECONDS = 2.0
STEADY_SECONDS = 1.0  # of traffic before the outage and after the recovery (some 50 jobs)


@pytest.fixture
def private_postgres():
    cluster = PrivatePostgres()
    try:
        yield cluster.create()
    finally:
        cluster.destroy()


@pytest.fixture
def private_store(private_postgres):
    store = Store.from_url(private_postgres.url)
    yield store
    store.close()


def _readiness(base: str) -> int:
    return requests.get(f"{base}/readyz", timeout=30).status_code


def test_database_restart_mid_run_loses_no_job(figures, private_postgres, private_store, deploy, executions):
    # Given a whole deployment on a private PostgreSQL, with jobs submitted every 20 ms
    cluster = deploy(private_postgres.url, ttl_seconds=TTL_SECONDS, interval_seconds=INTERVAL_SECONDS)
    running = cluster.start_all(WORKERS)
    base, workers = running.base, running.workers
    with Submitter(base) as submitter:
        time.sleep(STEADY_SECONDS)

        # When PostgreSQL stops for 2 s (every session ended) and starts again
        private_postgres.stop()
        stopped_at = time.monotonic()
        wait_until(lambda: _readiness(base) == 503, timeout=60, what="/readyz answers 503")
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
        restarting_at = time.monotonic()
        private_postgres.start()
        recovered = wait_until(
            lambda: [a for a in submitter.accepted() if a.sent_at > restarting_at],
            timeout=120,
            what="a job accepted after the restart",
        )[0]
        wait_until(lambda: _readiness(base) == 200, timeout=120, what="/readyz answers 200")
        time.sleep(STEADY_SECONDS)

    # Then the web refused with 503 (never anything else) while the database was down ...
    accepted = submitter.accepted()
    during = {answer.status for answer in submitter.between(stopped_at, restarting_at)}
    wait_all_succeeded(private_store, len(accepted), timeout=300)
    runs, jobs = executions.all(), all_jobs(private_store)
    outcomes = unsettled_acks(workers, jobs)
    figures.update(
        outage_s=round(restarting_at - stopped_at, 1),
        submitted=len(submitter.answers),
        accepted=len(accepted),
        refused_503=sum(a.status == 503 for a in submitter.answers),
        recovered_after_s=round(recovered.sent_at - restarting_at, 3),
        executions=len(runs),
        acks_retried=sum(len(w.events("job.settle_retry")) for w in workers),
        acks_landed_reply_lost=outcomes["landed"],
        acks_failed_job_re_leased=outcomes["re-leased"],
        leadership_lost=len(running.scheduler.events("leadership.lost")),
    )
    assert during == {503}
    assert {answer.status for answer in submitter.answers} == {201, 503}
    # ... and came back by itself: no process of Quorra restarted, gunicorn booted no new worker
    assert all(process.popen.poll() is None for process in running.processes)
    assert len([line for line in running.web.lines if line.record["message"].startswith("Booting worker")]) == 1
    # ... no accepted job was lost, none was created without a 201, each ran once per lease
    assert status_counts(private_store) == {"succeeded": len(accepted)}
    assert set(jobs) == {answer.job_id for answer in accepted}
    assert set(per_job(runs)) == set(jobs)
    assert leases_run_twice(runs) == []
    # ... and every ack that did not get through either landed after all or its job ran again
    assert outcomes["lost"] == 0
