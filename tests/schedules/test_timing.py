"""When ticks fall and what a late tick does: pure Python, no database (quorra.schedules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quorra.errors import InvalidArgument, InvalidConfig
from quorra.schedules import (
    MissedTicks,
    ScheduleSpec,
    load_schedules_file,
    plan_tick,
    tick_after,
)
from tests.schedules.support import schedule_at

NEW_YORK = "America/New_York"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def spec(**fields) -> ScheduleSpec:
    return ScheduleSpec.parse({"name": "s", "job": {"type": "report"}} | fields)


def ticks(schedule: ScheduleSpec, after: datetime, count: int) -> list[datetime]:
    found = []
    for _ in range(count):
        after = tick_after(schedule, after)
        found.append(after)
    return found


# -- cron across daylight-saving changes ---------------------------------------------------------


def test_a_daily_cron_time_skipped_by_spring_forward_runs_when_the_clock_jumps_past_it():
    # Given 02:30 every day in New York, where 2026-03-08 02:00 EST jumps to 03:00 EDT
    daily = spec(cron="30 2 * * *", timezone=NEW_YORK)

    # When the ticks around that night are listed
    found = ticks(daily, utc(2026, 3, 7, 12), 3)

    # Then the skipped 02:30 runs once, at 03:00 EDT (07:00 UTC), and the next days at 02:30 EDT
    assert found == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]


def test_a_daily_cron_time_repeated_by_fall_back_runs_once():
    # Given 01:30 every day in New York, where 2026-11-01 01:00-02:00 happens twice
    daily = spec(cron="30 1 * * *", timezone=NEW_YORK)

    found = ticks(daily, utc(2026, 10, 31, 12), 3)

    # Then 01:30 runs once that night (the first, EDT), then at 01:30 EST
    assert found == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)]


def test_an_every_half_hour_cron_runs_in_both_repeated_hours_of_fall_back():
    every_half_hour = spec(cron="*/30 * * * *", timezone=NEW_YORK)

    found = ticks(every_half_hour, utc(2026, 11, 1, 4, 40), 5)  # 00:40 EDT

    # 01:00 and 01:30 EDT, then 01:00 and 01:30 EST, then 02:00 EST: real time advances 30 min each
    assert found == [utc(2026, 11, 1, 5, 0) + timedelta(minutes=30 * n) for n in range(5)]


def test_an_hourly_cron_has_no_tick_in_the_hour_spring_forward_removes():
    hourly = spec(cron="0 * * * *", timezone=NEW_YORK)

    found = ticks(hourly, utc(2026, 3, 8, 5, 30), 3)  # 00:30 EST

    # 01:00 EST, then 03:00 EDT (02:00 does not exist), then 04:00 EDT: one real hour apart
    assert found == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]


def test_an_interval_counts_real_seconds_whatever_the_timezone():
    every_hour = spec(interval_seconds=3600, timezone=NEW_YORK)

    assert ticks(every_hour, utc(2026, 3, 8, 5, 30), 2) == [utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30)]


def test_cron_nicknames_are_read_in_the_timezone():
    assert tick_after(spec(cron="@daily", timezone="Europe/Paris"), utc(2026, 7, 1, 12)) == utc(2026, 7, 1, 22)


# -- late and missed ticks ---------------------------------------------------------------------------


def test_a_tick_late_by_less_than_the_threshold_fires_for_itself():
    schedule = schedule_at(interval_seconds=60, next_run_at=utc(2026, 1, 1, 0, 0))

    plan = plan_tick(schedule, utc(2026, 1, 1, 0, 0, 5), misfire_threshold_seconds=10)

    assert (plan.fire_for, plan.next_run_at, plan.missed) == (utc(2026, 1, 1), utc(2026, 1, 1, 0, 1), 0)


def test_missed_ticks_are_skipped_by_default_and_the_schedule_goes_on_from_its_next_live_tick():
    # Given a minutely schedule whose schedulers were all down for an hour
    schedule = schedule_at(interval_seconds=60, next_run_at=utc(2026, 1, 1, 0, 0))

    plan = plan_tick(schedule, utc(2026, 1, 1, 1, 0, 30), misfire_threshold_seconds=10)

    # Then the 61 ticks from 00:00 to 01:00 (before 01:00:20) are missed, none runs, and 01:01 is next
    assert (plan.fire_for, plan.next_run_at, plan.missed) == (None, utc(2026, 1, 1, 1, 1), 61)


def test_missed_ticks_with_catch_up_run_once_for_the_latest_of_them():
    schedule = schedule_at(cron="*/15 * * * *", next_run_at=utc(2026, 1, 1, 0, 0), missed_ticks=MissedTicks.CATCH_UP)

    plan = plan_tick(schedule, utc(2026, 1, 1, 3, 20), misfire_threshold_seconds=60)

    # 00:00 .. 03:15 are 14 missed ticks: one job, for 03:15; then 03:30
    assert (plan.fire_for, plan.next_run_at, plan.missed) == (utc(2026, 1, 1, 3, 15), utc(2026, 1, 1, 3, 30), 14)


def test_a_missed_cron_tick_counts_the_days_it_missed_across_a_dst_change():
    schedule = schedule_at(cron="0 9 * * *", timezone=NEW_YORK, next_run_at=utc(2026, 3, 6, 14))

    plan = plan_tick(schedule, utc(2026, 3, 10, 12), misfire_threshold_seconds=60)

    # 09:00 on 6 and 7 March (EST), 8 and 9 March (EDT); next: 10 March 09:00 EDT = 13:00 UTC
    assert (plan.fire_for, plan.next_run_at, plan.missed) == (None, utc(2026, 3, 10, 13), 4)


# -- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "*/5 * * * *", "interval_seconds": 60}, ""),
        ({}, ""),
        ({"interval_seconds": 0}, "interval_seconds"),
        ({"interval_seconds": 60, "timezone": "Mars/Olympus"}, "timezone"),
        ({"interval_seconds": 60, "missed_ticks": "burst"}, "missed_ticks"),
        ({"cron": None, "interval_seconds": 60}, "cron"),
    ],
)
def test_an_invalid_schedule_is_refused_naming_the_field(fields, field):
    with pytest.raises(InvalidArgument) as refused:
        spec(**fields)
    assert field in {detail["field"] for detail in refused.value.details}


def test_a_schedules_file_is_read_and_its_problems_are_all_named(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(
        '[schedules.nightly]\ncron = "0 3 * * *"\ntimezone = "Europe/Paris"\n'
        'job = { type = "report", queue = "reports", payload = { kind = "daily" } }\n'
        '[schedules.often]\ninterval_seconds = 30\nmissed_ticks = "catch_up"\njob = { type = "poll" }\n'
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[schedules.a]\ncron = "nope"\njob = { type = "x" }\n[schedules.b]\ninterval_seconds = 5\n')

    nightly, often = load_schedules_file(str(good))
    with pytest.raises(InvalidConfig) as refused:
        load_schedules_file(str(bad))

    assert (nightly.name, nightly.job.queue, nightly.job.payload, often.missed_ticks) == (
        "nightly",
        "reports",
        {"kind": "daily"},
        MissedTicks.CATCH_UP,
    )
    assert "schedules.a.cron" in refused.value.message and "schedules.b.job" in refused.value.message
