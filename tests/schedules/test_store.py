"""Schedules in the store, on SQLite and PostgreSQL: create, change, pause, delete, and fire
ticks exactly once, with time moved through `now=`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from quorra.errors import InvalidArgument, ScheduleExists, ScheduleNotFound
from quorra.jobs import JobStatus
from quorra.schedules import ScheduleSpec, plan_tick
from quorra.schema import jobs
from tests import factories

T0 = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
THRESHOLD = 10.0


def spec(name: str = "nightly", **fields) -> ScheduleSpec:
    """02:30 every day in New York, unless the fields give another timing."""
    job = {"type": "report", "queue": "reports", "payload": {"kind": "daily"}, "timeout_seconds": 60}
    timing = {} if "interval_seconds" in fields or "cron" in fields else {"cron": "30 2 * * *"}
    return ScheduleSpec.parse({"name": name, "timezone": "America/New_York", "job": job} | timing | fields)


def fire_due(store, now: datetime) -> list:
    """One pass of what the leader does: plan and carry out each due schedule's tick."""
    return [store.fire_tick(s, plan_tick(s, now, THRESHOLD), now=now) for s in store.due_schedules(now=now)]


def job_count(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(jobs)).scalar_one()


def test_a_new_schedule_starts_at_its_next_tick_after_now(store):
    created = store.create_schedule(spec(), now=T0)

    assert created.next_run_at == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 02:30 skipped: 03:00 EDT
    assert (created.last_run_at, created.last_job_id, created.is_paused) == (None, None, False)
    assert store.get_schedule("nightly") == created


def test_a_second_schedule_of_the_same_name_is_refused(store):
    store.create_schedule(spec(), now=T0)

    with pytest.raises(ScheduleExists):
        store.create_schedule(spec(interval_seconds=60), now=T0)


def test_a_due_tick_submits_its_job_and_moves_the_schedule_on(store):
    # Given a schedule whose first tick is 2026-03-08 07:00 UTC
    store.create_schedule(spec(), now=T0)
    tick = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)

    # When the leader looks two seconds after it
    [fired] = fire_due(store, tick + timedelta(seconds=2))

    # Then one job was submitted from the template, for that tick, and the next tick is a day later
    job = fired.job
    assert (job.type, job.queue, job.payload, job.timeout_seconds) == ("report", "reports", {"kind": "daily"}, 60)
    assert (job.status, job.scheduled_for) == (JobStatus.PENDING, tick)
    schedule = store.get_schedule("nightly")
    assert (schedule.last_run_at, schedule.last_job_id, schedule.last_job_status) == (tick, job.id, "pending")
    assert schedule.next_run_at == datetime(2026, 3, 9, 6, 30, tzinfo=UTC)
    assert job.schedule_id == schedule.id


def test_nothing_fires_before_the_tick(store):
    store.create_schedule(spec(), now=T0)

    assert fire_due(store, datetime(2026, 3, 8, 6, 59, tzinfo=UTC)) == []
    assert job_count(store) == 0


def test_a_tick_carried_out_by_another_scheduler_is_not_fired_again(store):
    # Given two leaders that both read the schedule as due (one was replaced mid-tick)
    store.create_schedule(spec(interval_seconds=60), now=T0)
    now = T0 + timedelta(seconds=61)
    [seen_by_old] = store.due_schedules(now=now)
    [seen_by_new] = store.due_schedules(now=now)

    # When both carry out the same tick
    first = store.fire_tick(seen_by_new, plan_tick(seen_by_new, now, THRESHOLD), now=now)
    second = store.fire_tick(seen_by_old, plan_tick(seen_by_old, now, THRESHOLD), now=now)

    # Then only the first made a job
    assert first.carried_out and first.job is not None
    assert (second.carried_out, second.job) == (False, None)
    assert job_count(store) == 1


def test_the_unique_tick_key_refuses_a_second_job_for_the_same_tick(store):
    # Given a tick fired, and the schedule moved back by hand to that same tick
    schedule = store.create_schedule(spec(interval_seconds=60), now=T0)
    now = T0 + timedelta(seconds=61)
    store.fire_tick(schedule, plan_tick(schedule, now, THRESHOLD), now=now)
    with store.engine.begin() as conn:
        from quorra.schema import schedules

        conn.execute(schedules.update().values(next_run_at=schedule.next_run_at))

    # When the same tick is fired again
    again = store.fire_tick(schedule, plan_tick(schedule, now, THRESHOLD), now=now)

    # Then the unique index on (schedule_id, scheduled_for) refuses it, and nothing changed
    assert not again.carried_out
    assert job_count(store) == 1
    assert store.get_schedule(schedule.name).next_run_at == schedule.next_run_at


def test_missed_ticks_skip_by_default_and_catch_up_runs_one_job(store):
    # Given two minutely schedules, and no scheduler for an hour
    store.create_schedule(spec("skipper", interval_seconds=60), now=T0)
    store.create_schedule(spec("catcher", interval_seconds=60, missed_ticks="catch_up"), now=T0)
    now = T0 + timedelta(hours=1, seconds=30)

    # When the leader comes back
    done = {tick.job.type if tick.job else None for tick in fire_due(store, now)}

    # Then the skipper ran nothing, the catcher one job; both go on from their next live tick
    assert done == {None, "report"} and job_count(store) == 1
    for name in ("skipper", "catcher"):
        assert store.get_schedule(name).next_run_at == T0 + timedelta(hours=1, minutes=1)


