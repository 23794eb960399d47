"""The scheduler's duties through tick(now=...), on SQLite and PostgreSQL: time is moved,
never slept through (except in the one test of the real loop)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from quorra.audit import Action, Actor, AuditEntry
from quorra.errors import JobNotFound, StaleLease
from quorra.jobs import JobStatus
from quorra.notify import PollingNotifier
from quorra.store import LEASE_EXPIRED
from tests import factories
from tests.scheduler.conftest import days_ago, finished_job, later


def _expired_count(queue: str) -> float:
    return REGISTRY.get_sample_value("quorra_leases_expired_total", {"tenant": "default", "queue": queue}) or 0.0


# -- reaping ------------------------------------------------------------------------------------


def test_tick_reaps_expired_lease_as_failed_attempt(store, scheduler):
    # Given a lease that expires in 30 s and one that lasts an hour
    expiring = factories.leased_job(store, ttl_seconds=30)
    lasting = factories.leased_job(store, ttl_seconds=3600)
    now = later(store, 60)

    # When the scheduler ticks a minute later
    report = scheduler.tick(now=now)

    # Then the expired one is a failed attempt, retried after the backoff; the other is untouched
    assert [job.id for job in report.reaped] == [expiring.id]
    reaped = store.get_job(expiring.id)
    assert (reaped.status, reaped.last_error, reaped.attempts) == (JobStatus.FAILED, LEASE_EXPIRED, 1)
    assert reaped.run_at == now + timedelta(seconds=2)
    assert reaped.lease_expires_at is None
    assert store.get_job(lasting.id).status is JobStatus.LEASED


def test_expired_lease_of_job_out_of_retries_makes_it_dead(store, scheduler):
    job = factories.leased_job(store, ttl_seconds=30, max_retries=0)

    scheduler.tick(now=later(store, 60))

    dead = store.get_job(job.id)
    assert (dead.status, dead.last_error) == (JobStatus.DEAD, LEASE_EXPIRED)
    assert dead.finished_at is not None


def test_processing_job_whose_heartbeats_stopped_is_reaped(store, scheduler):
    job = factories.leased_job(store, ttl_seconds=30)
    store.extend_lease(job.id, job.lease_id, 30)

    report = scheduler.tick(now=later(store, 60))

    assert [j.id for j in report.reaped] == [job.id]
    assert store.get_job(job.id).status is JobStatus.FAILED


def test_reaping_counts_expired_leases_in_metrics(store, scheduler):
    job = factories.leased_job(store, ttl_seconds=30)
    before = _expired_count(job.queue)

    scheduler.tick(now=later(store, 60))

    assert _expired_count(job.queue) == before + 1


def test_reaping_works_through_a_backlog_in_bounded_batches(store, scheduler):
    # Given five expired leases, batches of two and at most two batches per tick
    expired = {factories.leased_job(store, ttl_seconds=30).id for _ in range(5)}
    scheduler.reap_batch_size, scheduler.max_batches = 2, 2
    now = later(store, 60)

    # When it ticks twice
    first, second = scheduler.tick(now=now), scheduler.tick(now=now)

    # Then the first tick reaped two batches and the second the rest
    assert len(first.reaped) == 4
    assert {job.id for job in first.reaped + second.reaped} == expired


def test_reaping_a_lease_refuses_the_late_ack_of_its_worker(store, scheduler):
    job = factories.leased_job(store, ttl_seconds=30)
    scheduler.tick(now=later(store, 60))

    with pytest.raises(StaleLease):
        store.ack(job.id, job.lease_id)


# -- wake-ups -----------------------------------------------------------------------------------


def test_delayed_job_wakes_its_queue_once_when_due(store, scheduler):
    # Given a job delayed by a minute, and a first tick before it is due
    job = factories.make_job(store, queue="reminders", delay_seconds=60)
    start = store.database_now()
    assert scheduler.tick(now=start).woken == ()

    # When the scheduler ticks after its run_at, and again later
    due = scheduler.tick(now=start + timedelta(seconds=61))
    after = scheduler.tick(now=start + timedelta(seconds=70))

    # Then the queue was woken once, on the tick when the job became due
    assert due.woken == ("reminders",)
    assert after.woken == ()
    assert scheduler.notifier.published == ["reminders"]
    assert store.get_job(job.id).status is JobStatus.PENDING


def test_retrying_job_wakes_its_queue_when_its_backoff_ends(store, scheduler):
    # Given a nacked job, retried 2 s later
    leased = factories.leased_job(store, queue="webhooks")
    failed = store.nack(leased.id, leased.lease_id, "timeout")
    assert scheduler.tick(now=failed.run_at - timedelta(seconds=1)).woken == ()

    # When the scheduler ticks after the retry's run_at
    report = scheduler.tick(now=failed.run_at + timedelta(seconds=0.5))

    # Then its queue is woken
    assert report.woken == ("webhooks",)


def test_reaped_job_wakes_its_queue_when_its_retry_is_due(store, scheduler):
    job = factories.leased_job(store, ttl_seconds=30, queue="emails")
    reaped_at = later(store, 60)
    assert scheduler.tick(now=reaped_at).woken == ()

    report = scheduler.tick(now=reaped_at + timedelta(seconds=2.5))

    assert report.woken == ("emails",)
    assert store.get_job(job.id).status is JobStatus.FAILED


def test_job_due_before_start_is_woken_by_first_tick_within_lookback(store, scheduler):
    factories.make_job(store, queue="waiting")

    report = scheduler.tick(now=later(store, 10))

    assert report.woken == ("waiting",)


def test_running_scheduler_wakes_waiting_worker_soon_after_run_at(store, settings, scheduler):
    # Given a scheduler loop ticking every 0.2 s and a worker waiting on a quiet notifier
    scheduler.settings = settings.model_copy(update={"scheduler_interval_seconds": 0.2})
    scheduler.notifier = notifier = PollingNotifier(interval=30)
    job = factories.make_job(store, queue="soon", delay_seconds=1)
    stop = threading.Event()
    loop = threading.Thread(target=scheduler.run, args=(stop,))
    loop.start()
    try:
        # When the job's run_at passes
        woken = notifier.wait(["soon"], timeout=10)
        lag = store.database_now() - job.run_at
    finally:
        stop.set()
        loop.join(10)
        notifier.close()

    # Then the waiter was woken by a publish (not the timeout), after the run_at
    assert woken is True
    assert lag >= timedelta(0)
    print(f"woken {lag.total_seconds():.3f} s after run_at (interval 0.2 s)")


# -- pruning ------------------------------------------------------------------------------------


def test_prune_deletes_only_succeeded_and_cancelled_jobs_past_retention(store, scheduler):
    # Given jobs finished 8 days ago (succeeded, cancelled, dead) and one succeeded yesterday
    old_done = finished_job(store, days_ago(8))
    old_cancelled = finished_job(store, days_ago(8), how="cancel")
    old_dead = finished_job(store, days_ago(8), how="nack")
    recent = finished_job(store, days_ago(1))

    # When the scheduler ticks with the default retention of 7 days
    report = scheduler.tick()

    # Then the old succeeded and cancelled jobs are gone; the dead and the recent stay
    assert report.pruned == 2
    for gone in (old_done, old_cancelled):
        with pytest.raises(JobNotFound):
            store.get_job(gone.id)
    assert store.get_job(old_dead.id).status is JobStatus.DEAD
    assert store.get_job(recent.id).status is JobStatus.SUCCEEDED


def test_prune_honours_configured_retention(store, make_scheduler):
    scheduler = make_scheduler(retention_seconds=3600)
    two_hours_ago = finished_job(store, days_ago(2 / 24))
    half_an_hour_ago = finished_job(store, days_ago(0.5 / 24))

    assert scheduler.tick().pruned == 1

    with pytest.raises(JobNotFound):
        store.get_job(two_hours_ago.id)
    assert store.get_job(half_an_hour_ago.id).status is JobStatus.SUCCEEDED


def test_prune_deletes_in_small_batches_bounded_per_tick(store, make_scheduler, caplog):
    # Given five old jobs, batches of two and at most two batches per tick
    for _ in range(5):
        finished_job(store, days_ago(8))
    scheduler = make_scheduler(prune_batch_size=2)
    scheduler.max_batches = 2
    caplog.set_level(logging.INFO, logger="quorra.store")

    # When it ticks twice
    first, second = scheduler.tick(), scheduler.tick()

    # Then each DELETE took at most two rows, and the second tick finished the work
    batches = [r.count for r in caplog.records if getattr(r, "event", None) == "jobs.pruned"]
    assert batches == [2, 2, 1]
    assert (first.pruned, second.pruned) == (4, 1)


def test_prune_deletes_expired_idempotency_keys_then_the_jobs_they_kept(store, make_scheduler):
    # Given a job submitted two days ago under an idempotency key kept three days, and done at once
    scheduler = make_scheduler(retention_seconds=3600)
    two_days_ago = days_ago(2)
    [kept] = store.submit_many(
        [factories.spec(queue="old", idempotency_key="k")], scope="s", key_ttl_seconds=3 * 86400, now=two_days_ago
    )
    [leased] = store.lease_jobs(["old"], "worker-a", 1, 30, now=two_days_ago)
    store.ack(leased.id, leased.lease_id, now=two_days_ago)
    # When the scheduler ticks now: the key lives, so the job stays past its retention
    assert scheduler.tick().pruned == 0
    assert store.get_job(kept.job.id).status is JobStatus.SUCCEEDED
    # And when it ticks two days later, the key has expired: both go in the same tick
    assert scheduler.tick(now=later(store, 2 * 86400)).pruned == 1
    with pytest.raises(JobNotFound):
        store.get_job(kept.job.id)
    [again] = store.submit_many([factories.spec(queue="old", idempotency_key="k")], scope="s")
    assert again.created


def test_prune_counts_pruned_jobs_in_metrics(store, scheduler):
    finished_job(store, days_ago(8))
    before = REGISTRY.get_sample_value("quorra_jobs_pruned_total") or 0.0

    scheduler.tick()

    assert REGISTRY.get_sample_value("quorra_jobs_pruned_total") == before + 1


# -- only the leader acts ------------------------------------------------------------------------


def test_follower_tick_does_nothing(store, make_scheduler):
    # Given a leader, a follower, an expired lease, a due job and an old finished job
    leader, follower = make_scheduler(), make_scheduler()
    assert leader.tick() is not None
    expired = factories.leased_job(store, ttl_seconds=30)
    factories.make_job(store, queue="due")
    old = finished_job(store, days_ago(8))

    # When the follower ticks
    report = follower.tick(now=later(store, 60))

    # Then it reaped, woke and pruned nothing
    assert report is None
    assert store.get_job(expired.id).status is JobStatus.LEASED
    assert follower.notifier.published == []
    assert store.get_job(old.id).status is JobStatus.SUCCEEDED


def test_scheduler_acts_again_only_after_regaining_leadership(store, make_scheduler):
    first, second = make_scheduler(), make_scheduler()
    first.tick()
    job = factories.leased_job(store, ttl_seconds=30)

    first.resign()
    assert second.tick(now=later(store, 60)).reaped[0].id == job.id
    assert first.tick(now=later(store, 60)) is None


def test_tick_with_no_work_reports_nothing_done(scheduler):
    report = scheduler.tick()

    assert (report.reaped, report.woken, report.pruned) == ((), (), 0)


def test_loop_survives_a_failing_tick(store, settings, scheduler, caplog):
    # Given a scheduler whose first tick fails
    calls = []

    def flaky_prune(now):
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return 0

    scheduler.prune = flaky_prune
    scheduler.settings = settings.model_copy(update={"scheduler_interval_seconds": 0.05})
    stop = threading.Event()
    loop = threading.Thread(target=scheduler.run, args=(stop,))

    # When the loop runs for a few ticks
    loop.start()
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    loop.join(10)

    # Then the failure was logged and the loop kept ticking
    assert len(calls) >= 3
    assert any(getattr(r, "event", None) == "scheduler.failed" for r in caplog.records)


def test_prune_deletes_audit_entries_past_their_retention_only(store, make_scheduler):
    # Given audit entries written 40 days and 1 day ago, kept 30 days
    scheduler = make_scheduler(audit_retention_seconds=30 * 86400)
    for age in (40, 1):
        entry = AuditEntry(Actor("key:x"), Action.JOBS_RETRY_DEAD, f"{age} days")
        store.retry_dead("q", audit=entry, now=days_ago(age))
    # When the scheduler ticks
    scheduler.tick()
    # Then only the recent one is left
    assert [r.target for r in store.list_audit().records] == ["1 days"]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_scheduler_warns_at_start_when_autovacuum_cannot_reach_the_jobs_table(store, scheduler, caplog):
    # Given a jobs table whose own autovacuum is off
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE jobs SET (autovacuum_enabled = off)"))
    try:
        # When the scheduler starts (and stops at once)
        stop = threading.Event()
        stop.set()
        scheduler.run(stop)
    finally:
        with store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE jobs RESET (autovacuum_enabled)"))
    # Then it warned once, naming what keeps autovacuum away
    [warning] = [r for r in caplog.records if getattr(r, "event", None) == "db.autovacuum_off"]
    assert warning.levelno == logging.WARNING
    assert "the jobs table's autovacuum_enabled is off" in warning.reasons
