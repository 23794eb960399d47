"""Throughput per queue and minute from the attempt history, on both backends; the query
reads a range of ix_job_attempts_finished."""

from __future__ import annotations

from datetime import timedelta

from quorra.store import Settlement
from tests.factories import make_job
from tests.store.support import later
from tests.store.test_query_plans import query_plan, statements_sent, the_one


def test_throughput_counts_succeeded_and_failed_attempts_per_queue_and_minute(store):
    # Given, in one minute, two acks and a nack in "mail" and an expiry in "bill"
    for _ in range(3):
        make_job(store, queue="mail")
    make_job(store, queue="bill")
    a, b, c = store.lease_jobs(["mail"], "w1", 3, 30)
    store.settle_many([Settlement(a.id, a.lease_id, True), Settlement(b.id, b.lease_id, True)])
    store.nack(c.id, c.lease_id, "boom")
    store.lease_jobs(["bill"], "w1", 1, 5)
    store.reap_expired_leases(now=later(store, 10))
    # When the last hour's figures are read
    counts = store.throughput(later(store, -3600))
    # Then each queue has its counts, in whole minutes
    by_queue = {}
    for count in counts:
        assert count.minute.second == 0 and count.minute.microsecond == 0 and count.minute.tzinfo is not None
        totals = by_queue.setdefault(count.queue, [0, 0])
        totals[0] += count.succeeded
        totals[1] += count.failed
    assert by_queue == {"mail": [2, 1], "bill": [0, 1]}
    assert {c.queue for c in store.throughput(later(store, -3600), queue="bill")} == {"bill"}


def test_throughput_leaves_out_older_attempts(store):
    make_job(store, queue="old")
    [job] = store.lease_jobs(["old"], "w1", 1, 30)
    store.ack(job.id, job.lease_id)
    assert store.throughput(later(store, 120)) == []


def test_throughput_reads_the_finished_index(store):
    with statements_sent(store) as sent:
        store.throughput(later(store, -3600) - timedelta(minutes=1))
    plan = query_plan(store, *the_one(sent, "job_attempts"))
    assert "ix_job_attempts_finished" in plan, plan
