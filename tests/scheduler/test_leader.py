"""Leader election for real: two leaders on one database, each with its own connection
(PostgreSQL advisory lock) or file descriptor (SQLite file lock)."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import text

from quorra.db import make_engine
from quorra.errors import InvalidConfig
from quorra.jobs import JobStatus
from quorra.leader import (
    APPLICATION_NAME,
    LOCK_KEY,
    FileLeader,
    PostgresLeader,
    make_leader,
    owner_id,
)
from quorra.store import LEASE_EXPIRED
from tests import factories
from tests.scheduler.conftest import days_ago, finished_job, later


@pytest.fixture
def pg_leader(postgres_url):
    leader = make_leader(postgres_url)
    yield leader
    leader.close()


@pytest.fixture
def leaders(database_url):
    made = [make_leader(database_url), make_leader(database_url)]
    yield made
    for leader in made:
        leader.close()


def test_leader_kind_follows_database(database_url):
    leader = make_leader(database_url)
    try:
        expected = PostgresLeader if database_url.startswith("postgresql") else FileLeader
        assert isinstance(leader, expected)
    finally:
        leader.close()


def test_only_one_of_two_leaders_holds(leaders):
    first, second = leaders

    assert first.hold() is True
    assert second.hold() is False
    assert first.is_held() is True
    assert second.is_held() is False


def test_holding_again_keeps_a_single_lock_that_one_release_frees(leaders):
    first, second = leaders
    for _ in range(3):
        assert first.hold() is True

    first.release()

    assert first.is_held() is False
    assert second.hold() is True
    assert first.hold() is False


def test_follower_takes_over_after_release(leaders):
    first, second = leaders
    first.hold()
    assert second.hold() is False

    first.release()

    assert second.hold() is True


def test_follower_takes_over_when_leader_session_dies(database_url, leaders):
    # Given a leader and a follower
    first, second = leaders
    first.hold()
    second.hold()

    # When the leader's lock vanishes under it (its session is killed / its lock file replaced)
    _kill_leadership(database_url)

    # Then the leader knows at its next check, and the follower takes over at its next try
    assert first.is_held() is False
    assert second.hold() is True
    assert first.hold() is False


def test_scheduler_whose_lock_was_taken_over_stops_acting(store, database_url, make_scheduler):
    # Given a leading scheduler, a follower and an expired lease
    leader, follower = make_scheduler(), make_scheduler()
    assert leader.tick() is not None
    assert follower.tick() is None
    job = factories.leased_job(store, ttl_seconds=30)

    # When the leader's lock is lost and the follower takes over
    _kill_leadership(database_url)
    now = later(store, 60)
    report = follower.tick(now=now)

    # Then only the new leader reaps; the old one does nothing
    assert [j.id for j in report.reaped] == [job.id]
    assert store.get_job(job.id).last_error == LEASE_EXPIRED
    assert leader.tick(now=now) is None


def test_leadership_lost_during_a_tick_stops_the_remaining_duties(store, database_url, make_scheduler):
    # Given a leader that loses its lock to the follower while it reaps
    leader, follower = make_scheduler(), make_scheduler()
    leader.tick()
    factories.make_job(store, queue="due")
    old = finished_job(store, days_ago(8))
    reap = leader.reap

    def reap_then_lose(now):
        reaped = reap(now)
        _kill_leadership(database_url)
        assert follower.leader.hold()
        return reaped

    leader.reap = reap_then_lose

    # When it ticks
    report = leader.tick()

    # Then it neither wakes nor prunes after losing the leadership
    assert report is None
    assert leader.notifier.published == []
    assert store.get_job(old.id).status is JobStatus.SUCCEEDED


def test_file_lock_names_its_holder(sqlite_url):
    leader = make_leader(sqlite_url)
    try:
        assert leader.hold()
        assert leader.path.read_text().strip() == owner_id()
        assert leader.path.name == "quorra.db-scheduler.lock"
    finally:
        leader.close()


def test_in_memory_sqlite_has_no_lock_to_share():
    with pytest.raises(InvalidConfig):
        make_leader("sqlite://")


@pytest.mark.postgres
def test_advisory_lock_is_held_on_its_own_session(postgres_url, pg_leader):
    assert pg_leader.hold()
    holders = _advisory_holders(postgres_url)
    assert [name for _, name in holders] == [f"quorra-scheduler-leader {owner_id()}"]

    pg_leader.release()

    assert _advisory_holders(postgres_url) == []


@pytest.mark.postgres
def test_leader_session_lets_the_server_notice_a_vanished_host_quickly(pg_leader):
    pg_leader.hold()
    conn = pg_leader._connection()

    idle, probes = (
        conn.exec_driver_sql(f"SHOW {name}").scalar() for name in ("tcp_keepalives_idle", "tcp_keepalives_count")
    )

    assert (idle, probes) == ("5", "3")


@pytest.mark.postgres
def test_released_leader_leaves_no_session_holding_anything(postgres_url, pg_leader):
    # A pooled session handed back instead of closed could keep the lock alive.
    pg_leader.hold()
    assert _leader_sessions(postgres_url) == 1

    pg_leader.release()

    assert _leader_sessions(postgres_url, until=0) == 0


@pytest.mark.postgres
def test_leadership_check_looks_at_the_lock_not_just_the_connection(postgres_url, pg_leader):
    # Given a leader whose session is alive but no longer holds the lock
    pg_leader.hold()
    pg_leader._connection().execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})

    # Then the check says so, and the session is closed
    assert pg_leader.is_held() is False
    assert _leader_sessions(postgres_url, until=0) == 0


def _kill_leadership(database_url: str) -> None:
    """Take the leader's lock away the hard way: end its PostgreSQL session, or delete the
    lock file (a newcomer then locks a fresh file)."""
    if database_url.startswith("postgresql"):
        engine = make_engine(database_url)
        with engine.begin() as conn:
            for pid, _ in _advisory_holders(database_url):
                conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        engine.dispose()
    else:
        os.unlink(database_url.removeprefix("sqlite:///") + "-scheduler.lock")


def _advisory_holders(database_url: str) -> list[tuple[int, str]]:
    engine = make_engine(database_url)
    query = text(
        "SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objid = :key"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with engine.connect() as conn:
        holders = [tuple(row) for row in conn.execute(query, {"key": LOCK_KEY})]
    engine.dispose()
    return holders


def _leader_sessions(database_url: str, *, until: int | None = None, timeout: float = 5.0) -> int:
    """Leader sessions on the server; with `until`, wait (bounded) for that count, since a
    backend leaves pg_stat_activity a moment after its client closed the connection."""
    engine = make_engine(database_url)
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE :name"
    )
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while True:
            count = conn.execute(query, {"name": APPLICATION_NAME + " %"}).scalar_one()
            conn.rollback()  # a fresh snapshot of pg_stat_activity next time
            if until is None or count == until or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    engine.dispose()
    return count
