"""What a LeaseJobs stream may send (issue 8): never a lease that is already (nearly)
expired when its turn to be sent comes, and never more payload bytes than the budget.
Each test runs on SQLite and on PostgreSQL against a real gRPC server."""

from __future__ import annotations

import time

from quorra.jobs import JobStatus
from quorra.store import Store
from tests import factories
from tests.rpc.support import lease, rpc_settings, running_server, stub_on


class PausingStore(Store):
    """The real store, pausing after each lease commits: the gRPC server stalled between
    the commit and the send (a GC pause, a stopped process, an overloaded host)."""

    pause_seconds = 0.0

    def lease_jobs(self, *args, **kwargs):
        leased = super().lease_jobs(*args, **kwargs)
        time.sleep(self.pause_seconds)
        return leased


def test_a_lease_expired_before_its_send_is_handed_back_not_sent(server_settings, database_url, notifier):
    # Given a server whose leases sit 2.5 s between commit and send, and a 2 s lease TTL
    store = PausingStore.from_url(database_url)
    job = factories.make_job(store, queue="late")
    store.pause_seconds = 2.5
    with running_server(server_settings, store, notifier) as (_, port), stub_on(port) as stub:
        # When a worker leases the job
        sent = lease(stub, "late", ttl=2)
    # Then nothing is sent, and the job is ready again without an attempt spent
    after = store.get_job(job.id)
    store.close()
    assert sent == []
    assert after.status is JobStatus.PENDING and after.attempts == 0


def test_a_lease_in_time_is_sent(server_settings, database_url, notifier):
    store = PausingStore.from_url(database_url)
    factories.make_job(store, queue="on-time")
    store.pause_seconds = 0.2
    with running_server(server_settings, store, notifier) as (_, port), stub_on(port) as stub:
        sent = lease(stub, "on-time", ttl=30)
    store.close()
    assert len(sent) == 1


def test_a_lease_batch_stops_at_the_byte_budget(settings, store, notifier):
    # Given a server with a 100 kB lease budget and five jobs of 40 kB
    small = rpc_settings(settings, lease_max_bytes=100_000)
    for _ in range(5):
        factories.make_job(store, queue="heavy", payload={"blob": "x" * 40_000})
    with running_server(small, store, notifier) as (_, port), stub_on(port) as stub:
        # When a worker asks for all of them, three times
        batches = [lease(stub, "heavy", max_jobs=5) for _ in range(3)]
    # Then each batch holds only what fits (the first job always), and none is lost
    assert [len(batch) for batch in batches] == [2, 2, 1]