def test_a_paused_schedule_fires_nothing_and_resumes_from_its_next_tick_after_now(store):
    store.create_schedule(spec(interval_seconds=60), now=T0)
    store.set_schedule_paused("nightly", True, now=T0)

    later = T0 + timedelta(hours=2)
    assert fire_due(store, later) == []
    resumed = store.set_schedule_paused("nightly", False, now=later)

    assert (resumed.is_paused, resumed.next_run_at) == (False, later + timedelta(seconds=60))


def test_a_change_of_timing_restarts_from_now_and_other_changes_keep_the_next_tick(store):
    created = store.create_schedule(spec(), now=T0)
    later = T0 + timedelta(minutes=5)

    kept = store.update_schedule("nightly", {"job": {"priority": 7}}, now=later)
    retimed = store.update_schedule("nightly", {"interval_seconds": 600}, now=later)

    assert (kept.next_run_at, kept.priority, kept.queue) == (created.next_run_at, 7, "reports")
    assert (retimed.cron, retimed.interval_seconds, retimed.next_run_at) == (None, 600, later + timedelta(minutes=10))


def test_a_change_that_makes_the_schedule_invalid_is_refused(store):
    store.create_schedule(spec(), now=T0)

    with pytest.raises(InvalidArgument):
        store.update_schedule("nightly", {"job": {"priority": 5000}}, now=T0)
    with pytest.raises(InvalidArgument):
        store.update_schedule("nightly", {"name": "renamed"}, now=T0)


def test_deleting_a_schedule_keeps_its_jobs(store):
    schedule = store.create_schedule(spec(interval_seconds=60), now=T0)
    fire_due(store, T0 + timedelta(seconds=61))

    store.delete_schedule("nightly")

    with pytest.raises(ScheduleNotFound):
        store.get_schedule("nightly")
    with pytest.raises(ScheduleNotFound):
        store.delete_schedule("nightly")
    assert job_count(store) == 1 and store.list_schedules() == []
    assert schedule.id


def test_the_last_job_status_follows_the_job(store):
    store.create_schedule(spec(interval_seconds=60, job={"type": "report", "queue": "sched"}), now=T0)
    [fired] = fire_due(store, T0 + timedelta(seconds=61))
    [leased] = store.lease_jobs(["sched"], "worker-a", 1, 30)
    store.ack(leased.id, leased.lease_id)

    [listed] = store.list_schedules()

    assert (listed.last_job_id, listed.last_job_status) == (fired.job.id, "succeeded")


def test_sync_creates_new_schedules_and_updates_those_of_the_same_name(store):
    store.create_schedule(spec(), now=T0)
    factories.make_job(store)  # unrelated jobs are untouched

    synced = store.sync_schedules([spec(job={"type": "report2"}), spec("hourly", cron="@hourly")], now=T0)

    assert [(s.name, s.job_type) for s in synced] == [("nightly", "report2"), ("hourly", "report")]
    assert [s.name for s in store.list_schedules()] == ["hourly", "nightly"]


# -- tenants ------------------------------------------------------------------------------------


def test_each_tenant_has_its_own_schedule_names(store):
    mine = store.create_schedule(spec(), tenant="acme", now=T0)
    theirs = store.create_schedule(spec(interval_seconds=60), tenant="globex", now=T0)

    assert (mine.tenant, theirs.tenant) == ("acme", "globex")
    assert store.get_schedule("nightly", tenant="acme").cron == "30 2 * * *"
    assert store.get_schedule("nightly", tenant="globex").interval_seconds == 60
    assert [s.tenant for s in store.list_schedules(tenant="acme")] == ["acme"]
    assert store.list_schedules() == []  # the default tenant has none
    with pytest.raises(ScheduleExists):
        store.create_schedule(spec(), tenant="acme", now=T0)


def test_another_tenants_schedule_is_not_found_and_left_unchanged(store):
    created = store.create_schedule(spec(), tenant="acme", now=T0)

    for verb in (
        lambda: store.get_schedule("nightly", tenant="globex"),
        lambda: store.update_schedule("nightly", {"is_paused": True}, tenant="globex", now=T0),
        lambda: store.set_schedule_paused("nightly", True, tenant="globex", now=T0),
        lambda: store.delete_schedule("nightly", tenant="globex"),
        lambda: store.get_schedule("nightly"),
    ):
        with pytest.raises(ScheduleNotFound):
            verb()
    assert store.get_schedule("nightly", tenant="acme") == created


def test_a_tick_job_is_its_schedules_tenants(store):
    store.create_schedule(spec(), tenant="acme", now=T0)
    store.create_schedule(spec(), now=T0)
    tick = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)

    fired = fire_due(store, tick + timedelta(seconds=2))

    assert sorted(f.job.tenant for f in fired) == ["acme", "default"]
    with store.engine.connect() as conn:
        stored = dict(conn.execute(select(jobs.c.id, jobs.c.tenant)).all())
    assert {str(key).replace("-", ""): value for key, value in stored.items()} == {
        f.job.id.replace("-", ""): f.job.tenant for f in fired
    }
    assert store.get_schedule("nightly", tenant="acme").last_job_id in {f.job.id for f in fired}


def test_syncing_a_file_touches_the_default_tenants_schedules_only(store):
    store.create_schedule(spec(), tenant="acme", now=T0)

    store.sync_schedules([spec(interval_seconds=60)], now=T0)

    assert store.get_schedule("nightly", tenant="acme").cron == "30 2 * * *"
    assert store.get_schedule("nightly").interval_seconds == 60
