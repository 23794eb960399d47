"""The Python client's dependencies and workflows, against the real app on each backend."""

from __future__ import annotations

import asyncio

import pytest

from quorra.client import InvalidArgument, JobStatus


def test_enqueue_with_depends_on_waits_blocked_and_shows_its_links(client, served):
    parent = client.enqueue("sleep", {"seconds": 1})
    child = client.enqueue("email_send", {"to": "ops@example.com"}, depends_on=[parent.id], on_parent_failure="run")
    assert child.status is JobStatus.BLOCKED
    read = client.get(child.id)
    assert (read.depends_on, read.pending_parents, read.on_parent_failure) == ((parent.id,), 1, "run")
    assert client.get(parent.id).dependants == (child.id,)
    served.finish(served.store.get_job(parent.id))
    assert client.get(child.id).status is JobStatus.PENDING


def test_submit_workflow_answers_the_ids_by_ref_and_workflow_the_whole(client, served):
    flow = client.submit_workflow(
        [
            {"ref": "fetch", "type": "sleep", "payload": {"seconds": 1}},
            {"ref": "resize", "type": "sleep", "payload": {"seconds": 1}, "depends_on": ["fetch"]},
            {"ref": "notify", "type": "email_send", "payload": {"to": "ops@example.com"}, "depends_on": ["resize"]},
        ],
        name="nightly",
    )
    assert (flow.status, set(flow.job_ids)) == ("running", {"fetch", "resize", "notify"})
    whole = client.workflow(flow.id)
    assert (whole.name, whole.status, whole.counts) == ("nightly", "running", {"pending": 1, "blocked": 2})
    assert {job.ref: job.status for job in whole.jobs}["notify"] is JobStatus.BLOCKED
    for ref in ("fetch", "resize", "notify"):
        served.finish(served.store.get_job(flow.job_ids[ref]))
    done = client.workflow(flow.id)
    assert (done.status, done.is_finished, done.counts) == ("succeeded", True, {"succeeded": 3})


def test_a_cycle_is_an_invalid_argument(client):
    with pytest.raises(InvalidArgument, match="cycle"):
        client.submit_workflow([{"ref": "a", "type": "t", "payload": {}, "depends_on": ["a"]}])


def test_the_async_client_submits_and_reads_workflows(async_client_factory):
    async def run():
        async with async_client_factory() as client:
            flow = await client.submit_workflow([{"ref": "a", "type": "t", "payload": {}}])
            return (await client.workflow(flow.id)).counts

    assert asyncio.run(run()) == {"pending": 1}
