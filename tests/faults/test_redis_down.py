"""Redis down: the private redis-server that carries the wake-ups of a whole deployment
(web, gRPC server, scheduler) is killed in the middle of a run and started again. Jobs
keep being accepted and leased while it is down (wake-ups fall back to LISTEN/NOTIFY), the
scheduler keeps leading and its wake-ups for delayed jobs fall back too, and no job is lost
or run twice."""

from __future__ import annotations

import time

import pytest
import requests

from tests.faults.executions import duplicates, per_job
from tests.faults.measure import seconds
from tests.faults.processes import QUEUE, all_jobs, status_counts, wait_all_succeeded
from tests.faults.traffic import Answer, Submitter
from tests.worker.support import PrivateRedis, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(600)]

WORKERS = 2
PHASE_SECONDS = 1.5  # of traffic before, during and after the outage (some 75 jobs each)
DELAYED_JOBS = 5
LATER = "faults-later"  # the delayed jobs' queue: nobody leases it before the scheduler announced them


def _latencies(answers: list[Answer], started: dict[str, float]) -> list[float]:
    """Submission -> first execution, for each accepted job that ran."""
    return [started[a.job_id] - a.sent_at_wall for a in answers if a.job_id in started]


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_down_mid_run_leasing_never_stops(
    figures, postgres_url, postgres_store, private_redis, deploy, executions
):
    # Given a deployment whose wake-ups go over a private Redis, and jobs submitted every 20 ms
    cluster = deploy(postgres_url, redis_url=private_redis.url)
    running = cluster.start_all(WORKERS)
    server, scheduler, web, workers = running.server, running.scheduler, running.web, running.workers
    with Submitter(running.base) as submitter:
        time.sleep(PHASE_SECONDS)

        # When Redis dies (SIGKILL), and delayed jobs become due during the outage
        private_redis.stop()
        down_at = time.monotonic()
        delayed = [submitter.submit(queue=LATER, delay_seconds=1) for _ in range(DELAYED_JOBS)]
        readiness = requests.get(f"{running.base}/readyz", timeout=30).json()
        scheduler.wait_for("notify.channel_down", channel="redis")  # its wake-up for them fell back
        workers.append(cluster.start_worker(queue=LATER))
        time.sleep(max(0.0, PHASE_SECONDS - (time.monotonic() - down_at)))
        during = submitter.between(down_at, time.monotonic())
        wait_until(
            lambda: set(per_job(executions.all())) >= {a.job_id for a in during + delayed},
            timeout=120,
            what="every job submitted during the outage ran while Redis was still down",
        )
        up_at = time.monotonic()
        private_redis.start()
        server.wait_for("notify.channel_up", channel="redis")
        time.sleep(PHASE_SECONDS)

    # Then every job was accepted and ran exactly once, those of the outage during it
    accepted = submitter.accepted()
    wait_all_succeeded(postgres_store, len(accepted), timeout=300)
    runs, jobs = executions.all(), all_jobs(postgres_store) | all_jobs(postgres_store, LATER)
    started = {run.job_id: run.started_at for run in runs}
    before = [a for a in accepted if a.sent_at < down_at]
    figures.update(
        submitted=len(submitter.answers) + DELAYED_JOBS,
        outage_s=round(up_at - down_at, 1),
        during_outage=len(during) + DELAYED_JOBS,
        executions=len(runs),
        duplicates=duplicates(runs),
        start_latency_before_p50_s=seconds(_latencies(before, started))["p50"],
        start_latency_outage_p50_s=seconds(_latencies(during, started))["p50"],
        start_latency_outage_max_s=seconds(_latencies(during, started))["max"],
        fell_back=sum(bool(p.events("notify.channel_down")) for p in (web, server, scheduler)),
        readyz_during_outage=readiness["status"],
    )
    assert {answer.status for answer in [*submitter.answers, *delayed]} == {201}
    assert readiness == {"status": "degraded", "checks": {"database": "ok", "redis": "cannot be reached"}}
    assert status_counts(postgres_store, QUEUE) == {"succeeded": len(accepted)}
    assert status_counts(postgres_store, LATER) == {"succeeded": DELAYED_JOBS}
    assert set(per_job(runs)) == set(jobs) == {a.job_id for a in [*accepted, *delayed]}
    assert duplicates(runs) == 0
    assert all(p.popen.poll() is None for p in [server, scheduler, web, *workers])
    assert scheduler.events("leadership.lost") == [] and scheduler.events("scheduler.failed") == []
    for process in (server, scheduler):  # back on Redis, without a restart (each finds out on its own time)
        assert process.wait_for("notify.channel_up", timeout=120)
