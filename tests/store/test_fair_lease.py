"""Fair scheduling (quorra.store.ready): a lease takes its tenants in turns, and a tenant's
queues of one priority in turns, so that a flooded tenant or queue does not starve another;
a fleet lease (ALL_TENANTS) reads every tenant's jobs of its queues, a tenant's lease only its
own. On SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from quorra.access import ALL_TENANTS
from quorra.jobs import Job
from quorra.schema import jobs
from quorra.store import Store
from tests.factories import spec

FLEET = ALL_TENANTS
HOUR = 3600
THREADS = 6
RESULT_TIMEOUT_SECONDS = 120


def _enqueue(
    store: Store,
    tenant: str,
    queue: str = "q",
    *,
    count: int = 1,
    priority: int = 0,
    seconds_ago: float = 0,
    delay: int = 0,
    payload: dict | None = None,
) -> list[Job]:
    now = store.database_now() - timedelta(seconds=seconds_ago)
    fields = {"queue": queue, "priority": priority, "delay_seconds": delay} | ({"payload": payload} if payload else {})
    return store.enqueue_many([spec(**fields) for _ in range(count)], tenant=tenant, now=now)


def _ids(jobs_: list[Job]) -> set[str]:
    return {job.id for job in jobs_}


def _tenants(store: Store, leased: list[Job]) -> list[str]:
    return [job.tenant for job in leased]


def test_a_fleet_lease_takes_a_small_tenants_jobs_beside_a_flooded_one(store):
    # Given tenant A with 10,000 older jobs of a higher priority, and tenant B with 10 newer ones
    _enqueue(store, "A", count=10_000, priority=9, seconds_ago=3600)
    small = _ids(_enqueue(store, "B", count=10))
    # When a fleet worker leases a batch of 10
    leased = store.lease_jobs(["q"], "fleet", 10, 30, tenant=FLEET)
    # Then the tenants took turns: half the batch is B's (A's priority orders A's jobs only)
    assert len(leased) == 10
    assert len(_ids(leased) & small) == 5
    # and B's other five come with the next batch
    assert small <= _ids(leased) | _ids(store.lease_jobs(["q"], "fleet", 10, 30, tenant=FLEET))


def test_leases_of_one_job_alternate_between_tenants(store):
    # Given tenant A with 10,000 older jobs and tenant B with 10 newer ones
    _enqueue(store, "A", count=10_000, seconds_ago=3600)
    small = _ids(_enqueue(store, "B", count=10))
    # When a fleet worker leases one job at a time, 20 times
    leased = [job for _ in range(20) for job in store.lease_jobs(["q"], "fleet", 1, 30, tenant=FLEET)]
    # Then every other lease was B's: all of B's jobs started within those 20
    assert small <= _ids(leased)
    assert Counter(_tenants(store, leased)) == {"A": 10, "B": 10}


def test_a_lease_over_many_tenants_takes_one_job_of_each_in_turn(store):
    # Given 30 tenants with 3 jobs each
    tenants = [f"t{n:02}" for n in range(30)]
    for tenant in tenants:
        _enqueue(store, tenant, count=3)
    # When a fleet worker leases three batches of 10
    batches = [store.lease_jobs(["q"], "fleet", 10, 30, tenant=FLEET) for _ in range(3)]
    # Then each batch holds 10 tenants' first jobs, and the three batches reach every tenant once
    assert [len(set(_tenants(store, batch))) for batch in batches] == [10, 10, 10]
    assert sorted(tenant for batch in batches for tenant in _tenants(store, batch)) == tenants


def test_a_fleet_lease_fills_its_batch_when_other_tenants_have_less_than_their_share(store):
    # Given A with many jobs, B and C with one each
    _enqueue(store, "A", count=100, seconds_ago=60)
    few = _ids(_enqueue(store, "B")) | _ids(_enqueue(store, "C"))
    # When a fleet worker leases 10
    leased = store.lease_jobs(["q"], "fleet", 10, 30, tenant=FLEET)
    # Then the batch is full: B's and C's jobs, and 8 of A's
    assert len(leased) == 10 and few <= _ids(leased)


def test_tenants_with_only_delayed_jobs_do_not_shrink_a_fleet_lease(store):
    # Given 30 tenants whose jobs are all delayed, and A's ready backlog
    for n in range(30):
        _enqueue(store, f"later{n:02}", delay=HOUR)
    _enqueue(store, "A", count=50)
    # When a fleet worker leases 10
    leased = store.lease_jobs(["q"], "fleet", 10, 30, tenant=FLEET)
    # Then it gets 10 of A's jobs
    assert _tenants(store, leased) == ["A"] * 10


def test_a_fleet_lease_sees_every_tenants_jobs_of_its_queues_and_no_others(store):
    # Given three tenants' jobs in queue "q" and in another queue
    named = set()
    for tenant in ("default", "A", "B"):
        named |= _ids(_enqueue(store, tenant, count=2))
        _enqueue(store, tenant, "other")
    # When a fleet worker leases more than there are
    leased = store.lease_jobs(["q"], "fleet", 20, 30, tenant=FLEET)
    # Then it gets every tenant's jobs of "q", and none of "other"
    assert _ids(leased) == named


def test_a_tenants_lease_never_sees_another_tenants_jobs(store):
    # Given jobs of tenants A and B in a queue of the same name
    a_jobs, b_jobs = _ids(_enqueue(store, "A", count=3)), _ids(_enqueue(store, "B", count=3))
    # When B's worker and the default tenant's worker lease
    for_b = store.lease_jobs(["q"], "worker-b", 10, 30, tenant="B")
    for_default = store.lease_jobs(["q"], "worker-d", 10, 30)
    # Then B's gets B's jobs only, the default tenant's none; A's are still waiting
    assert _ids(for_b) == b_jobs and for_default == []
    assert _ids(store.lease_jobs(["q"], "worker-a", 10, 30, tenant="A")) == a_jobs


def test_a_flooded_queue_does_not_starve_another_of_the_same_priority(store):
    # Given one tenant's queue with 10,000 older jobs and another queue with 10 newer ones
    _enqueue(store, "default", "flood", count=10_000, seconds_ago=3600)
    small = _ids(_enqueue(store, "default", "small", count=10))
    # When a worker on both queues leases two batches of 10
    first = store.lease_jobs(["flood", "small"], "worker-a", 10, 30)
    second = store.lease_jobs(["flood", "small"], "worker-a", 10, 30)
    # Then the queues took turns: half of each batch is the small queue's
    assert len(_ids(first) & small) == 5
    assert small <= _ids(first) | _ids(second)


def test_a_higher_priority_wins_across_a_tenants_queues_but_not_across_tenants(store):
    # Given tenant A's urgent jobs in one queue and its routine ones in another, and B's routine jobs
    urgent = _ids(_enqueue(store, "A", "urgent", count=4, priority=5))
    _enqueue(store, "A", "routine", count=4, seconds_ago=60)
    b_jobs = _ids(_enqueue(store, "B", "routine", count=4, seconds_ago=60))
    # When a fleet worker leases 8 from both queues
    leased = store.lease_jobs(["urgent", "routine"], "fleet", 8, 30, tenant=FLEET)
    # Then A's half is its urgent jobs (its older routine ones wait), B's half its own jobs
    assert _ids(leased) == urgent | b_jobs


def test_a_fleet_lease_skips_a_tenants_paused_queue_only(store):
    # Given A's and B's jobs in their queues "q", and B's "q" paused
    a_jobs = _ids(_enqueue(store, "A", count=2))
    _enqueue(store, "B", count=2)
    store.set_queue_paused("q", True, tenant="B")
    # When a fleet worker leases
    leased = store.lease_jobs(["q"], "fleet", 10, 30, tenant=FLEET)
    # Then it gets A's jobs only
    assert _ids(leased) == a_jobs


def test_a_fleet_lease_steps_over_a_tenants_delayed_jobs_of_a_higher_priority(store):
    # Given A's delayed jobs above its ready ones, and B's ready jobs
    _enqueue(store, "A", count=20, priority=9, delay=HOUR)
    ready = _ids(_enqueue(store, "A", count=2)) | _ids(_enqueue(store, "B", count=2))
    # When a fleet worker leases
    leased = store.lease_jobs(["q"], "fleet", 10, 30, tenant=FLEET)
    # Then it gets every ready job and no delayed one
    assert _ids(leased) == ready


def test_the_byte_budget_counts_jobs_in_lease_order(store):
    # Given A's and B's jobs with payloads of the same size
    payload = {"blob": "x" * 100}
    _enqueue(store, "A", count=5, payload=payload, seconds_ago=60)
    _enqueue(store, "B", count=5, payload=payload)
    # When a fleet worker leases with room for about three payloads
    leased = store.lease_jobs(["q"], "fleet", 10, 30, tenant=FLEET, max_bytes=350)
    # Then it gets three jobs, taken in turns (both tenants are in them)
    assert len(leased) == 3
    assert set(_tenants(store, leased)) == {"A", "B"}


def test_fleet_workers_racing_over_tenants_lease_each_ready_job_once(database_url):
    # Given ready jobs of four tenants in two queues, and delayed ones
    store = Store.from_url(database_url, pool_size=THREADS)
    try:
        ready = set()
        for n in range(8):
            ready |= _ids(_enqueue(store, f"t{n % 4}", f"r{n % 2}", count=30, priority=n % 3))
        delayed = _ids(_enqueue(store, "t1", "r0", count=10, priority=9, delay=HOUR))
        start = threading.Barrier(THREADS)
        # When six fleet workers lease and ack batches until none is left
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(_lease_until_empty, store, f"w{n}", start) for n in range(THREADS)]
            leased = [job_id for future in futures for job_id in future.result(timeout=RESULT_TIMEOUT_SECONDS)]
        # Then every ready job was leased exactly once and no delayed one was
        assert Counter(leased) == Counter(ready)
        assert not delayed & set(leased)
    finally:
        store.close()


def _lease_until_empty(store: Store, worker_id: str, start: threading.Barrier) -> list[str]:
    start.wait(timeout=RESULT_TIMEOUT_SECONDS)
    leased: list[str] = []
    empty_in_a_row = 0
    for _ in range(1000):  # bounded: 240 jobs need far fewer rounds
        batch = store.lease_jobs(["r0", "r1"], worker_id, 7, 300, tenant=FLEET)
        empty_in_a_row = 0 if batch else empty_in_a_row + 1
        if empty_in_a_row >= 3 and not _ready_left(store):
            break
        for job in batch:
            store.ack(job.id, job.lease_id, tenant=FLEET)
            leased.append(job.id)
    return leased


def _ready_left(store: Store) -> bool:
    # An empty lease may only mean that other racers hold the rest: stop once none is left.
    with store.engine.connect() as conn:
        waiting = conn.execute(jobs.select().where(jobs.c.status.in_(["pending", "failed"]), jobs.c.priority < 9))
        return waiting.first() is not None
