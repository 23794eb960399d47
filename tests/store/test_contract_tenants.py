"""Tenants, on both backends: two tenants with a queue of the same name each see and act on
their own jobs only. Another tenant's job, workflow or lease is not found, exactly as a
missing one (no existence leak); lists, counts and statistics hold one tenant's jobs; a
unique slot, a parent named by depends_on and an idempotency key are within the tenant."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from quorra.access import ALL_TENANTS, DEFAULT_TENANT
from quorra.errors import InvalidJobSpec, JobNotFound, WorkflowNotFound
from quorra.jobs import JobStatus
from quorra.store import JobFilter, Settlement, SettleOutcome, Store, WorkerSighting
from quorra.workflows import parse_workflow
from tests.factories import spec
from tests.store.support import later

A, B = "acme", "globex"
QUEUE = "emails"  # the same name in both tenants: two queues


def submit(store: Store, tenant: str, **overrides):
    return store.enqueue(spec(**({"queue": QUEUE} | overrides)), tenant=tenant)


def leased(store: Store, tenant: str, **overrides):
    job = submit(store, tenant, **overrides)
    [got] = store.lease_jobs([QUEUE], f"worker-{tenant}", 1, 30, tenant=tenant)
    assert got.id == job.id
    return got


def dead(store: Store, tenant: str):
    job = leased(store, tenant, max_retries=0)
    return store.nack(job.id, job.lease_id, "boom", tenant=tenant)


def test_a_job_is_written_with_its_tenant_and_read_by_it_only(store):
    job = submit(store, A)
    assert job.tenant == A
    assert store.get_job(job.id, tenant=A).tenant == A
    ghost = str(uuid.uuid4())
    with pytest.raises(JobNotFound) as foreign:
        store.get_job(job.id, tenant=B)
    with pytest.raises(JobNotFound) as missing:
        store.get_job(ghost, tenant=B)
    assert foreign.value.message.replace(job.id, ghost) == missing.value.message
    with pytest.raises(JobNotFound):
        store.job_attempts(job.id, tenant=B)


def test_every_submit_path_writes_the_tenant(store):
    plain = store.enqueue_many([spec(queue=QUEUE)] * 2, tenant=A)
    keyed = store.submit_many([spec(queue=QUEUE, idempotency_key="k1")], scope="s", tenant=A)
    unique = store.submit_many([spec(queue=QUEUE, unique={"key": "u"})], tenant=A)
    child = store.enqueue(spec(queue=QUEUE, depends_on=[plain[0].id]), tenant=A)
    workflow, members = store.submit_workflow(_plan(), tenant=A)
    created = [*plain, keyed[0].job, unique[0].job, child, *members]
    assert {store.get_job(job.id, tenant=A).tenant for job in created} == {A}
    assert {job.tenant for job in created} == {A}
    assert store.get_workflow(workflow.id, tenant=A).workflow.id == workflow.id


def test_a_deployment_without_tenants_is_the_default_tenants(store):
    job = store.enqueue(spec(queue=QUEUE))
    assert job.tenant == DEFAULT_TENANT
    assert store.get_job(job.id).id == job.id
    assert [j.id for j in store.list_jobs().jobs] == [job.id]


def test_lists_and_counts_hold_one_tenants_jobs(store):
    mine = [submit(store, A) for _ in range(3)]
    theirs = submit(store, B)
    assert {job.id for job in store.list_jobs(tenant=A).jobs} == {job.id for job in mine}
    assert [job.id for job in store.list_jobs(tenant=B, queue=QUEUE, status="pending").jobs] == [theirs.id]
    assert store.list_jobs(tenant=B, job_id=mine[0].id).jobs == []
    assert [job.id for job in store.list_jobs(tenant=B, payload_contains="example").jobs] == [theirs.id]
    assert [job.id for job in store.list_jobs(tenant=B, bodies=True, max_bytes=10_000).jobs] == [theirs.id]
    assert [(c.queue, c.status, c.count) for c in store.queue_counts(tenant=A)] == [(QUEUE, "pending", 3)]
    assert [(c.queue, c.count, c.tenant) for c in store.queue_counts(tenant=B)] == [(QUEUE, 1, B)]
    assert {(c.tenant, c.count) for c in store.queue_counts(tenant=ALL_TENANTS)} == {(A, 3), (B, 1)}
    assert set(store.oldest_ready_at(tenant=A)) == {QUEUE}
    assert store.oldest_ready_at(tenant="nobody") == {}
    assert set(store.oldest_ready_by_tenant()) == {(A, QUEUE), (B, QUEUE)}


def test_a_lease_takes_its_tenants_jobs_only(store):
    theirs = submit(store, B)
    mine = submit(store, A)
    got = store.lease_jobs([QUEUE], "w", 10, 30, tenant=A)
    assert [job.id for job in got] == [mine.id]
    assert store.get_job(theirs.id, tenant=B).status is JobStatus.PENDING


def test_pausing_a_tenants_queue_leaves_the_same_named_queue_of_another(store):
    submit(store, A)
    theirs = submit(store, B)
    store.set_queue_paused(QUEUE, True, tenant=A)
    assert store.lease_jobs([QUEUE], "w", 10, 30, tenant=A) == []
    assert [job.id for job in store.lease_jobs([QUEUE], "w", 10, 30, tenant=B)] == [theirs.id]
    assert set(store.paused_queues(tenant=A)) == {QUEUE}
    assert store.paused_queues(tenant=B) == {}
    assert set(store.paused_by_tenant()) == {(A, QUEUE)}


def test_another_tenants_job_cannot_be_cancelled_retried_or_deleted(store):
    pending, dead_one = submit(store, A, queue="later"), dead(store, A)
    with pytest.raises(JobNotFound):
        store.cancel(pending.id, tenant=B)
    with pytest.raises(JobNotFound):
        store.retry(dead_one.id, tenant=B)
    with pytest.raises(JobNotFound):
        store.delete_job(dead_one.id, tenant=B)
    assert store.get_job(pending.id, tenant=A).status is JobStatus.PENDING
    assert store.get_job(dead_one.id, tenant=A).status is JobStatus.DEAD
    assert store.cancel(pending.id, tenant=A).status is JobStatus.CANCELLED
    assert store.retry(dead_one.id, tenant=A).status is JobStatus.PENDING


def test_bulk_actions_choose_the_filters_tenant_only(store):
    mine, theirs = dead(store, A), dead(store, B)
    assert store.retry_matching(JobFilter(QUEUE, JobStatus.DEAD, tenant=A)) == {"email_send": 1}
    assert store.get_job(mine.id, tenant=A).status is JobStatus.PENDING
    assert store.get_job(theirs.id, tenant=B).status is JobStatus.DEAD
    assert store.retry_dead(QUEUE, tenant="nobody") == {}
    assert store.delete_matching(JobFilter(QUEUE, JobStatus.DEAD, tenant=A)) == 0
    assert store.delete_matching(JobFilter(QUEUE, JobStatus.DEAD, tenant=B)) == 1
    with pytest.raises(JobNotFound):
        store.get_job(theirs.id, tenant=B)


def test_a_unique_job_holds_its_slot_within_its_tenant_only(store):
    unique = {"key": "nightly-report"}
    [first] = store.submit_many([spec(queue=QUEUE, unique=unique)], tenant=A)
    [again] = store.submit_many([spec(queue=QUEUE, unique=unique)], tenant=A)
    [other] = store.submit_many([spec(queue=QUEUE, unique=unique)], tenant=B)
    [one_by_one] = store.submit_many([spec(queue=QUEUE, unique=unique), spec(queue=QUEUE)], tenant=B)[:1]
    assert first.created and not again.created and again.job.id == first.job.id
    assert other.created and other.job.tenant == B
    assert not one_by_one.created and one_by_one.job.id == other.job.id
    # the default tenant's slot is spelt as before tenants, so jobs submitted then keep theirs
    before_tenants = json.dumps({"key": "nightly-report", "type": "email_send"}, separators=(",", ":"))
    assert spec(unique=unique).unique_key(tenant=DEFAULT_TENANT) == hashlib.sha256(before_tenants.encode()).hexdigest()
    assert spec(unique=unique).unique_key(tenant=A) != spec(unique=unique).unique_key(tenant=B)


def test_depending_on_another_tenants_job_is_depending_on_an_unknown_job(store):
    theirs = submit(store, B)
    with pytest.raises(InvalidJobSpec) as foreign:
        store.enqueue(spec(queue=QUEUE, depends_on=[theirs.id]), tenant=A)
    ghost = str(uuid.uuid4())
    with pytest.raises(InvalidJobSpec) as unknown:
        store.enqueue(spec(queue=QUEUE, depends_on=[ghost]), tenant=A)
    assert foreign.value.details == [{"field": "depends_on", "message": f"no job has the id {theirs.id}"}]
    assert foreign.value.message.replace(theirs.id, ghost) == unknown.value.message
    assert not store.get_job(theirs.id, tenant=B).has_dependants
    assert store.list_jobs(tenant=A).jobs == []


def test_an_idempotency_key_lives_within_its_tenant(store):
    [first] = store.submit_many([spec(queue=QUEUE, idempotency_key="k")], scope="same-subject", tenant=A)
    [replay] = store.submit_many([spec(queue=QUEUE, idempotency_key="k")], scope="same-subject", tenant=A)
    [other] = store.submit_many([spec(queue=QUEUE, idempotency_key="k")], scope="same-subject", tenant=B)
    assert replay.job.id == first.job.id and not replay.created
    assert other.created and other.job.tenant == B


def test_another_tenants_lease_cannot_be_settled_extended_or_released(store):
    job = leased(store, A)
    results = store.settle_many([Settlement(job.id, job.lease_id, success=True)], tenant=B)
    assert [(r.outcome, r.error) for r in results] == [(SettleOutcome.NOT_FOUND, f"no job has the id {job.id!r}")]
    with pytest.raises(JobNotFound):
        store.ack(job.id, job.lease_id, tenant=B)
    with pytest.raises(JobNotFound):
        store.nack(job.id, job.lease_id, "x", tenant=B)
    with pytest.raises(JobNotFound):
        store.extend_lease(job.id, job.lease_id, 30, tenant=B)
    with pytest.raises(JobNotFound):
        store.release(job.id, job.lease_id, tenant=B)
    unchanged = store.get_job(job.id, tenant=A)
    assert (unchanged.status, unchanged.lease_id, unchanged.lease_expires_at) == (
        JobStatus.LEASED,
        job.lease_id,
        job.lease_expires_at,
    )
    assert store.ack(job.id, job.lease_id, tenant=A).status is JobStatus.SUCCEEDED


def test_a_fleet_worker_settles_and_extends_any_tenants_job_it_holds(store):
    mine, theirs = leased(store, A), leased(store, B)
    assert store.extend_lease(mine.id, mine.lease_id, 30, tenant=ALL_TENANTS).status is JobStatus.PROCESSING
    settled = store.settle_many(
        [Settlement(mine.id, mine.lease_id, success=True), Settlement(theirs.id, theirs.lease_id, success=False)],
        tenant=ALL_TENANTS,
    )
    assert [result.outcome for result in settled] == [SettleOutcome.SETTLED, SettleOutcome.SETTLED]


def test_a_workflow_is_its_tenants(store):
    workflow, _ = store.submit_workflow(_plan(), tenant=A)
    with pytest.raises(WorkflowNotFound):
        store.get_workflow(workflow.id, tenant=B)
    assert store.get_workflow(workflow.id, tenant=A).workflow.id == workflow.id


def test_throughput_counts_one_tenants_attempts(store):
    for tenant in (A, A, B):
        job = leased(store, tenant)
        store.ack(job.id, job.lease_id, tenant=tenant)
    since = later(store, -3600)
    assert [(c.queue, c.succeeded) for c in store.throughput(since, tenant=A)] == [(QUEUE, 2)]
    assert [(c.queue, c.succeeded) for c in store.throughput(since, tenant=B)] == [(QUEUE, 1)]
    assert store.throughput(since) == []


def test_workers_are_their_tenants_and_the_fleets(store):
    store.record_workers(
        [
            WorkerSighting("w1", queues=(QUEUE,), tenant=A),
            WorkerSighting("w1", queues=("other",), tenant=B),
            WorkerSighting("fleet", queues=("shared",), tenant=ALL_TENANTS),
        ]
    )
    held = leased(store, B)  # leased by worker-globex, counted for B only
    since = later(store, -60)
    assert {(w.id, w.tenant, tuple(w.queues)) for w in store.recent_workers(since, tenant=A)} == {
        ("w1", A, (QUEUE,)),
        ("fleet", ALL_TENANTS, ("shared",)),
    }
    assert store.queues_served_since(since, tenant=B) == {"other", "shared"}
    store.record_workers([WorkerSighting(held.leased_by, tenant=B)])
    counted = {w.id: w.jobs_in_flight for w in store.recent_workers(since, tenant=B)}
    assert counted[held.leased_by] == 1
    assert held.leased_by not in {w.id for w in store.recent_workers(since, tenant=A)}


def _plan():
    return parse_workflow(
        {
            "name": "two-step",
            "jobs": [
                {"ref": "first", "type": "t", "payload": {}, "queue": QUEUE},
                {"ref": "second", "type": "t", "payload": {}, "queue": QUEUE, "depends_on": ["first"]},
            ],
        }
    )
