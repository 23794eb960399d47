"""`quorra scheduler` processes on SQLite and PostgreSQL: one leads, kill -9 hands over to
the other, which reaps what expired, SIGTERM exits 0. How soon the survivor takes over
(the promise is two intervals) is a reported figure, not an assertion: a busy machine may
run the survivor late."""

from __future__ import annotations

import sys
import time

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from quorra.config import Settings
from quorra.jobs import JobStatus
from quorra.notify import make_notifier
from quorra.store import LEASE_EXPIRED, Store
from tests import factories
from tests.processes import LoggedProcess, clean_environ
from tests.scheduler.processes import SchedulerProcess

INTERVAL_SECONDS = 0.2
SETTLE_TIMEOUT_SECONDS = 60.0  # generous: the survivor reaps within 0.4 s on an idle machine
LEADERSHIP_EVENTS = ("leadership.acquired", "leadership.awaited")


def _leader_and_follower(first: SchedulerProcess, second: SchedulerProcess):
    """Each process's first leadership decision: exactly one must have acquired."""
    decisions = {process: process.wait_for(LEADERSHIP_EVENTS).event for process in (first, second)}
    leaders = [p for p, event in decisions.items() if event == "leadership.acquired"]
    assert len(leaders) == 1, f"expected one leader, got {decisions}"
    follower = second if leaders[0] is first else first
    return leaders[0], follower


def _wait_until_settled(store, job_id: str, timeout: float = SETTLE_TIMEOUT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if job.status is not JobStatus.LEASED:
            return job, time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still leased after {timeout} s")


def _multiprocess_sample(metrics_dir, name: str, **labels: str) -> float | None:
    """What /metrics would show for the processes that wrote to `metrics_dir`."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    return registry.get_sample_value(name, labels)


@pytest.mark.slow
def test_follower_takes_over_and_reaps_after_leader_is_killed(store, start_scheduler, tmp_path, figures):
    # Given two schedulers (in prometheus multi-process mode, as under `make run`) that have
    # run side by side for a few intervals, one leading
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    schedulers = [start_scheduler(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)) for _ in range(2)]
    leader, follower = _leader_and_follower(*schedulers)
    time.sleep(5 * INTERVAL_SECONDS)
    assert follower.events("leadership.acquired") == []

    # When the leader is killed with SIGKILL and a lease then expires
    killed_at = time.monotonic()  # before kill() returns: the survivor may lead by then
    leader.kill()
    job = factories.leased_job(store, ttl_seconds=0.001)

    # Then the survivor takes over and reaps it as a failed attempt
    reaped, reaped_at = _wait_until_settled(store, job.id)
    assert (reaped.status, reaped.last_error) == (JobStatus.FAILED, LEASE_EXPIRED)
    assert follower.wait_for("leadership.acquired").received_at > killed_at
    follower.wait_for("lease.expired", job_id=job.id)
    follower.wait_for("leases.reaped")
    assert _multiprocess_sample(metrics_dir, "quorra_leases_expired_total", tenant="default", queue=job.queue) == 1
    figures.update(reaped_after_kill_s=round(reaped_at - killed_at, 3), bound_s=2 * INTERVAL_SECONDS)
    assert follower.stop() == 0


def test_sigterm_stops_leader_with_exit_0_and_follower_takes_over(start_scheduler):
    # Given a leader and a follower
    leader, follower = _leader_and_follower(start_scheduler(), start_scheduler())

    # When the leader gets SIGTERM
    exit_code = leader.stop()

    # Then it exits 0 having released the leadership, and the follower takes over
    assert exit_code == 0
    leader.wait_for("leadership.released")
    follower.wait_for("leadership.acquired")
    assert follower.stop() == 0


def test_sigterm_stops_a_follower_with_exit_0(start_scheduler):
    leader, follower = _leader_and_follower(start_scheduler(), start_scheduler())

    assert follower.stop() == 0
    assert follower.events("leadership.released") == []
    assert leader.stop() == 0


# `quorra scheduler` whose main thread receives SIGINT the moment it enters Event.set() on
# its stop event: deterministically, a second signal arriving while the first is handled.
SECOND_SIGNAL_INSIDE_EVENT_SET = """
import signal, sys
def trace(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "notify_all" and frame.f_back.f_code.co_name == "set":
        if frame.f_back.f_back.f_code.co_filename.endswith("scheduler.py"):
            sys.settrace(None)
            signal.raise_signal(signal.SIGINT)
sys.settrace(trace)
from quorra.cli.admin import main
main(["scheduler"])
"""


def test_a_second_signal_during_shutdown_still_exits_0(database_url):
    # Given a leading scheduler whose next Event.set() in its main thread is hit by SIGINT
    environ = clean_environ(DATABASE_URL=database_url, QUORRA_SCHEDULER_INTERVAL="0.2s", QUORRA_LOG_FORMAT="json")
    process = LoggedProcess([sys.executable, "-c", SECOND_SIGNAL_INSIDE_EVENT_SET], environ)
    try:
        process.wait_for("leadership.acquired")

        # When it gets SIGTERM (as under honcho after a Ctrl-C: SIGINT and SIGTERM together)
        exit_code = process.stop()

        # Then the second signal neither deadlocks nor interrupts the graceful stop
        assert exit_code == 0
        process.wait_for("leadership.released")
    finally:
        process.kill()


def test_scheduler_refuses_a_database_that_is_not_migrated(tmp_path):
    process = SchedulerProcess(f"sqlite:///{tmp_path / 'empty.db'}")

    assert process.popen.wait(30) == 1
    assert "run `quorra migrate`" in process.output()


@pytest.mark.redis
def test_scheduler_process_wakes_worker_over_redis_when_delayed_job_is_due(sqlite_url, redis_url):
    _assert_due_job_wakes_another_process(sqlite_url, redis_url)


@pytest.mark.postgres
def test_scheduler_process_wakes_worker_over_notify_when_delayed_job_is_due(postgres_url):
    _assert_due_job_wakes_another_process(postgres_url, None)


def _assert_due_job_wakes_another_process(database_url: str, redis_url: str | None) -> None:
    # Given a leading scheduler process and, in this process, a worker-side notifier whose
    # own re-checks are far apart (so only a publish can wake it)
    process = SchedulerProcess(database_url, **({"REDIS_URL": redis_url} if redis_url else {}))
    settings = Settings(database_url=database_url, redis_url=redis_url, poll_interval_seconds=600)
    notifier, store = make_notifier(settings), Store.from_url(database_url)
    try:
        process.wait_for("leadership.acquired")
        if redis_url:  # let the listener subscribe: that wakes every waiter once
            notifier.wait(["later"], 2)
        subscription = notifier.listen(["later"])

        # When a job delayed by one second becomes due
        job = store.enqueue(factories.spec(queue="later", delay_seconds=1))
        woken = subscription.wait(60)
        lag = store.database_now() - job.run_at

        # Then the waiting worker was woken by the scheduler's publish, after the run_at
        assert woken is True
        assert lag.total_seconds() >= 0
    finally:
        notifier.close()
        store.close()
        assert process.stop() == 0
