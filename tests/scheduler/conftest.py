"""Schedulers on the real backends, each with its own real leader lock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quorra.leader import make_leader
from quorra.notify import PollingNotifier
from quorra.scheduler import Scheduler
from quorra.store import Store
from tests import factories
from tests.scheduler.processes import SchedulerProcess


class RecordingNotifier(PollingNotifier):
    """A real PollingNotifier that also remembers what it published, in order."""

    def __init__(self) -> None:
        super().__init__(interval=1.0)
        self.published: list[str] = []

    def publish(self, queue: str) -> None:
        self.published.append(queue)
        super().publish(queue)


@pytest.fixture
def make_scheduler(settings, store, database_url):
    """Build schedulers over the test database; each contends for the same real lock."""
    made: list[Scheduler] = []

    def make(**settings_overrides) -> Scheduler:
        scheduler = Scheduler(
            settings.model_copy(update=settings_overrides), store, RecordingNotifier(), make_leader(database_url)
        )
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.leader.close()
        scheduler.notifier.close()


@pytest.fixture
def scheduler(make_scheduler) -> Scheduler:
    return make_scheduler()


def later(store: Store, seconds: float) -> datetime:
    return store.database_now() + timedelta(seconds=seconds)


def finished_job(store: Store, finished_at: datetime, *, how: str = "ack"):
    """A job that succeeded (ack), was cancelled, or died (nack, no retries) at `finished_at`."""
    job = store.enqueue(factories.spec(queue="old", max_retries=0), now=finished_at)
    if how == "cancel":
        return store.cancel(job.id, now=finished_at)
    [leased] = store.lease_jobs(["old"], "worker-a", 1, 30, now=finished_at)
    assert leased.id == job.id
    if how == "nack":
        return store.nack(leased.id, leased.lease_id, "boom", now=finished_at)
    return store.ack(leased.id, leased.lease_id, now=finished_at)


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


@pytest.fixture
def start_scheduler(database_url):
    """Start `quorra scheduler` subprocesses on the test database; all are killed afterwards."""
    started: list[SchedulerProcess] = []

    def start(**env: str) -> SchedulerProcess:
        started.append(SchedulerProcess(database_url, **env))
        return started[-1]

    yield start
    for process in started:
        process.kill()
