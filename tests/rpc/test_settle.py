"""SettleJobs over a real gRPC server: many acks and nacks in one call, one result per
settlement in order, a stale or unknown lease never failing its neighbours; and the
worker_id fence on every settling verb. Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid

import grpc

from quorra.jobs import JobStatus
from quorra.rpc import quorra_pb2 as pb2
from tests import factories
from tests.rpc.support import AUTH, ack, extend, lease, nack, refusal

C = grpc.StatusCode
R = pb2.SettleResult
WORKER = "raw-stub"  # the worker_id tests.rpc.support leases with


def settle(stub, *settlements: pb2.Settlement, worker_id: str = WORKER) -> list[pb2.SettleResult]:
    request = pb2.SettleRequest(worker_id=worker_id, settlements=settlements)
    return list(stub.SettleJobs(request, metadata=AUTH, timeout=10).results)


def acked(job: pb2.Job, result_json: str = "", lease_id: str | None = None) -> pb2.Settlement:
    return pb2.Settlement(
        job_id=job.id,
        lease_id=lease_id or job.lease_id,
        success=True,
        result_json=result_json,
    )


def nacked(job: pb2.Job, error: str = "boom") -> pb2.Settlement:
    return pb2.Settlement(job_id=job.id, lease_id=job.lease_id, success=False, error_message=error)


def test_settle_jobs_acks_and_nacks_in_one_call(stub, store):
    # Given three leased jobs
    factories.make_job(store, queue="s")
    factories.make_job(store, queue="s")
    factories.make_job(store, queue="s", max_retries=0)
    first, second, last = lease(stub, "s", max_jobs=3)

    # When one call acks the first with a result, nacks the second and the last (no retries left)
    results = settle(stub, acked(first, '{"n": 1}'), nacked(second), nacked(last, "gone"))

    # Then each is settled as its own verb would, and the results come back in order
    assert [r.job_id for r in results] == [first.id, second.id, last.id]
    assert [r.outcome for r in results] == [R.SETTLED] * 3
    assert [r.status for r in results] == ["succeeded", "failed", "dead"]
    assert results[1].run_at.seconds > 0 and results[0].attempts == 1
    assert store.get_job(first.id).result == {"n": 1}
    assert store.get_job(second.id).last_error == "boom"
    assert store.get_job(last.id).status is JobStatus.DEAD


def test_a_stale_or_unknown_lease_never_fails_its_neighbours(stub, store):
    # Given two leased jobs, one of them already acked, and a job nobody knows
    for _ in range(3):
        factories.make_job(store, queue="s")
    done, fresh, wrong = lease(stub, "s", max_jobs=3)
    ack(stub, done)
    unknown = pb2.Job(id=str(uuid.uuid4()), lease_id=str(uuid.uuid4()))

    # When a batch settles the acked job again, the unknown one, a wrong lease id, and the fresh job
    results = settle(
        stub,
        acked(done),
        acked(unknown),
        acked(wrong, lease_id=str(uuid.uuid4())),
        acked(fresh),
    )

    # Then only the fresh job is settled, and each other gets its own reason
    assert [r.outcome for r in results] == [
        R.STALE_LEASE,
        R.NOT_FOUND,
        R.STALE_LEASE,
        R.SETTLED,
    ]
    assert all(r.error for r in results[:3]) and not results[3].error
    assert store.get_job(fresh.id).status is JobStatus.SUCCEEDED
    assert store.get_job(wrong.id).status is JobStatus.LEASED


def test_an_unstorable_result_is_invalid_and_its_lease_stays_usable(stub, store):
    # Given two leased jobs
    factories.make_job(store, queue="s")
    factories.make_job(store, queue="s")
    bad, good = lease(stub, "s", max_jobs=2)

    # When a batch acks one with a result no backend can store, and the other properly
    results = settle(stub, acked(bad, '{"a": NaN}'), acked(good))

    # Then the bad one is INVALID and still held (a nack can follow), the good one settled
    assert [r.outcome for r in results] == [R.INVALID, R.SETTLED]
    assert store.get_job(bad.id).status is JobStatus.LEASED
    assert nack(stub, bad).status == "failed"


def test_a_job_named_twice_in_one_batch_is_settled_once(stub, store):
    factories.make_job(store, queue="s")
    [job] = lease(stub, "s")
    results = settle(stub, acked(job), nacked(job))
    assert [r.outcome for r in results] == [R.SETTLED, R.INVALID]
    assert store.get_job(job.id).status is JobStatus.SUCCEEDED


def test_a_malformed_settle_request_settles_nothing(stub, store):
    # Given a leased job
    factories.make_job(store, queue="s")
    [job] = lease(stub, "s")
    # When a settle call has no worker_id, or no settlements
    no_worker = refusal(
        stub.SettleJobs,
        pb2.SettleRequest(settlements=[acked(job)]),
        metadata=AUTH,
        timeout=10,
    )
    empty = refusal(stub.SettleJobs, pb2.SettleRequest(worker_id=WORKER), metadata=AUTH, timeout=10)
    # Then both are INVALID_ARGUMENT and the job is still held
    assert no_worker.code() is C.INVALID_ARGUMENT and empty.code() is C.INVALID_ARGUMENT
    assert store.get_job(job.id).status is JobStatus.LEASED


def test_settle_jobs_needs_an_api_key(stub):
    request = pb2.SettleRequest(worker_id=WORKER, settlements=[pb2.Settlement(job_id="x", lease_id="y")])
    assert refusal(stub.SettleJobs, request, timeout=10).code() is C.UNAUTHENTICATED


# -- the worker_id fence (issue 8, item 9) --------------------------------------------------------


def test_a_worker_that_does_not_hold_the_lease_cannot_settle_or_extend_it(stub, store):
    # Given a job leased by one worker
    factories.make_job(store, queue="s")
    [job] = lease(stub, "s")

    # When another worker presents the right lease id
    def as_intruder(call, request):
        return refusal(call, request, metadata=AUTH, timeout=10)

    refused = [
        as_intruder(
            stub.AckJob,
            pb2.JobAck(job_id=job.id, worker_id="intruder", lease_id=job.lease_id),
        ),
        as_intruder(
            stub.NackJob,
            pb2.JobAck(job_id=job.id, worker_id="intruder", lease_id=job.lease_id),
        ),
        as_intruder(
            stub.ExtendLease,
            pb2.ExtendLeaseRequest(job_id=job.id, worker_id="intruder", lease_id=job.lease_id),
        ),
    ]
    results = settle(stub, acked(job), worker_id="intruder")

    # Then every verb is refused as a stale lease, and the holder can still settle it
    assert [error.code() for error in refused] == [C.FAILED_PRECONDITION] * 3
    assert results[0].outcome == R.STALE_LEASE
    assert extend(stub, job).status == "processing"
    assert ack(stub, job).status == "succeeded"
