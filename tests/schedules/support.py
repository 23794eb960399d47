"""Schedules in a given state, for the pure timing tests."""

from __future__ import annotations

from datetime import UTC, datetime

from quorra.schedules import MissedTicks, Schedule

CREATED = datetime(2025, 1, 1, tzinfo=UTC)


def schedule_at(
    *,
    next_run_at: datetime,
    cron: str | None = None,
    interval_seconds: int | None = None,
    timezone: str = "UTC",
    missed_ticks: MissedTicks = MissedTicks.SKIP,
) -> Schedule:
    return Schedule(
        id="00000000-0000-0000-0000-000000000001",
        name="s",
        cron=cron,
        interval_seconds=interval_seconds,
        timezone=timezone,
        job_type="report",
        queue="default",
        payload={},
        priority=0,
        max_retries=3,
        timeout_seconds=None,
        missed_ticks=missed_ticks,
        is_paused=False,
        next_run_at=next_run_at,
        created_at=CREATED,
        updated_at=CREATED,
    )
