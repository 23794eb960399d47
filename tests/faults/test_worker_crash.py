"""Worker crash: four workers run 1,000 jobs while the oldest of them is killed with SIGKILL
five times, with jobs in flight (at 15, 30, 45, 60 and 75 % of the jobs done), and replaced.
No job is lost, only the jobs in flight at a kill run twice, and every lease a killed worker
held is reclaimed. How soon (the promise is TTL + two scheduler intervals) is a reported
figure, checked by bench/faults_bounds.py, not an assertion.

The kills follow the progress of the run, not the clock: on a busy machine the run takes
longer but sees the same five kills (a kill every 2 s would make a slow run slower still,
with a new worker to start at each)."""

from __future__ import annotations

import pytest

from tests.faults.executions import duplicates, leases_run_twice, per_job
from tests.faults.measure import (
    kill_worker,
    ran_more_often_than_leased,
    reclaims,
    seconds,
    taken_back_at,
)
from tests.faults.processes import all_jobs, enqueue, held_leases, status_counts, wait_all_succeeded
from tests.worker.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(600)]

JOBS = 1000
WORKERS = 4
SLOTS = 5  # jobs each worker runs at once
HANDLER_SECONDS = 0.05  # so that a worker always has jobs in flight
TTL_SECONDS = 2
INTERVAL_SECONDS = 0.25
KILL_AT = (0.15, 0.3, 0.45, 0.6, 0.75)  # fractions of the jobs done
RUN_TIMEOUT_SECONDS = 400  # generous: about 10 s on an idle 2-core machine


def test_kill_9_of_a_worker_five_times_mid_run_loses_no_job(figures, postgres_url, postgres_store, deploy, executions):
    # Given 1,000 jobs, a gRPC server, a scheduler and four workers
    store = postgres_store
    ids = enqueue(store, JOBS, seconds=HANDLER_SECONDS)
    cluster = deploy(postgres_url, ttl_seconds=TTL_SECONDS, interval_seconds=INTERVAL_SECONDS)
    server = cluster.start_grpc()
    scheduler = cluster.start_scheduler()
    workers = [cluster.start_worker(SLOTS) for _ in range(WORKERS)]

    # When the oldest worker is killed with SIGKILL as it runs jobs, and replaced, five times
    kills = []
    for fraction in KILL_AT:
        wait_until(
            lambda f=fraction: status_counts(store).get("succeeded", 0) >= JOBS * f,
            timeout=RUN_TIMEOUT_SECONDS,
            what=f"{fraction:.0%} of the jobs done (now {status_counts(store)})",
        )
        victim = workers.pop(0)
        wait_until(lambda w=victim: held_leases(store, w.worker_id), RUN_TIMEOUT_SECONDS, "jobs in flight to kill")
        kills.append(kill_worker(store, victim))
        workers.append(cluster.start_worker(SLOTS))
    wait_all_succeeded(store, JOBS, timeout=RUN_TIMEOUT_SECONDS)

    # Then every job succeeded, only jobs in flight at a kill ran again (under a new lease),
    # and each lease a killed worker held was reaped (or handed back, or acked just before)
    runs = executions.all()
    jobs = all_jobs(store)
    killed_jobs = {job.id for kill in kills for job in kill.held}
    in_flight = sum(len(kill.held) for kill in kills)
    reclaimed = reclaims(
        store,
        kills,
        taken_back_at(scheduler.events("lease.expired")),
        taken_back_at(server.events("lease.released"), given_back=1),
    )
    figures.update(
        jobs=JOBS,
        kills=len(kills),
        in_flight_at_kills=in_flight,
        executions=len(runs),
        duplicates=duplicates(runs),
        reaped=len(reclaimed.reaped),
        handed_back_undelivered=len(reclaimed.handed_back),
        acked_just_before_kill=reclaimed.acked_in_flight,
        reclaim_max_s=seconds(reclaimed.reaped)["max"],
        reclaim_p50_s=seconds(reclaimed.reaped)["p50"],
        bound_s=TTL_SECONDS + 2 * INTERVAL_SECONDS,
    )
    assert in_flight > 0, "no kill caught a job in flight"
    assert status_counts(store) == {"succeeded": JOBS}
    assert set(per_job(runs)) == set(ids)
    assert duplicates(runs) <= in_flight
    assert {job_id for job_id, count in per_job(runs).items() if count > 1} <= killed_jobs
    assert leases_run_twice(runs) == []
    assert ran_more_often_than_leased(runs, jobs, server.events("lease.released")) == []
    assert reclaimed.unaccounted == []
