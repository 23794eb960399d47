"""The lease walks priority levels and takes queues in turns (see quorra.store.ready): it must
keep the order priority desc across queues (queues of one level in turns, each by run_at, id), step over delayed jobs of a higher priority,
skip rows another transaction holds, and lease each job once when many workers race over
several queues. On SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from quorra.schema import jobs
from quorra.store import Store
from tests.factories import spec

HOUR = 3600
THREADS = 8
RESULT_TIMEOUT_SECONDS = 120


def _enqueue(store: Store, queue: str, priority: int, *, seconds_ago: float = 0, delay: int = 0, count: int = 1):
    now = store.database_now() - timedelta(seconds=seconds_ago)
    specs = [spec(queue=queue, priority=priority, delay_seconds=delay) for _ in range(count)]
    return store.enqueue_many(specs, now=now)


def _best_first(jobs_) -> list[str]:
    return [job.id for job in sorted(jobs_, key=lambda job: (-job.priority, job.run_at, job.id))]


def test_delayed_jobs_of_a_higher_priority_do_not_hold_back_ready_ones(store):
    # Given delayed jobs at the top priorities, above and among the ready ones
    for priority in (9, 7, 5):
        _enqueue(store, "q", priority, delay=HOUR, count=3)
    ready = [*_enqueue(store, "q", 5, seconds_ago=5), *_enqueue(store, "q", 3, count=2), *_enqueue(store, "q", 0)]
    # When a worker asks for more jobs than are ready
    leased = store.lease_jobs(["q"], "worker-a", 10, 30)
    # Then it gets every ready job, best first, and none of the delayed ones
    assert [job.id for job in leased] == _best_first(ready)


def test_lease_from_several_queues_takes_priority_first_and_queues_of_a_level_in_turns(store):
    # Given two queues whose jobs interleave by priority and by run_at
    waiting = [
        *_enqueue(store, "a", 2, seconds_ago=10),
        *_enqueue(store, "b", 2, seconds_ago=20),
        *_enqueue(store, "b", 2, seconds_ago=5, count=2),
        *_enqueue(store, "a", 1, seconds_ago=30),
        *_enqueue(store, "b", 3, delay=HOUR),
        *_enqueue(store, "a", 0, seconds_ago=40),
    ]
    ready = [job for job in waiting if job.priority < 3]
    # When a worker on both queues leases one job at a time (the database decides the order)
    order = [store.lease_jobs(["a", "b"], "worker-a", 1, 30)[0] for _ in ready]
    # Then a higher priority comes first whatever the queue; within a priority the queues
    # take turns while both have jobs, each queue's jobs by run_at then id
    assert [job.priority for job in order] == [2, 2, 2, 2, 1, 0]
    assert [job.queue for job in order[:2]] in (["a", "b"], ["b", "a"])
    for queue in ("a", "b"):
        assert [job.id for job in order if job.queue == queue] == _best_first(j for j in ready if j.queue == queue)
    assert store.lease_jobs(["a", "b"], "worker-a", 1, 30) == []


def test_a_batch_from_several_queues_takes_their_best_in_turns(store):
    # Given more ready jobs in two queues than one batch takes
    a_jobs, b_jobs = _enqueue(store, "a", 1, count=4), _enqueue(store, "b", 1, seconds_ago=1, count=4)
    _enqueue(store, "b", 0, seconds_ago=9, count=2)
    _enqueue(store, "a", 4, delay=HOUR)
    # When a batch of 6 is leased
    leased = store.lease_jobs(["b", "a"], "worker-a", 6, 30)
    # Then it holds the 3 best ready jobs of each queue at the top ready priority, in turns
    assert {job.id for job in leased} == {*_best_first(a_jobs)[:3], *_best_first(b_jobs)[:3]}
    assert len({job.queue for job in leased[:2]}) == 2


def test_a_queue_named_twice_is_leased_once(store):
    # Given three ready jobs
    waiting = _enqueue(store, "q", 0, count=3)
    # When a worker names its queue twice
    leased = store.lease_jobs(["q", "q"], "worker-a", 2, 30)
    # Then it gets two distinct jobs, the best two
    assert [job.id for job in leased] == _best_first(waiting)[:2]


@pytest.mark.postgres
def test_lease_skips_a_row_another_transaction_holds_and_keeps_the_order(postgres_url):
    # Given ready jobs in two levels, the best of them locked by another transaction
    store = Store.from_url(postgres_url)
    try:
        top = _enqueue(store, "q", 5, seconds_ago=3, count=2)
        rest = _enqueue(store, "q", 1, count=2)
        with store.engine.connect() as other:
            other.execute(select(jobs.c.id).where(jobs.c.id == top[0].id).with_for_update())
            # When a worker leases three jobs meanwhile
            leased = store.lease_jobs(["q"], "worker-a", 3, 30)
            other.rollback()
        # Then it gets the three others, best first
        assert [job.id for job in leased] == _best_first([top[1], *rest])
    finally:
        store.close()


def test_workers_racing_over_several_queues_lease_each_ready_job_once(database_url):
    # Given ready jobs in three queues over several priorities, and delayed ones above them
    store = Store.from_url(database_url, pool_size=THREADS)
    queues = ["r0", "r1", "r2"]
    try:
        ready = {job.id for n in range(6) for job in _enqueue(store, queues[n % 3], n % 4, count=60)}
        delayed = {job.id for job in _enqueue(store, "r1", 9, delay=HOUR, count=30)}
        start = threading.Barrier(THREADS)
        # When eight threads lease and ack batches from all three queues until none is left
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(_lease_until_empty, store, queues, f"t{n}", start) for n in range(THREADS)]
            leased = [job_id for future in futures for job_id in future.result(timeout=RESULT_TIMEOUT_SECONDS)]
        # Then every ready job was leased exactly once and no delayed one was
        assert Counter(leased) == Counter(ready)
        assert not delayed & set(leased)
    finally:
        store.close()


def _lease_until_empty(store: Store, queues: list[str], worker_id: str, start: threading.Barrier) -> list[str]:
    start.wait(timeout=RESULT_TIMEOUT_SECONDS)
    leased: list[str] = []
    for _ in range(1000):  # bounded: 360 jobs need far fewer rounds
        batch = store.lease_jobs(queues, worker_id, 7, 300)
        if not batch and not _any_ready_left(store, queues):
            break
        for job in batch:
            store.ack(job.id, job.lease_id)
            leased.append(job.id)
    return leased


def _any_ready_left(store: Store, queues: list[str]) -> bool:
    # An empty lease may only mean that other racers hold the rest: stop once none is left.
    return any(job.status in ("pending", "failed") and job.priority < 9 for job in _jobs_of(store, queues))


def _jobs_of(store: Store, queues: list[str]):
    return [job for queue in queues for job in store.list_jobs(queue=queue, limit=500).jobs]
