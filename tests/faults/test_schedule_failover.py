"""A schedule firing every second while the leading scheduler is killed with SIGKILL, twice,
on both backends: every tick from the first to the last made exactly one job (no duplicate,
no gap), whichever scheduler fired it, even if a leader died mid-tick. The misfire threshold
is raised so that a slow handover on a loaded machine makes late ticks, not missed ones
(the missed-tick policy is tested with a moved clock). The figures (lag, handover) are
reported with the others, never asserted."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from quorra.schedules import ScheduleSpec
from quorra.schema import jobs
from tests.faults.measure import seconds
from tests.scheduler.processes import SchedulerProcess
from tests.worker.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TICKS = 30
INTERVAL = "0.2s"  # the schedulers' tick; the schedule's is 1 s
KILLS = 2
TAKEOVER_TIMEOUT_SECONDS = 60  # generous: a busy machine may run the survivor late
# A handover is late, never missed: on a loaded machine it has taken 10 s, past the 10 s default.
MISFIRE_THRESHOLD = "120s"


def _leader(schedulers: list[SchedulerProcess], after: float) -> tuple[SchedulerProcess, float]:
    def acquired():
        found = [
            (line.received_at, s)
            for s in schedulers
            if s.popen.poll() is None
            for line in s.events("leadership.acquired")
            if line.received_at > after
        ]
        return min(found, key=lambda pair: pair[0]) if found else None

    at, leader = wait_until(acquired, timeout=TAKEOVER_TIMEOUT_SECONDS, what="a new leader")
    return leader, at


def _ticks(store, schedule_id: str) -> list:
    with store.engine.connect() as conn:
        rows = conn.execute(select(jobs.c.scheduled_for, jobs.c.created_at).where(jobs.c.schedule_id == schedule_id))
        return sorted(rows.all())


def test_a_schedule_fires_each_tick_once_across_two_leader_kills(figures, store, database_url):
    # Given a 1 s schedule and two schedulers, one leading
    start = store.database_now()
    schedule = store.create_schedule(
        ScheduleSpec.parse({"name": "every-second", "interval_seconds": 1, "job": {"type": "ping"}}), now=start
    )
    env = {"DATABASE_URL": database_url, "QUORRA_SCHEDULE_MISFIRE_THRESHOLD": MISFIRE_THRESHOLD}
    schedulers = [SchedulerProcess(database_url, INTERVAL, **env) for _ in range(2)]
    handovers = []
    try:
        leader, _ = _leader(schedulers, after=0.0)
        # When the leader is killed (SIGKILL) every TICKS / (KILLS + 1) seconds, and a follower started
        for _ in range(KILLS):
            time.sleep(TICKS / (KILLS + 1))
            killed_at = time.monotonic()
            leader.kill()
            schedulers.append(SchedulerProcess(database_url, INTERVAL, **env))
            leader, took_over_at = _leader(schedulers, after=killed_at)
            handovers.append(took_over_at - killed_at)
        last_tick = start + timedelta(seconds=TICKS)
        wait_until(lambda: _ticks(store, schedule.id)[-1:] and _ticks(store, schedule.id)[-1][0] >= last_tick, 60)
    finally:
        for scheduler in schedulers:
            scheduler.kill()

    # Then the ticks from the first to the last each made exactly one job
    fired = _ticks(store, schedule.id)
    times = [tick for tick, _ in fired]
    expected = [times[0] + timedelta(seconds=n) for n in range(int((times[-1] - times[0]).total_seconds()) + 1)]
    duplicates = sum(count - 1 for count in Counter(times).values())
    lags = [(created - tick).total_seconds() for tick, created in fired]
    fired_by = Counter(s.popen.pid for s in schedulers for _ in s.events("job.enqueued"))
    figures.update(
        backend=store.dialect,
        ticks=len(expected),
        jobs=len(fired),
        duplicates=duplicates,
        gaps=len(set(expected) - set(times)),
        kills=KILLS,
        schedulers=len(schedulers),
        fired_by=sorted(fired_by.values()),
        handover_max_s=seconds(handovers)["max"],
        lag_max_s=seconds(lags)["max"],
        lag_p50_s=seconds(lags)["p50"],
    )
    assert len(expected) >= TICKS and times[0] == start + timedelta(seconds=1)
    assert times == expected  # one job per tick: none twice, none missing
    # ticks were fired on both sides of a kill (a leader killed early under load may have fired none)
    assert len(fired_by) >= 2
