"""The leader fires schedules through tick(now=...), on both backends: only the leader,
one job per tick, late ticks caught up one each, missed ones by policy; metrics counted."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY

from quorra.schedules import ScheduleSpec


def every(seconds: int, name: str, **fields) -> ScheduleSpec:
    return ScheduleSpec.parse(
        {"name": name, "interval_seconds": seconds, "job": {"type": "ping", "queue": f"q-{name}"}} | fields
    )


def sample(metric: str, name: str, tenant: str = "default") -> float:
    return REGISTRY.get_sample_value(metric, {"tenant": tenant, "schedule": name}) or 0.0


def test_the_leader_fires_a_due_tick_and_wakes_its_queue(store, scheduler):
    start = store.database_now()
    store.create_schedule(every(60, "leader-fires"), now=start)
    fired_before = sample("quorra_schedule_ticks_fired_total", "leader-fires")

    report = scheduler.tick(now=start + timedelta(seconds=61))

    [job] = report.fired
    assert (job.type, job.queue, job.scheduled_for) == ("ping", "q-leader-fires", start + timedelta(seconds=60))
    assert "q-leader-fires" in scheduler.notifier.published
    assert sample("quorra_schedule_ticks_fired_total", "leader-fires") == fired_before + 1
    assert sample("quorra_schedule_lag_seconds_count", "leader-fires") >= 1


def test_a_follower_fires_nothing(store, make_scheduler):
    leader, follower = make_scheduler(), make_scheduler()
    start = store.database_now()
    store.create_schedule(every(60, "follower"), now=start)
    assert leader.tick(now=start) is not None

    assert follower.tick(now=start + timedelta(seconds=61)) is None
    assert store.get_schedule("follower").last_job_id is None


def test_late_ticks_within_the_threshold_each_fire_once_in_one_tick(store, make_scheduler):
    # Given a 1 s schedule and a leader that was away for 5 s (under the 10 s threshold)
    scheduler = make_scheduler(schedule_misfire_threshold_seconds=10.0)
    start = store.database_now()
    store.create_schedule(every(1, "late"), now=start)

    report = scheduler.tick(now=start + timedelta(seconds=5.5))

    # Then the five late ticks each made one job, in order, and the next tick is the sixth
    assert [job.scheduled_for for job in report.fired] == [start + timedelta(seconds=n) for n in range(1, 6)]
    assert store.get_schedule("late").next_run_at == start + timedelta(seconds=6)


def test_missed_ticks_are_counted_and_run_once_never_in_a_burst(store, make_scheduler):
    scheduler = make_scheduler(schedule_misfire_threshold_seconds=10.0)
    start = store.database_now()
    store.create_schedule(every(1, "missed", missed_ticks="catch_up"), now=start)
    missed_before = sample("quorra_schedule_ticks_missed_total", "missed")

    report = scheduler.tick(now=start + timedelta(hours=1))

    # An hour of 1 s ticks: the 3,589 older than 10 s are missed and make one catch-up job, for
    # the latest of them; the 11 of the last 10 s (3,590 s to 3,600 s) are late, and fire one each
    assert [job.scheduled_for - start for job in report.fired] == [
        timedelta(seconds=n) for n in (3589, *range(3590, 3601))
    ]
    assert sample("quorra_schedule_ticks_missed_total", "missed") == missed_before + 3589


def test_two_tenants_schedules_of_one_name_fire_and_count_apart(store, scheduler):
    start = store.database_now()
    for tenant in ("default", "acme"):
        store.create_schedule(every(60, "twin"), tenant=tenant, now=start)
    before = {tenant: sample("quorra_schedule_ticks_fired_total", "twin", tenant) for tenant in ("default", "acme")}

    report = scheduler.tick(now=start + timedelta(seconds=61))

    assert sorted(job.tenant for job in report.fired) == ["acme", "default"]
    for tenant in ("default", "acme"):
        assert sample("quorra_schedule_ticks_fired_total", "twin", tenant) == before[tenant] + 1
