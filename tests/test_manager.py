"""JobManager: each verb runs the store verb, counts its metrics and publishes its
wake-ups once; batched settles give one outcome per settlement. Real store, real
in-process notifier, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from quorra.errors import StaleLease
from quorra.jobs import JobStatus
from quorra.manager import JobManager
from quorra.notify import PollingNotifier
from quorra.store import Settlement, SettleOutcome
from tests.factories import spec


class RecordingNotifier(PollingNotifier):
    def __init__(self):
        super().__init__(0.5)
        self.published: list[str] = []

    def publish(self, queue: str) -> None:
        self.published.append(queue)
        super().publish(queue)


@pytest.fixture
def manager(store):
    notifier = RecordingNotifier()
    yield JobManager(store, notifier)
    notifier.close()


def _count(name: str, queue: str) -> float:
    return (
        REGISTRY.get_sample_value(f"{name}_total", {"tenant": "default", "queue": queue, "type": "email_send"}) or 0.0
    )


def test_enqueue_many_counts_each_job_and_wakes_each_queue_once(manager):
    queue = f"m-{uuid.uuid4().hex[:8]}"
    created = manager.enqueue_many([spec(queue=queue) for _ in range(3)] + [spec(queue=queue + "x")])
    assert len(created) == 4
    assert _count("quorra_jobs_created", queue) == 3
    assert sorted(manager.notifier.published) == [queue, queue + "x"]


def test_enqueue_counts_and_wakes_only_for_created_jobs(manager):
    # Given a unique job, submitted under an idempotency key
    queue = f"m-{uuid.uuid4().hex[:8]}"
    first = manager.enqueue(spec(queue=queue, unique={}, idempotency_key="k"), scope="s")
    manager.notifier.published.clear()
    replays = REGISTRY.get_sample_value("quorra_submissions_deduplicated_total", {"outcome": "replayed"}) or 0.0
    # When it is submitted again under the key, and again under no key
    again = manager.enqueue(spec(queue=queue, unique={}, idempotency_key="k"), scope="s")
    duplicate = manager.enqueue(spec(queue=queue, unique={}))
    # Then both answers are the first job: counted as deduplicated, not created, and no wake-up
    assert (again.outcome.value, duplicate.outcome.value) == ("replayed", "duplicate")
    assert again.job.id == duplicate.job.id == first.job.id
    assert _count("quorra_jobs_created", queue) == 1
    assert REGISTRY.get_sample_value("quorra_submissions_deduplicated_total", {"outcome": "replayed"}) == replays + 1
    assert manager.notifier.published == []


def test_settle_many_counts_only_what_it_settled(manager):
    # Given two leased jobs
    queue = f"m-{uuid.uuid4().hex[:8]}"
    manager.enqueue_many([spec(queue=queue), spec(queue=queue)])
    first, second = manager.lease([queue], "worker-a", 2, 30)
    # When a batch acks the first, nacks the second, and repeats the first under a wrong lease
    results = manager.settle_many(
        [
            Settlement(first.id, first.lease_id, True),
            Settlement(second.id, second.lease_id, False, error="boom"),
            Settlement(str(uuid.uuid4()), str(uuid.uuid4()), True),
        ],
        worker_id="worker-a",
    )
    # Then each outcome is its own, and the metrics count the two settled jobs once each
    assert [r.outcome for r in results] == [SettleOutcome.SETTLED, SettleOutcome.SETTLED, SettleOutcome.NOT_FOUND]
    assert _count("quorra_jobs_processed", queue) == 1
    assert _count("quorra_jobs_failed", queue) == 1
    assert _count("quorra_jobs_leased", queue) == 2


def test_ack_by_another_worker_raises_stale_lease(manager):
    queue = f"m-{uuid.uuid4().hex[:8]}"
    manager.enqueue(spec(queue=queue))
    [job] = manager.lease([queue], "worker-a", 1, 30)
    with pytest.raises(StaleLease):
        manager.ack(job.id, job.lease_id, worker_id="worker-b")
    assert manager.ack(job.id, job.lease_id, worker_id="worker-a").status is JobStatus.SUCCEEDED


def test_release_many_hands_back_and_wakes_the_queue(manager):
    queue = f"m-{uuid.uuid4().hex[:8]}"
    manager.enqueue(spec(queue=queue))
    manager.notifier.published.clear()
    leased = manager.lease([queue], "worker-a", 1, 30)
    [released] = manager.release_many(leased)
    assert released.status is JobStatus.PENDING and released.attempts == 0
    assert manager.notifier.published == [queue]


def test_retry_wakes_the_queue(manager):
    queue = f"m-{uuid.uuid4().hex[:8]}"
    job = manager.enqueue(spec(queue=queue)).job
    manager.cancel(job.id)
    manager.notifier.published.clear()
    assert manager.retry(job.id).status is JobStatus.PENDING
    assert manager.notifier.published == [queue]


def test_retry_dead_counts_and_wakes_the_queue_once(manager):
    queue = f"m-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        [leased] = manager.lease([manager.enqueue(spec(queue=queue, max_retries=0)).job.queue], "worker-a", 1, 30)
        manager.nack(leased.id, leased.lease_id, "boom", worker_id="worker-a")
    manager.notifier.published.clear()
    assert manager.retry_dead(queue) == 2
    assert manager.notifier.published == [queue]
