"""Rate and concurrency limits in the lease, on both backends: a queue's max_in_flight and
rate, a tenant's over all its queues, and the queues without limits beside them."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from quorra.access import ALL_TENANTS
from quorra.errors import DatabaseUnavailable
from quorra.jobs import JobStatus
from quorra.limits import NO_LIMITS, Limits, Rate
from quorra.store import Store
from quorra.store.limits import REFRESH_SECONDS, KnownLimits, LimitCache
from tests.factories import make_job, spec
from tests.store.support import later


def fill(store: Store, queue: str, count: int) -> list[str]:
    return [make_job(store, queue=queue).id for _ in range(count)]


def test_max_in_flight_caps_a_lease_and_frees_a_place_when_a_job_settles(store):
    # Given 5 ready jobs in a queue that allows 2 in flight
    fill(store, "mail", 5)
    store.set_queue_limits("mail", Limits(max_in_flight=2))
    # When a worker asks for 10, then again
    first = store.lease_jobs(["mail"], "worker-a", 10, 30)
    second = store.lease_jobs(["mail"], "worker-b", 10, 30)
    # Then it gets 2, then none
    assert (len(first), second) == (2, [])
    # And once one of them is acked, one more
    store.ack(first[0].id, first[0].lease_id)
    assert len(store.lease_jobs(["mail"], "worker-b", 10, 30)) == 1


def test_jobs_processing_count_as_in_flight(store):
    fill(store, "mail", 3)
    store.set_queue_limits("mail", Limits(max_in_flight=1))
    [job] = store.lease_jobs(["mail"], "worker-a", 10, 30)
    store.extend_lease(job.id, job.lease_id, 30)  # processing now
    assert store.lease_jobs(["mail"], "worker-b", 10, 30) == []


def test_a_limited_queue_does_not_hold_back_the_unlimited_queues_of_a_lease(store):
    # Given a limited queue and an unlimited one, both with ready jobs
    fill(store, "limited", 4)
    free = fill(store, "free", 3)
    store.set_queue_limits("limited", Limits(max_in_flight=1))
    # When a worker leases from both
    leased = store.lease_jobs(["limited", "free"], "worker-a", 10, 30)
    # Then it gets one of the limited queue's and all of the other's
    by_queue = sorted(job.queue for job in leased)
    assert by_queue == ["free", "free", "free", "limited"]
    assert {job.id for job in leased if job.queue == "free"} == set(free)


def test_a_rate_starts_a_burst_then_one_job_per_token(store):
    # Given 50 ready jobs in a queue limited to 10 a second (a burst of 1)
    fill(store, "paced", 50)
    store.set_queue_limits("paced", Limits(rate=Rate(10, 1)))
    start = later(store, 1)
    # When workers lease at one instant, then half a second later
    at_start = store.lease_jobs(["paced"], "worker-a", 50, 30, now=start)
    again = store.lease_jobs(["paced"], "worker-a", 50, 30, now=start)
    half_second = store.lease_jobs(["paced"], "worker-a", 50, 30, now=start + timedelta(seconds=0.5))
    # Then the first gets the burst, the second nothing, the third the tokens of 0.5 s,
    # capped at the bucket's size (1)
    assert (len(at_start), len(again), len(half_second)) == (1, 0, 1)


def test_a_rate_per_minute_refills_over_the_minute(store):
    fill(store, "slow", 30)
    store.set_queue_limits("slow", Limits(rate=Rate(60, 60)))  # 1 a second, a burst of 6
    start = later(store, 1)
    assert len(store.lease_jobs(["slow"], "w", 30, 30, now=start)) == 6
    assert len(store.lease_jobs(["slow"], "w", 30, 30, now=start + timedelta(seconds=2.5))) == 2
    # the half token left at 2.5 s is whole at 3 s
    assert len(store.lease_jobs(["slow"], "w", 30, 30, now=start + timedelta(seconds=3))) == 1
    assert len(store.lease_jobs(["slow"], "w", 30, 30, now=start + timedelta(seconds=3.5))) == 0


def test_the_leases_of_a_rate_start_when_their_tokens_were_counted(store):
    fill(store, "paced", 1)
    store.set_queue_limits("paced", Limits(rate=Rate(10, 1)))
    start = later(store, 1)
    [job] = store.lease_jobs(["paced"], "w", 1, 30, now=start)
    assert job.leased_at == start


def test_a_tenant_limit_caps_the_sum_over_its_queues(store):
    # Given two queues of the default tenant, and a limit of 3 in flight on the tenant
    fill(store, "a", 4)
    fill(store, "b", 4)
    store.set_tenant_limits("default", Limits(max_in_flight=3))
    # When workers lease from both, then from one
    first = store.lease_jobs(["a", "b"], "worker-a", 10, 30)
    second = store.lease_jobs(["b"], "worker-b", 10, 30)
    # Then 3 jobs in flight at most, whichever queues
    assert (len(first), second) == (3, [])


def test_a_tenant_limit_and_a_queue_limit_both_hold(store):
    fill(store, "a", 4)
    fill(store, "b", 4)
    store.set_tenant_limits("default", Limits(max_in_flight=3))
    store.set_queue_limits("a", Limits(max_in_flight=1))
    leased = store.lease_jobs(["a", "b"], "worker-a", 10, 30)
    assert sorted(job.queue for job in leased) == ["a", "b", "b"]


def test_a_tenant_rate_paces_all_its_queues(store):
    fill(store, "a", 10)
    fill(store, "b", 10)
    store.set_tenant_limits("default", Limits(rate=Rate(20, 1)))  # a burst of 2
    start = later(store, 1)
    assert len(store.lease_jobs(["a", "b"], "w", 20, 30, now=start)) == 2
    assert len(store.lease_jobs(["b"], "w", 20, 30, now=start + timedelta(seconds=0.05))) == 1


def test_another_tenants_limit_does_not_touch_this_tenants_leases(store):
    fill(store, "mail", 3)
    store.set_tenant_limits("acme", Limits(max_in_flight=1))
    store.set_queue_limits("mail", Limits(max_in_flight=1), tenant="acme")
    assert len(store.lease_jobs(["mail"], "worker-a", 10, 30)) == 3


def test_lifting_the_limits_leases_freely_again(store):
    fill(store, "mail", 4)
    store.set_queue_limits("mail", Limits(max_in_flight=1))
    assert len(store.lease_jobs(["mail"], "worker-a", 10, 30)) == 1
    store.set_queue_limits("mail", NO_LIMITS)
    assert len(store.lease_jobs(["mail"], "worker-a", 10, 30)) == 3
    assert store.queue_limits() == {}


def test_a_paused_limited_queue_is_not_leased(store):
    fill(store, "mail", 2)
    store.set_queue_limits("mail", Limits(max_in_flight=5))
    store.set_queue_paused("mail", True)
    assert store.lease_jobs(["mail"], "worker-a", 10, 30) == []
    assert store.queue_limits() == {"mail": Limits(max_in_flight=5)}  # pausing kept the limit


def test_limits_set_before_a_queue_has_jobs_apply_to_its_first_jobs(store):
    store.set_queue_limits("future", Limits(max_in_flight=1, rate=Rate(100, 60)))
    fill(store, "future", 2)
    assert len(store.lease_jobs(["future"], "worker-a", 10, 30)) == 1
    assert store.queue_limits() == {"future": Limits(1, Rate(100, 60))}


def test_limits_are_read_back_per_queue_and_per_tenant(store):
    store.set_queue_limits("mail", Limits(max_in_flight=4, rate=Rate(50, 1)))
    store.set_tenant_limits("acme", Limits(rate=Rate(10, 60)))
    assert store.queue_limits() == {"mail": Limits(4, Rate(50, 1))}
    assert store.queue_limits(tenant="acme") == {}
    assert store.tenant_limits("acme") == Limits(rate=Rate(10, 60))
    assert store.tenant_limits("default") == NO_LIMITS


def test_a_process_that_has_not_seen_a_new_limit_yet_never_passes_it(store):
    # Given a second server process (its own store) that read the limits before one was set
    other = Store(store.engine)
    assert other.known_limits().queues == {}
    fill(store, "mail", 5)
    store.set_queue_limits("mail", Limits(max_in_flight=2))
    # When it leases before it reads them again, and after
    stale = other.lease_jobs(["mail"], "worker-a", 10, 30)
    other._limit_cache.expire()
    fresh = other.lease_jobs(["mail"], "worker-a", 10, 30)
    # Then never more than the limit in flight: the fast statement skips a limited queue
    assert len(stale) + len(fresh) == 2


def test_a_copy_older_than_a_second_is_read_again_while_leases_go_on(store):
    # Given a second server process whose copy of the limits became older than REFRESH_SECONDS
    other = Store(store.engine)
    assert other.known_limits().queues == {}
    store.set_queue_limits("mail", Limits(max_in_flight=2))
    time.sleep(REFRESH_SECONDS * 1.2)
    # When it is asked for them: Then it answers with the copy it has (no lease waits for the read)
    assert other.known_limits().queues == {}
    # and soon knows the new limit, read in the background
    deadline = time.monotonic() + 10
    while not other.known_limits().queues and time.monotonic() < deadline:
        time.sleep(0.05)
    assert other.known_limits().queues == {("default", "mail"): Limits(max_in_flight=2)}


def test_a_failed_read_in_the_background_keeps_the_copy_and_is_tried_again():
    # Given a process's copy of the limits, older than REFRESH_SECONDS, and a database that
    # fails the next read (down for a moment), then answers with a new limit
    limited = KnownLimits({("default", "mail"): Limits(max_in_flight=2)})
    answers = iter([KnownLimits(), DatabaseUnavailable(), limited])

    def read() -> KnownLimits:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = LimitCache()
    assert cache.get(read) == KnownLimits()
    time.sleep(REFRESH_SECONDS * 1.2)
    # When leases ask meanwhile: Then they go on with the copy while the read fails
    assert cache.get(read) == KnownLimits()
    # and, a REFRESH_SECONDS later, the read is tried again and the new limit is known
    deadline = time.monotonic() + 10
    while cache.get(read) != limited and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cache.get(read) == limited


def test_racing_leases_never_pass_max_in_flight(store):
    # Given 40 ready jobs, a limit of 3 in flight, and 8 threads leasing at once
    fill(store, "race", 40)
    store.set_queue_limits("race", Limits(max_in_flight=3))
    start, leased, lock = threading.Barrier(8), [], threading.Lock()

    def lease() -> None:
        start.wait()
        for _ in range(5):
            jobs = store.lease_jobs(["race"], threading.current_thread().name, 2, 30)
            with lock:
                leased.extend(jobs)

    threads = [threading.Thread(target=lease, name=f"worker-{n}") for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly 3 were leased, and 3 are in flight
    assert len(leased) == 3
    held = [store.get_job(job.id).status for job in leased]
    assert set(held) == {JobStatus.LEASED}


def fill_of(store: Store, tenant: str, queue: str, count: int) -> list[str]:
    return [job.id for job in store.enqueue_many([spec(queue=queue)] * count, tenant=tenant)]


def test_a_fleet_lease_serves_a_limited_tenant_within_its_limit_beside_unlimited_ones(store):
    # Given the same queue of two tenants, acme's limited to 2 jobs in flight, globex's not
    fill_of(store, "acme", "mail", 5)
    fill_of(store, "globex", "mail", 5)
    store.set_queue_limits("mail", Limits(max_in_flight=2), tenant="acme")
    # When a fleet worker (every tenant) leases 10, then 10 again
    first = store.lease_jobs(["mail"], "fleet", 10, 30, tenant=ALL_TENANTS)
    second = store.lease_jobs(["mail"], "fleet", 10, 30, tenant=ALL_TENANTS)
    # Then acme's jobs come within its limit, and globex's all
    tenants = sorted(job.tenant for job in first + second)
    assert tenants == ["acme"] * 2 + ["globex"] * 5
    # And a settled acme job frees a place for the fleet's next lease
    [acme_job, *_] = [job for job in first + second if job.tenant == "acme"]
    store.ack(acme_job.id, acme_job.lease_id, tenant=ALL_TENANTS)
    assert [job.tenant for job in store.lease_jobs(["mail"], "fleet", 10, 30, tenant=ALL_TENANTS)] == ["acme"]


def test_a_fleet_lease_spends_a_limited_tenants_rate(store):
    # Given acme limited to 1 job a minute (a burst of 1) and 5 ready jobs
    fill_of(store, "acme", "paced", 5)
    store.set_tenant_limits("acme", Limits(rate=Rate(1, 60)))
    # When a fleet worker asks twice at once
    first = store.lease_jobs(["paced"], "fleet", 10, 30, tenant=ALL_TENANTS)
    second = store.lease_jobs(["paced"], "fleet", 10, 30, tenant=ALL_TENANTS)
    # Then one job started: the burst, and no token left for the second ask
    assert (len(first), second) == (1, [])
