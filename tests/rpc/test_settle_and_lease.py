"""SettleAndLease over a real gRPC server: the settlements are applied as SettleJobs applies
them, then jobs are leased as LeaseJobs leases them, and both come back in one reply; the
server's drain ledger learns from it. Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid

import grpc

from quorra.jobs import JobStatus
from quorra.rpc import quorra_pb2 as pb2
from tests import factories
from tests.rpc.support import AUTH, lease, refusal, rpc_settings, running_server, stub_on
from tests.rpc.test_settle import WORKER, acked, nacked

C = grpc.StatusCode
R = pb2.SettleResult


def settle_and_lease(
    stub, queue: str, *settlements: pb2.Settlement, max_jobs: int = 1, wait: float = 0.0, worker_id: str = WORKER
) -> pb2.SettleAndLeaseResponse:
    request = pb2.SettleAndLeaseRequest(
        lease=pb2.LeaseRequest(worker_id=worker_id, queues=[queue], max_jobs=max_jobs, wait_seconds=wait),
        settlements=settlements,
    )
    return stub.SettleAndLease(request, metadata=AUTH, timeout=wait + 10)


def test_settles_then_leases_in_one_call(stub, store):
    # Given two leased jobs and two more waiting
    for _ in range(4):
        factories.make_job(store, queue="sl")
    done, failed = lease(stub, "sl", max_jobs=2)

    # When one call acks the first, nacks the second and asks for up to 5 more
    reply = settle_and_lease(stub, "sl", acked(done, '{"n": 1}'), nacked(failed), max_jobs=5)

    # Then both are settled, with one result each in order, and the two waiting jobs come back leased
    assert [(r.job_id, r.outcome, r.status) for r in reply.results] == [
        (done.id, R.SETTLED, "succeeded"),
        (failed.id, R.SETTLED, "failed"),
    ]
    assert store.get_job(done.id).result == {"n": 1}
    assert len(reply.jobs) == 2 and {job.id for job in reply.jobs}.isdisjoint({done.id, failed.id})
    for job in reply.jobs:
        held = store.get_job(job.id)
        assert (held.status, held.lease_id, held.leased_by) == (JobStatus.LEASED, job.lease_id, WORKER)


def test_a_stale_or_invalid_settlement_never_fails_the_others_or_the_lease(stub, store):
    factories.make_job(store, queue="sl")
    factories.make_job(store, queue="sl")
    [job] = lease(stub, "sl")
    unknown = pb2.Job(id=str(uuid.uuid4()), lease_id=str(uuid.uuid4()))

    reply = settle_and_lease(
        stub, "sl", acked(job, '{"a": NaN}'), acked(unknown), acked(job, lease_id=str(uuid.uuid4()))
    )

    assert [r.outcome for r in reply.results] == [R.INVALID, R.NOT_FOUND, R.STALE_LEASE]
    assert store.get_job(job.id).status is JobStatus.LEASED
    assert len(reply.jobs) == 1


def test_without_settlements_it_is_a_lease_with_a_long_poll(stub, store):
    # Given nothing to lease yet
    reply = settle_and_lease(stub, "sl-empty")
    assert list(reply.results) == [] and list(reply.jobs) == []

    # When a job arrives while a call waits
    answers: list[pb2.SettleAndLeaseResponse] = []
    waiting = threading.Thread(target=lambda: answers.append(settle_and_lease(stub, "sl-empty", wait=5.0)))
    waiting.start()
    time.sleep(0.3)
    job = factories.make_job(store, queue="sl-empty")
    waiting.join(10)

    # Then the waiting call gets it
    assert [j.id for j in answers[0].jobs] == [job.id]


def test_a_malformed_request_settles_nothing(stub, store):
    factories.make_job(store, queue="sl")
    [job] = lease(stub, "sl")
    no_worker = pb2.SettleAndLeaseRequest(lease=pb2.LeaseRequest(queue="sl"), settlements=[acked(job)])
    too_many = pb2.SettleAndLeaseRequest(
        lease=pb2.LeaseRequest(worker_id=WORKER, queue="sl"), settlements=[acked(job)] * 1001
    )
    for request in (no_worker, too_many):
        assert refusal(stub.SettleAndLease, request, metadata=AUTH, timeout=10).code() is C.INVALID_ARGUMENT
    assert store.get_job(job.id).status is JobStatus.LEASED
    unauthenticated = refusal(stub.SettleAndLease, too_many, timeout=10)
    assert unauthenticated.code() is C.UNAUTHENTICATED


def test_the_fence_holds_a_lease_to_the_worker_it_went_to(stub, store):
    factories.make_job(store, queue="sl")
    [job] = lease(stub, "sl")
    reply = settle_and_lease(stub, "sl", acked(job), worker_id="another-worker")
    assert [r.outcome for r in reply.results] == [R.STALE_LEASE]
    assert store.get_job(job.id).status is JobStatus.LEASED


def test_a_draining_server_refuses_it_as_a_lease_and_counts_its_leases(settings, store, notifier):
    # Given a job delivered by SettleAndLease
    factories.make_job(store, queue="sl-drain")
    with running_server(rpc_settings(settings), store, notifier) as (server, port), stub_on(port) as stub:
        [job] = settle_and_lease(stub, "sl-drain").jobs
        assert server.ledger.outstanding() == 1

        # When the server is told to stop
        stopper = threading.Thread(target=server.stop, args=(30,))
        stopper.start()
        deadline = time.monotonic() + 10
        while not server.gate.draining and time.monotonic() < deadline:
            time.sleep(0.01)

        # Then another SettleAndLease is refused (its settlements would go by SettleJobs)...
        refused = refusal(settle_and_lease, stub, "sl-drain", acked(job))
        # ...and the server stops as soon as the delivered lease is settled
        settled = stub.SettleJobs(pb2.SettleRequest(worker_id=WORKER, settlements=[acked(job)]), metadata=AUTH)
        stopper.join(25)

    assert refused.code() is C.UNAVAILABLE
    assert [r.outcome for r in settled.results] == [R.SETTLED]
    assert not stopper.is_alive()
