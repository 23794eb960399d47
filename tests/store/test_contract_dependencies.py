"""Dependencies and workflows, on both backends: a dependant waits blocked until its parents
succeed and is released in the transaction that settles the last one; failed parents cancel
(or release, with on_parent_failure="run") their dependants, down the cascade; a retried
parent brings them back; a workflow completes once."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from quorra.errors import IllegalTransition, InvalidJobSpec
from quorra.jobs import JobStatus
from quorra.store import Effects, Settlement, Store
from quorra.workflows import WorkflowStatus, parse_workflow
from tests.factories import dead_job, dependant_of, leased_job, make_job, spec, succeeded_job
from tests.store.support import later, lease_one

S = JobStatus


def _ack(store: Store, job, result=None, effects: Effects | None = None):
    return store.settle_many([Settlement(job.id, job.lease_id, True, result)], effects=effects)[0].job_or_raise()


def _nack(store: Store, job, effects: Effects | None = None):
    return store.settle_many([Settlement(job.id, job.lease_id, False, error="boom")], effects=effects)[0].job


def test_a_dependant_waits_blocked_and_is_released_by_the_settle_of_its_last_parent(store):
    # Given a job that depends on two leased jobs
    first, second = leased_job(store), leased_job(store)
    child = dependant_of(store, first, second)
    assert (child.status, child.pending_parents) == (S.BLOCKED, 2)
    assert store.lease_jobs([child.queue], "w", 10, 30) == []  # blocked jobs are never leased
    # When the first parent succeeds, the child still waits
    effects = Effects()
    _ack(store, first, effects=effects)
    assert (store.get_job(child.id).status, store.get_job(child.id).pending_parents) == (S.BLOCKED, 1)
    assert effects.dependants == []
    # When the second succeeds, the same settle releases it
    _ack(store, second, effects=effects)
    released = store.get_job(child.id)
    assert (released.status, released.pending_parents) == (S.PENDING, 0)
    assert [job.id for job in effects.dependants] == [child.id]
    # Then it is leased with its parents' outcomes
    leased = lease_one(store, child.queue)
    assert {parent.id: parent.status for parent in leased.parents} == {first.id: S.SUCCEEDED, second.id: S.SUCCEEDED}


def test_parents_settled_in_one_batch_release_their_dependant_once(store):
    # Given a dependant of three jobs leased together
    queue = f"batch-{uuid.uuid4().hex[:8]}"
    parents = store.enqueue_many([spec(queue=queue)] * 3)
    child = dependant_of(store, *parents)
    leased = store.lease_jobs([queue], "w", 3, 30)
    # When one settle acks all three
    effects = Effects()
    store.settle_many(
        [Settlement(job.id, job.lease_id, True, {"n": n}) for n, job in enumerate(leased)], effects=effects
    )
    # Then the dependant is pending, reported once
    assert store.get_job(child.id).status is S.PENDING
    assert [job.id for job in effects.dependants] == [child.id]


def test_a_succeeded_parent_counts_as_met_at_submit(store):
    parent = succeeded_job(store)
    child = dependant_of(store, parent)
    assert (child.status, child.pending_parents) == (S.PENDING, 0)
    assert lease_one(store, child.queue).parents[0].result == {"ok": True}


def test_an_unknown_parent_is_refused_naming_it_and_nothing_is_created(store):
    known, unknown = make_job(store), str(uuid.uuid4())
    with pytest.raises(InvalidJobSpec) as refused:
        store.enqueue_many([spec(queue="never"), spec(queue="never", depends_on=[known.id, unknown])])
    assert unknown in refused.value.message
    assert refused.value.details == [{"field": "depends_on", "message": f"no job has the id {unknown}"}]
    assert [count.queue for count in store.queue_counts()] == [known.queue]


def test_a_dead_parent_cancels_its_dependants_down_the_cascade(store):
    # Given parent -> child -> grandchild, and a child that runs anyway
    parent = leased_job(store, max_retries=0)
    child = dependant_of(store, parent)
    grandchild = dependant_of(store, child)
    runs_anyway = dependant_of(store, parent, on_parent_failure="run")
    # When the parent's only attempt fails
    effects = Effects()
    assert _nack(store, parent, effects).status is S.DEAD
    # Then the child is cancelled naming the parent, and so is the grandchild (naming the child)
    assert (store.get_job(child.id).status, store.get_job(child.id).last_error) == (
        S.CANCELLED,
        f"parent {parent.id} is dead",
    )
    assert store.get_job(grandchild.id).last_error == f"parent {child.id} is cancelled"
    # And the job that runs anyway is released, seeing the parent dead
    assert {job.id: job.status for job in effects.dependants} == {
        child.id: S.CANCELLED,
        grandchild.id: S.CANCELLED,
        runs_anyway.id: S.PENDING,
    }
    [outcome] = lease_one(store, runs_anyway.queue).parents
    assert (outcome.status, outcome.last_error) == (S.DEAD, "boom")


def test_dependants_of_a_retried_dead_parent_wake_when_it_finally_succeeds(store):
    # Given a dead parent whose dependant and grand-dependant were cancelled
    parent = leased_job(store, max_retries=0)
    child = dependant_of(store, parent)
    grandchild = dependant_of(store, child)
    _nack(store, parent)
    # When the parent is retried from the dead-letter queue
    effects = Effects()
    store.retry(parent.id, effects=effects)
    # Then both are blocked again, waiting as before
    for job in (child, grandchild):
        again = store.get_job(job.id)
        assert (again.status, again.pending_parents, again.last_error, again.finished_at) == (S.BLOCKED, 1, None, None)
    assert {job.id for job in effects.dependants} == {child.id, grandchild.id}
    # And when it succeeds the child is released
    _ack(store, lease_one(store, parent.queue))
    assert store.get_job(child.id).status is S.PENDING
    assert store.get_job(grandchild.id).status is S.BLOCKED


def test_retry_dead_in_bulk_brings_dependants_back(store):
    parent = dead_job(store)
    child = dependant_of(store, parent)  # a dead parent at submit: cancelled at once
    assert (child.status, child.last_error) == (S.CANCELLED, f"parent {parent.id} is dead")
    store.retry_dead(parent.queue)
    assert store.get_job(child.id).status is S.BLOCKED


def test_a_dependant_with_another_failed_parent_stays_cancelled_on_retry(store):
    first, second = leased_job(store, max_retries=0), leased_job(store, max_retries=0)
    child = dependant_of(store, first, second)
    _nack(store, first)
    _nack(store, second)
    store.retry(first.id)
    assert store.get_job(child.id).status is S.CANCELLED
    with pytest.raises(IllegalTransition, match=f"parent {second.id} is dead"):
        store.retry(child.id)
    store.retry(second.id)
    assert store.get_job(child.id).status is S.BLOCKED


def test_cancelling_a_parent_applies_each_dependants_policy(store):
    parent = make_job(store)
    cancelled = dependant_of(store, parent)
    runs = dependant_of(store, parent, on_parent_failure="run")
    store.cancel(parent.id)
    assert store.get_job(cancelled.id).status is S.CANCELLED
    assert store.get_job(runs.id).status is S.PENDING
    # A job submitted on an already cancelled parent gets its policy at once
    assert dependant_of(store, parent).status is S.CANCELLED
    assert dependant_of(store, parent, on_parent_failure="run").status is S.PENDING


def test_a_person_cancels_a_blocked_job_and_retries_it_back_to_blocked(store):
    parent = make_job(store)
    child = dependant_of(store, parent)
    store.cancel(child.id)
    assert store.retry(child.id).status is S.BLOCKED
    # A person's cancel is not undone by the parent: only retry brings it back
    store.cancel(child.id)
    _ack(store, lease_one(store, parent.queue))
    assert store.get_job(child.id).status is S.CANCELLED


def test_a_reaped_lease_out_of_retries_cancels_dependants(store):
    parent = leased_job(store, max_retries=0, ttl_seconds=1)
    child = dependant_of(store, parent)
    effects = Effects()
    [reaped] = store.reap_expired_leases(now=later(store, 60), effects=effects)
    assert reaped.status is S.DEAD
    assert store.get_job(child.id).status is S.CANCELLED
    assert [job.id for job in effects.dependants] == [child.id]


def test_links_show_parents_and_dependants(store):
    parent = make_job(store)
    child = dependant_of(store, parent)
    assert store.links(child.id) == ([parent.id], [])
    assert store.links(parent.id) == ([], [child.id])


def test_prune_keeps_a_parent_while_a_dependant_has_not_finished(store):
    parent = succeeded_job(store)
    child = dependant_of(store, parent)
    assert store.prune(later(store, 3600)) == 0
    _ack(store, lease_one(store, child.queue))
    assert store.prune(later(store, 3600)) == 2
    assert store.links(child.id) == ([], [])


def _workflow(store: Store, body: dict):
    return store.submit_workflow(parse_workflow(body))


def test_a_workflow_is_created_whole_and_completes_once(store):
    # Given a diamond: a -> (b, c) -> d
    queue = f"wf-{uuid.uuid4().hex[:8]}"
    job = {"type": "step", "payload": {}, "queue": queue}
    body = {
        "name": "diamond",
        "jobs": [
            job | {"ref": "d", "depends_on": ["b", "c"]},
            job | {"ref": "b", "depends_on": ["a"]},
            job | {"ref": "c", "depends_on": ["a"]},
            job | {"ref": "a"},
        ],
    }
    workflow, jobs = _workflow(store, body)
    by_ref = {job.ref: job for job in jobs}
    assert {ref: job.status for ref, job in by_ref.items()} == {
        "a": S.PENDING,
        "b": S.BLOCKED,
        "c": S.BLOCKED,
        "d": S.BLOCKED,
    }
    assert {job.workflow_id for job in jobs} == {workflow.id}
    # When every job runs in turn
    completions = []
    while leased := store.lease_jobs([queue], "w", 10, 30):
        effects = Effects()
        store.settle_many([Settlement(j.id, j.lease_id, True, j.ref) for j in leased], effects=effects)
        completions += effects.workflows
    # Then the workflow completed exactly once, succeeded
    assert [(w.id, w.status) for w in completions] == [(workflow.id, WorkflowStatus.SUCCEEDED)]
    view = store.get_workflow(workflow.id)
    assert (view.status, view.counts, view.workflow.finished_at is not None) == (
        WorkflowStatus.SUCCEEDED,
        {"succeeded": 4},
        True,
    )


def test_a_workflow_with_an_unknown_parent_creates_nothing(store):
    body = {"jobs": [{"ref": "a", "type": "t", "payload": {}, "depends_on": [str(uuid.uuid4())]}]}
    with pytest.raises(InvalidJobSpec):
        _workflow(store, body)
    assert store.queue_counts() == []


def test_a_failed_workflow_reopens_when_its_dead_job_is_retried(store):
    queue = f"wf-{uuid.uuid4().hex[:8]}"
    job = {"type": "step", "payload": {}, "queue": queue, "max_retries": 0}
    workflow, _ = _workflow(store, {"jobs": [job | {"ref": "a"}, job | {"ref": "b", "depends_on": ["a"]}]})
    effects = Effects()
    _nack(store, lease_one(store, queue), effects)
    assert [(w.id, w.status) for w in effects.workflows] == [(workflow.id, WorkflowStatus.FAILED)]
    [a] = [j for j in store.get_workflow(workflow.id).jobs if j.ref == "a"]
    store.retry(a.id)
    assert store.get_workflow(workflow.id).workflow.status is WorkflowStatus.RUNNING
    assert store.get_workflow(workflow.id).status is WorkflowStatus.RUNNING


@pytest.mark.postgres
def test_concurrent_settles_of_many_parents_release_their_child_exactly_once(postgres_url):
    # Given one child of 200 parents (and a second child of the same parents), leased
    store = Store.from_url(postgres_url, pool_size=16)
    try:
        queue = "fan-in"
        parents = store.enqueue_many([spec(queue=queue)] * 200)
        children = [dependant_of(store, *parents, queue="children"), dependant_of(store, *parents, queue="children")]
        leased = store.lease_jobs([queue], "w", 200, 300)
        assert len(leased) == 200
        # When 16 threads ack them at once, in batches of 1 to 5, in different orders
        batches, seen = [], 0
        while seen < 200:
            size = 1 + seen % 5
            batches.append(leased[seen : seen + size])
            seen += size
        batches = batches[::2] + batches[1::2][::-1]
        start = threading.Barrier(16)
        released: list = []
        lock = threading.Lock()

        def settle(worker: int) -> None:
            start.wait(timeout=60)
            for batch in batches[worker::16]:
                effects = Effects()
                results = store.settle_many([Settlement(j.id, j.lease_id, True) for j in batch], effects=effects)
                assert all(result.job is not None for result in results)
                with lock:
                    released.extend(job.id for job in effects.dependants)

        with ThreadPoolExecutor(16) as pool:
            for future in [pool.submit(settle, n) for n in range(16)]:
                future.result(timeout=300)
        # Then each child was released exactly once, by whichever settle was last
        assert sorted(released) == sorted(child.id for child in children)
        for child in children:
            assert (store.get_job(child.id).status, store.get_job(child.id).pending_parents) == (S.PENDING, 0)
    finally:
        store.close()
