"""Racing workers: 2,000 jobs, leased by 16 threads (on both backends) and by 4 processes
(PostgreSQL): every job is leased exactly once and none is lost."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from quorra.jobs import JobSpec
from quorra.store import Store
from tests.store.racing import QUEUE, lease_until_empty, race_in_process

pytestmark = pytest.mark.timeout(900)

JOBS = 2000
THREADS = 16
PROCESSES = 4
RESULT_TIMEOUT_SECONDS = 600  # generous: some 15 to 50 s on a 2-core machine, longer under load


def _enqueue_jobs(store: Store) -> set[str]:
    spec = JobSpec.parse({"type": "race", "payload": {}, "queue": QUEUE})
    return {job.id for _ in range(JOBS // 1000) for job in store.enqueue_many([spec] * 1000)}


def _assert_each_leased_exactly_once(store: Store, enqueued: set[str], per_racer: list[list[str]]) -> None:
    counts = Counter(job_id for ids in per_racer for job_id in ids)
    assert set(counts) == enqueued, "some jobs were never leased"
    assert {n for n in counts.values()} == {1}, f"leased twice: {[i for i, n in counts.items() if n > 1][:5]}"
    assert [(c.queue, c.status, c.count) for c in store.queue_counts()] == [(QUEUE, "succeeded", JOBS)]
    assert sum(1 for ids in per_racer if ids) >= 2, "only one racer ever got a job: there was no race"


def test_sixteen_threads_lease_every_job_exactly_once(database_url):
    # Given 2,000 ready jobs and one store shared by 16 threads
    store = Store.from_url(database_url, pool_size=THREADS)
    enqueued = _enqueue_jobs(store)
    start = threading.Barrier(THREADS)
    try:
        # When the threads race to lease (and ack) until the queue is empty
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(lease_until_empty, store, f"thread-{n}", start) for n in range(THREADS)]
            per_thread = [future.result(timeout=RESULT_TIMEOUT_SECONDS) for future in futures]
        # Then each job was leased by exactly one thread, and every job is done
        _assert_each_leased_exactly_once(store, enqueued, per_thread)
    finally:
        store.close()


@pytest.mark.postgres
def test_four_processes_lease_every_job_exactly_once(postgres_url):
    # Given 2,000 ready jobs and four spawned processes, each with a Store of its own
    store = Store.from_url(postgres_url)
    enqueued = _enqueue_jobs(store)
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(PROCESSES), context.Queue()
    racers = [
        context.Process(target=race_in_process, args=(postgres_url, f"process-{n}", start, results))
        for n in range(PROCESSES)
    ]
    try:
        # When the processes race to lease (and ack) until the queue is empty
        for racer in racers:
            racer.start()
        outcomes = [results.get(timeout=RESULT_TIMEOUT_SECONDS) for _ in racers]
        for racer in racers:
            racer.join(timeout=30)
        # Then each job was leased by exactly one process, and every job is done
        assert [error for _, _, error in outcomes if error] == []
        _assert_each_leased_exactly_once(store, enqueued, [ids for _, ids, _ in outcomes])
        assert [racer.exitcode for racer in racers] == [0] * PROCESSES
    finally:
        for racer in racers:
            if racer.is_alive():
                racer.kill()
        store.close()
