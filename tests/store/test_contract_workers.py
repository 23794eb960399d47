"""The workers table: upserts from sightings, reads of the recent ones with the jobs each
holds, the queues served, and pruning; on both backends."""

from __future__ import annotations

from quorra.store import WorkerSighting
from tests.factories import leased_job
from tests.store.support import later


def test_a_sighting_records_a_worker_and_a_heartbeat_keeps_what_it_told(store):
    # Given a worker seen on a lease, with what it told of itself
    store.record_workers([WorkerSighting("w1", host="box", pid=42, queues=("a", "b"), handlers=("send",))])
    first = store.recent_workers(later(store, -60))[0]
    # When it is seen again on a heartbeat, which tells nothing but its id
    store.record_workers([WorkerSighting("w1")], now=later(store, 30))
    # Then it keeps its host, pid, queues and handlers, with a later last_seen_at
    [worker] = store.recent_workers(later(store, -60))
    assert (worker.id, worker.host, worker.pid, worker.queues, worker.handlers) == (
        "w1",
        "box",
        42,
        ["a", "b"],
        ["send"],
    )
    assert worker.first_seen_at == first.first_seen_at and worker.last_seen_at > first.last_seen_at


def test_a_worker_that_told_nothing_yet_has_no_queues_and_unknown_handlers(store):
    store.record_workers([WorkerSighting("quiet")])
    [worker] = store.recent_workers(later(store, -60))
    assert (worker.host, worker.pid, worker.queues, worker.handlers) == (None, None, [], None)


def test_recent_workers_count_the_jobs_each_holds_and_leave_out_old_ones(store):
    # Given two workers, one of which holds two jobs, and one seen long ago
    store.record_workers([WorkerSighting("busy", queues=("q",)), WorkerSighting("idle", queues=("q",))])
    store.record_workers([WorkerSighting("gone", queues=("q",))], now=later(store, -3600))
    leased_job(store, worker_id="busy")
    leased_job(store, worker_id="busy")
    # When the workers of the last minute are read
    workers = {worker.id: worker for worker in store.recent_workers(later(store, -60))}
    # Then the two recent ones come, with their jobs in flight
    assert {name: worker.jobs_in_flight for name, worker in workers.items()} == {"busy": 2, "idle": 0}


def test_queues_served_are_those_of_recent_workers(store):
    store.record_workers([WorkerSighting("w1", queues=("a", "b"))])
    store.record_workers([WorkerSighting("old", queues=("c",))], now=later(store, -3600))
    assert store.queues_served_since(later(store, -60)) == {"a", "b"}


def test_pruning_forgets_workers_not_seen_since(store):
    store.record_workers([WorkerSighting("old")], now=later(store, -7200))
    store.record_workers([WorkerSighting("new")])
    assert store.prune_workers(later(store, -3600)) == 1
    assert [worker.id for worker in store.recent_workers(later(store, -86400))] == ["new"]
