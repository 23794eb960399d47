"""The completer against a real server: finished jobs are settled in SettleJobs batches
(or carried by the lease loop's SettleAndLease), their leases kept until the settle is
answered, one stale lease never fails its neighbours, everything is flushed at stop, and
an older server without SettleJobs is settled one job at a time. Both backends.

The completer's own flushes are tested against a server without SettleAndLease (as before
it), where the lease loop carries nothing."""

from __future__ import annotations

import logging
import threading

import grpc
import pytest

from quorra.jobs import JobStatus
from quorra.notify import make_notifier
from quorra.rpc import quorra_pb2_grpc as pb2_grpc
from quorra.rpc import server as rpc_server
from quorra.rpc.servicer import WorkerServicer
from tests import factories
from tests.rpc.support import running_server
from tests.worker.support import wait_until
from tests.worker.test_worker import enqueue, settled


def spy(client, name: str) -> list:
    """Record the arguments of each call of `client.<name>` (the call itself still goes out)."""
    calls, real = [], getattr(client, name)

    def recorded(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    setattr(client, name, recorded)
    return calls


class ServicerWithoutSettleAndLease(WorkerServicer):
    """The server as it was before SettleAndLease: the RPC is UNIMPLEMENTED."""

    SettleAndLease = pb2_grpc.WorkerServiceServicer.SettleAndLease


@pytest.fixture
def completer_server(server_settings, store, monkeypatch):
    """(port, notifier) of a server without SettleAndLease: every settle is the completer's."""
    monkeypatch.setattr(rpc_server, "WorkerServicer", ServicerWithoutSettleAndLease)
    notifier = make_notifier(server_settings)
    with running_server(server_settings, store, notifier) as (_, port):
        yield port, notifier


def test_fast_jobs_are_settled_in_batches_not_one_call_each(completer_server, store, make_worker):
    port, notifier = completer_server
    jobs = [factories.make_job(store, queue="work") for _ in range(40)]
    worker = make_worker(port, {"email_send": lambda job: {"n": job.payload.get("n")}}, worker_max_jobs=4)
    batches, acks = spy(worker.client, "settle_batch"), spy(worker.client, "ack")
    notifier.publish("work")

    assert all(settled(store, job.id).status is JobStatus.SUCCEEDED for job in jobs)
    sizes = [len(settlements) for settlements, _ in batches]
    assert sum(sizes) <= 40 and len(batches) < 40 and max(sizes) > 1
    assert acks == []


def test_a_finished_job_keeps_its_lease_until_its_settle_is_answered(completer_server, store, make_worker):
    # The outcome waits 3.5 s in the completer, longer than the 2 s lease: only heartbeats
    # that go on after the handler returned keep the lease, so that the ack is accepted.
    port, notifier = completer_server
    worker = make_worker(
        port, {"email_send": lambda job: "done"}, worker_lease_ttl_seconds=2, worker_settle_interval_seconds=3.5
    )
    job = enqueue(store, notifier)

    wait_until(lambda: worker.running_jobs == 0 and worker.completer.backlog == 1, what="the outcome handed over")
    done = settled(store, job.id)
    assert (done.status, done.attempts, done.result) == (JobStatus.SUCCEEDED, 1, "done")


def test_a_slot_is_free_again_when_the_handler_returns_not_when_the_settle_is_answered(
    completer_server, store, make_worker
):
    port, notifier = completer_server
    ran = []
    worker = make_worker(
        port, {"email_send": lambda job: ran.append(job.id)}, worker_max_jobs=1, worker_settle_interval_seconds=30
    )
    jobs = [enqueue(store, notifier) for _ in range(3)]

    wait_until(lambda: len(ran) == 3, what="three jobs run on one slot while none is settled")
    assert worker.completer.backlog == 3

    assert worker.stop(grace=5) is True  # and stop flushes them all before it returns
    assert [store.get_job(job.id).status for job in jobs] == [JobStatus.SUCCEEDED] * 3


def test_a_stale_lease_in_a_batch_is_reported_and_its_neighbours_settle(completer_server, store, make_worker, caplog):
    port, notifier = completer_server
    release = threading.Event()
    worker = make_worker(port, {"email_send": lambda job: release.wait(20)}, worker_max_jobs=3)
    jobs = [enqueue(store, notifier) for _ in range(3)]
    wait_until(lambda: worker.running_jobs == 3, what="three jobs running")
    batches = spy(worker.client, "settle_batch")

    store.cancel(jobs[1].id)  # its lease is gone: the worker's ack will be stale
    with caplog.at_level(logging.WARNING, logger="quorra.worker"):
        release.set()
        wait_until(lambda: store.get_job(jobs[2].id).status is JobStatus.SUCCEEDED, what="the neighbours settled")
        assert store.get_job(jobs[0].id).status is JobStatus.SUCCEEDED
        wait_until(lambda: worker.completer.backlog == 0, what="every answer handled")

    assert store.get_job(jobs[1].id).status is JobStatus.CANCELLED
    refused = [r for r in caplog.records if getattr(r, "event", None) == "job.settle_refused"]
    assert [(r.job_id, r.code) for r in refused] == [(jobs[1].id, "STALE_LEASE")]
    assert sum(len(settlements) for settlements, _ in batches) == 3
    assert worker.heartbeats.running() == []


class ServicerWithoutSettleJobs(WorkerServicer):
    """The server as it was before SettleJobs (and GoQuorra): neither batch RPC exists."""

    SettleJobs = pb2_grpc.WorkerServiceServicer.SettleJobs
    SettleAndLease = pb2_grpc.WorkerServiceServicer.SettleAndLease


@pytest.fixture
def older_server(server_settings, store, monkeypatch):
    monkeypatch.setattr(rpc_server, "WorkerServicer", ServicerWithoutSettleJobs)
    notifier = make_notifier(server_settings)
    with running_server(server_settings, store, notifier) as (_, port):
        yield port, notifier


def test_a_server_without_settle_jobs_is_settled_one_job_at_a_time(older_server, store, make_worker):
    port, notifier = older_server

    def work(job):
        if job.payload.get("fail"):
            raise RuntimeError("on purpose")
        return "ok"

    worker = make_worker(port, {"email_send": work})
    acks, nacks = spy(worker.client, "ack"), spy(worker.client, "nack")
    first = enqueue(store, notifier)
    assert settled(store, first.id).result == "ok"
    assert worker.completer.batched is False

    later = [enqueue(store, notifier, payload={"fail": n % 2 == 1}, max_retries=0) for n in range(4)]

    statuses = [settled(store, job.id).status for job in later]
    assert statuses == [JobStatus.SUCCEEDED, JobStatus.DEAD] * 2
    assert (len(acks), len(nacks)) == (3, 2)
    wait_until(lambda: worker.heartbeats.running() == [], what="every lease let go once its settle was answered")


# -- settles carried by the lease loop (SettleAndLease) ------------------------------------------


def test_fast_jobs_are_settled_with_the_next_lease_not_a_call_of_their_own(grpc_server, store, make_worker):
    port, notifier = grpc_server
    jobs = [factories.make_job(store, queue="work") for _ in range(40)]
    worker = make_worker(port, {"email_send": lambda job: {"n": job.payload.get("n")}}, worker_max_jobs=4)
    carried, acks = spy(worker.client, "settle_and_lease"), spy(worker.client, "ack")
    notifier.publish("work")

    assert all(settled(store, job.id).status is JobStatus.SUCCEEDED for job in jobs)
    wait_until(lambda: worker.completer.backlog == 0, what="every answer handled")
    sizes = [len(args[4]) for args in carried]
    assert max(sizes) > 1 and sum(sizes) <= 40 and acks == []
    assert worker.heartbeats.running() == []


def test_a_stale_lease_carried_with_a_lease_is_reported_and_its_neighbours_settle(
    grpc_server, store, make_worker, caplog
):
    port, notifier = grpc_server
    release = threading.Event()
    worker = make_worker(port, {"email_send": lambda job: release.wait(20)}, worker_max_jobs=3)
    jobs = [enqueue(store, notifier) for _ in range(3)]
    wait_until(lambda: worker.running_jobs == 3, what="three jobs running")

    store.cancel(jobs[1].id)
    with caplog.at_level(logging.WARNING, logger="quorra.worker"):
        release.set()
        wait_until(lambda: store.get_job(jobs[2].id).status is JobStatus.SUCCEEDED, what="the neighbours settled")
        wait_until(lambda: worker.completer.backlog == 0, what="every answer handled")

    assert store.get_job(jobs[0].id).status is JobStatus.SUCCEEDED
    refused = [r for r in caplog.records if getattr(r, "event", None) == "job.settle_refused"]
    assert [(r.job_id, r.code) for r in refused] == [(jobs[1].id, "STALE_LEASE")]
    assert worker.heartbeats.running() == []


def test_a_failed_carrying_call_hands_its_settles_back_to_the_completer(grpc_server, store, make_worker):
    port, notifier = grpc_server
    worker = make_worker(port, {"email_send": lambda job: "done"}, worker_max_jobs=1)
    real, failures = worker.client.settle_and_lease, []

    def failing_once_with_settles(*args):
        if args[4] and not failures:
            failures.append(len(args[4]))
            raise FakeUnavailable()
        return real(*args)

    worker.client.settle_and_lease = failing_once_with_settles
    jobs = [enqueue(store, notifier) for _ in range(3)]

    assert all(settled(store, job.id).status is JobStatus.SUCCEEDED for job in jobs)
    assert failures == [1]
    wait_until(lambda: worker.completer.backlog == 0, what="every answer handled")


class FakeUnavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "down for a moment"
