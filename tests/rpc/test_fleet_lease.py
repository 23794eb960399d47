"""A fleet worker key (tenant "*") over gRPC leases every tenant's jobs of its queues, the
tenants in turns (quorra.store.ready), and settles them."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from quorra.access import ALL_TENANTS, Role
from quorra.keys import KeySpec
from quorra.rpc import quorra_pb2 as pb2
from tests.factories import spec

QUEUE = "emails"


def test_a_fleet_worker_leases_a_small_tenants_jobs_beside_a_flooded_ones(stub, store):
    # Given tenant A's 50 older jobs and tenant B's 2 newer ones, and a fleet worker's key
    older = store.database_now() - timedelta(hours=1)
    store.enqueue_many([spec(queue=QUEUE) for _ in range(50)], tenant="acme", now=older)
    small = {job.id for job in store.enqueue_many([spec(queue=QUEUE) for _ in range(2)], tenant="globex")}
    fleet = KeySpec.model_construct(name="fleet", role=Role.WORKER, tenant=ALL_TENANTS, expires_in_seconds=None)
    key = (("x-api-key", store.create_api_key(fleet, created_by="test").secret),)
    # When it leases 4 jobs over gRPC and acks them
    request = pb2.LeaseRequest(worker_id="fleet-1", queue=QUEUE, max_jobs=4)
    leased = list(stub.LeaseJobs(request, metadata=key, timeout=10))
    for job in leased:
        stub.AckJob(pb2.JobAck(job_id=job.id, worker_id="fleet-1", lease_id=job.lease_id, success=True), metadata=key)
    # Then the tenants took turns: both of B's jobs and two of A's, all settled
    assert small <= {job.id for job in leased}
    tenants = Counter(store.get_job(job.id, tenant=ALL_TENANTS).tenant for job in leased)
    assert tenants == {"acme": 2, "globex": 2}
    assert {store.get_job(job.id, tenant=ALL_TENANTS).status.value for job in leased} == {"succeeded"}
