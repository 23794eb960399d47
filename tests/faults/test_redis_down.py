"""Redis down: the private redis-server that carries the wake-ups of a whole deployment
(web, gRPC server, scheduler) is stopped in the middle of a run and started again. Jobs
keep being accepted and leased while it is down (wake-ups fall back to LISTEN/NOTIFY),
delayed jobs that come due during the outage are run during it, and no job is lost or
run twice."""

from __future__ import annotations

import time

import pytest

from tests.faults.executions import duplicates, per_job
from tests.faults.measure import seconds
from tests.faults.processes import all_jobs, status_counts, wait_all_succeeded
from tests.faults.traffic import Answer, Submitter
from tests.worker.support import PrivateRedis, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(180)]

WORKERS = 2
PHASE_SECONDS = 3.0  # of traffic before, during and after the outage
DELAYED_JOBS = 5


def _latencies(answers: list[Answer], started: dict[str, float], delay: float = 0.0) -> list[float]:
    """Due (submitted + delay) -> first execution, for each accepted job that ran."""
    return [started[a.job_id] - a.sent_at_wall - delay for a in answers if a.job_id in started]


def test_redis_down_mid_run_leasing_never_stops(figures, postgres_url, postgres_store, tmp_path, deploy, executions):
    # Given a deployment whose wake-ups go over a private Redis, and jobs submitted every 20 ms
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    try:
        cluster = deploy(postgres_url, redis_url=redis_server.url)
        server, scheduler = cluster.start_grpc(), cluster.start_scheduler()
        web, base = cluster.start_web()
        workers = [cluster.start_worker() for _ in range(WORKERS)]
        with Submitter(base) as submitter:
            time.sleep(PHASE_SECONDS)

            # When Redis dies (SIGKILL), while delayed jobs are due during the outage
            redis_server.stop()
            down_at = time.monotonic()
            delayed = [submitter.submit(delay_seconds=1) for _ in range(DELAYED_JOBS)]
            time.sleep(PHASE_SECONDS)
            during = submitter.between(down_at, time.monotonic())
            wait_until(lambda: set(per_job(executions.all())) >= {a.job_id for a in during + delayed}, timeout=20,
                       what="every job submitted during the outage ran while Redis was still down")
            up_at = time.monotonic()
            redis_server.start()
            server.wait_for("notify.channel_up", timeout=20, channel="redis")
            time.sleep(PHASE_SECONDS)
    finally:
        redis_server.stop()

    # Then every job was accepted and ran exactly once, those of the outage during it
    accepted = submitter.accepted()
    wait_all_succeeded(postgres_store, len(accepted) + DELAYED_JOBS, timeout=60)
    runs = executions.all()
    started = {run.job_id: run.started_at for run in runs}
    before = [a for a in accepted if a.sent_at < down_at]
    figures.update(submitted=len(submitter.answers) + DELAYED_JOBS, outage_s=round(up_at - down_at, 1),
                   during_outage=len(during) + DELAYED_JOBS, executions=len(runs), duplicates=duplicates(runs),
                   start_latency_before_p50_s=seconds(_latencies(before, started))["p50"],
                   start_latency_outage_p50_s=seconds(_latencies(during, started))["p50"],
                   start_latency_outage_max_s=seconds(_latencies(during, started))["max"],
                   delayed_start_after_due_max_s=seconds(_latencies(delayed, started, delay=1))["max"],
                   channel_down_logged_by=sum(bool(p.events("notify.channel_down")) for p in (server, scheduler, web)))
    assert {answer.status for answer in [*submitter.answers, *delayed]} == {201}
    assert status_counts(postgres_store) == {"succeeded": len(all_jobs(postgres_store))}
    assert set(per_job(runs)) == set(all_jobs(postgres_store)) == {a.job_id for a in [*accepted, *delayed]}
    assert duplicates(runs) == 0
    assert min(_latencies(delayed, started, delay=1)) >= 0  # not before they were due
    assert all(worker.popen.poll() is None for worker in workers)
    for process in (server, scheduler):
        process.wait_for("notify.channel_down", channel="redis")
