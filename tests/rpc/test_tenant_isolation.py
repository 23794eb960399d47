"""Tenant isolation over gRPC: a worker key of tenant B leases B's jobs only, and cannot
settle, extend or hand back a job of tenant A even with its lease id (NOT_FOUND, in the
words of an unknown job); a fleet worker key ("*") settles and extends whatever it holds,
of any tenant. Every method of WorkerService that names a job is walked."""

from __future__ import annotations

import dataclasses
import uuid

import grpc
import pytest

from quorra.access import ALL_TENANTS, Role
from quorra.jobs import JobStatus
from quorra.keys import KeySpec
from quorra.rpc import quorra_pb2 as pb2
from quorra.store import Store
from tests.factories import spec
from tests.rpc.support import refusal

A, B = "acme", "globex"
QUEUE = "emails"


def worker_key(store: Store, tenant: str) -> tuple[tuple[str, str], ...]:
    # model_construct: "*" is the fleet's tenant, which only the worker role may have
    # (its validation on POST /v1/keys is the keys route's business, not this test's)
    key_spec = KeySpec.model_construct(
        name=f"{tenant} worker", role=Role.WORKER, tenant=tenant, expires_in_seconds=None
    )
    return (("x-api-key", store.create_api_key(key_spec, created_by="test").secret),)


@pytest.fixture
def keys(store):
    return {tenant: worker_key(store, tenant) for tenant in (A, B, ALL_TENANTS)}


@pytest.fixture
def held(store):
    """Tenant A's job, leased to A's worker "w"."""
    store.enqueue(spec(queue=QUEUE), tenant=A)
    [job] = store.lease_jobs([QUEUE], "w", 1, 30, tenant=A)
    return job


def _ack(job, success: bool = True) -> pb2.JobAck:
    return pb2.JobAck(job_id=job.id, worker_id="w", lease_id=job.lease_id, success=success, error_message="x")


def _settlement(job) -> pb2.Settlement:
    return pb2.Settlement(job_id=job.id, lease_id=job.lease_id, success=True)


# Every method naming a job: its request for the held job, and how a NOT_FOUND shows.
CALLS = {
    "AckJob": lambda stub, job, key: stub.AckJob(_ack(job), metadata=key, timeout=10),
    "NackJob": lambda stub, job, key: stub.NackJob(_ack(job, success=False), metadata=key, timeout=10),
    "ExtendLease": lambda stub, job, key: stub.ExtendLease(
        pb2.ExtendLeaseRequest(job_id=job.id, worker_id="w", lease_id=job.lease_id, lease_ttl_seconds=30),
        metadata=key,
        timeout=10,
    ),
}
BATCHED = {
    "SettleJobs": lambda stub, job, key: (
        stub.SettleJobs(
            pb2.SettleRequest(worker_id="w", settlements=[_settlement(job)]), metadata=key, timeout=10
        ).results
    ),
    "SettleAndLease": lambda stub, job, key: (
        stub.SettleAndLease(
            pb2.SettleAndLeaseRequest(
                lease=pb2.LeaseRequest(worker_id="w", queue=QUEUE), settlements=[_settlement(job)]
            ),
            metadata=key,
            timeout=10,
        ).results
    ),
}


def test_every_method_naming_a_job_is_walked():
    methods = set(pb2.DESCRIPTOR.services_by_name["WorkerService"].methods_by_name)
    assert methods == set(CALLS) | set(BATCHED) | {"LeaseJobs"}


def test_a_worker_leases_its_tenants_jobs_only(stub, store, keys):
    theirs = store.enqueue(spec(queue=QUEUE), tenant=A)
    mine = store.enqueue(spec(queue=QUEUE), tenant=B)
    request = pb2.LeaseRequest(worker_id="w", queue=QUEUE, max_jobs=10)
    leased = list(stub.LeaseJobs(request, metadata=keys[B], timeout=10))
    assert [job.id for job in leased] == [mine.id]
    assert store.get_job(theirs.id, tenant=A).status is JobStatus.PENDING
    both = pb2.SettleAndLeaseRequest(lease=pb2.LeaseRequest(worker_id="w", queue=QUEUE, max_jobs=10))
    assert [job.id for job in stub.SettleAndLease(both, metadata=keys[B], timeout=10).jobs] == []


@pytest.mark.parametrize("method", list(CALLS))
def test_another_tenants_job_is_not_found_even_with_its_lease(stub, store, keys, held, method):
    foreign = refusal(CALLS[method], stub, held, keys[B])
    ghost = dataclasses.replace(held, id=str(uuid.uuid4()))
    missing = refusal(CALLS[method], stub, ghost, keys[B])
    assert foreign.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    assert foreign.details().replace(held.id, ghost.id) == missing.details()
    unchanged = store.get_job(held.id, tenant=A)
    assert (unchanged.status, unchanged.lease_id, unchanged.lease_expires_at) == (
        JobStatus.LEASED,
        held.lease_id,
        held.lease_expires_at,
    )


@pytest.mark.parametrize("method", list(BATCHED))
def test_a_batched_settle_of_another_tenants_job_is_not_found(stub, store, keys, held, method):
    [result] = BATCHED[method](stub, held, keys[B])
    assert (result.outcome, result.error) == (pb2.SettleResult.NOT_FOUND, f"no job has the id {held.id!r}")
    assert store.get_job(held.id, tenant=A).status is JobStatus.LEASED


@pytest.mark.parametrize("method", list(BATCHED))
def test_the_owner_settles_its_job(stub, store, keys, held, method):
    [result] = BATCHED[method](stub, held, keys[A])
    assert result.outcome == pb2.SettleResult.SETTLED
    assert store.get_job(held.id, tenant=A).status is JobStatus.SUCCEEDED


def test_a_fleet_worker_settles_and_extends_any_tenants_job_it_holds(stub, store, keys, held):
    extended = CALLS["ExtendLease"](stub, held, keys[ALL_TENANTS])
    assert extended.status == JobStatus.PROCESSING.value
    assert CALLS["AckJob"](stub, held, keys[ALL_TENANTS]).status == JobStatus.SUCCEEDED.value


def test_a_worker_is_recorded_with_its_tenant(stub, store, keys):
    request = pb2.LeaseRequest(worker_id="same-name", queue=QUEUE)
    for tenant in (A, B):
        list(stub.LeaseJobs(request, metadata=keys[tenant], timeout=10))
    since = store.database_now().replace(year=2000)
    assert [(w.id, w.tenant) for w in store.recent_workers(since, tenant=A)] == [("same-name", A)]
    assert [(w.id, w.tenant) for w in store.recent_workers(since, tenant=B)] == [("same-name", B)]
