"""wait(): the client's and the server's side of GET /v1/jobs/{id}?wait=, sync and asyncio,
on both backends. Jobs are finished from another thread once the wait is under way."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from quorra.api.waits import MAX_WAIT_SECONDS, JobWaits
from quorra.client import JobStatus, NotFound, WaitTimeout
from quorra.jobs import JobStatus as ServerStatus
from quorra.store import Settlement
from tests.api.conftest import AUTH
from tests.factories import make_job

DEADLINE_SECONDS = 60  # generous: a busy machine is slow, not wrong


def once_waiting(served, action) -> threading.Thread:
    """Run `action` once a wait holds its slot on the server."""

    def run():
        waits: JobWaits = served.services.waits
        for _ in range(DEADLINE_SECONDS * 100):
            if waits.waiting:
                break
            threading.Event().wait(0.01)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_returns_the_job_once_it_succeeded(client, served):
    job = make_job(served.store)
    once_waiting(served, lambda: served.finish(job))

    done = client.wait(job.id, timeout=DEADLINE_SECONDS)

    assert done.status is JobStatus.SUCCEEDED and done.result == {"ok": True} and done.is_finished


def test_wait_returns_the_job_once_it_is_dead(client, served):
    job = make_job(served.store, max_retries=0)
    once_waiting(served, lambda: served.finish(job, success=False))

    assert client.wait(job.id, timeout=DEADLINE_SECONDS).status is JobStatus.DEAD


def test_wait_returns_the_job_once_it_is_cancelled(client, served):
    job = make_job(served.store)
    once_waiting(served, lambda: served.services.manager.cancel(job.id))

    assert client.wait(job.id, timeout=DEADLINE_SECONDS).status is JobStatus.CANCELLED


def test_wait_on_a_finished_job_answers_at_once(client, served):
    job = served.services.manager.cancel(make_job(served.store).id)
    assert client.wait(job.id, timeout=0).status is JobStatus.CANCELLED


def test_wait_times_out_with_the_job_as_it_is(client, served):
    job = make_job(served.store)

    with pytest.raises(WaitTimeout) as caught:
        client.wait(job.id, timeout=0.5)

    assert caught.value.job.status is JobStatus.PENDING and isinstance(caught.value, TimeoutError)


def test_wait_on_an_unknown_job_is_not_found(client):
    with pytest.raises(NotFound):
        client.wait(str(uuid.uuid4()), timeout=5)


def test_the_async_client_waits_lists_and_submits_too(served, async_client_factory):
    async def scenario():
        async with async_client_factory() as client:
            submitted = await client.enqueue("t", {"n": 1}, queue="aio")
            many = await client.enqueue_many([{"type": "t", "queue": "aio"}] * 3)
            listed = [job.id async for job in client.list(queue="aio", page_size=2)]
            job = served.store.get_job(submitted.id)
            once_waiting(served, lambda: served.finish(job))
            done = await client.wait(submitted.id, timeout=DEADLINE_SECONDS)
            cancelled = await client.cancel(many[0].id)
            retried = await client.retry(many[0].id)
            with pytest.raises(WaitTimeout):
                await client.wait(many[1].id, timeout=0.3)
            with pytest.raises(NotFound):
                await client.get(str(uuid.uuid4()))
            return submitted, many, listed, done, cancelled, retried, await client.queues(), await client.health()

    submitted, many, listed, done, cancelled, retried, queues, health = asyncio.run(scenario())
    assert set(listed) == {submitted.id, *(job.id for job in many)}
    assert done.status is JobStatus.SUCCEEDED
    assert (cancelled.status, retried.status) == (JobStatus.CANCELLED, JobStatus.PENDING)
    assert sum(count.count for count in queues) == 4 and health["status"] == "ready"


# -- the server's side -------------------------------------------------------------------------------


def test_a_bad_wait_is_a_400_naming_it(served):
    job = make_job(served.store)
    answer = served.app.test_client().get(f"/v1/jobs/{job.id}?wait=soon", headers=AUTH)
    assert answer.status_code == 400
    assert answer.get_json()["error"]["details"][0]["field"] == "wait"


def test_an_unknown_query_parameter_of_a_job_read_is_a_400(served):
    job = make_job(served.store)
    assert served.app.test_client().get(f"/v1/jobs/{job.id}?wiat=1s", headers=AUTH).status_code == 400


def test_waits_beyond_the_bound_are_refused_with_retry_after(served):
    waits: JobWaits = served.services.waits
    waits.max_waits = 1
    job = make_job(served.store)
    http = served.app.test_client()
    holder = threading.Thread(target=lambda: http.get(f"/v1/jobs/{job.id}?wait=60s", headers=AUTH), daemon=True)
    holder.start()
    for _ in range(DEADLINE_SECONDS * 100):
        if waits.waiting:
            break
        threading.Event().wait(0.01)

    refused = served.app.test_client().get(f"/v1/jobs/{job.id}?wait=5s", headers=AUTH)

    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.get_json()["error"]["code"] == "unavailable"
    waits.stop()  # Then stopping answers the held wait with the job as it is
    holder.join(timeout=DEADLINE_SECONDS)
    assert not holder.is_alive()


def test_a_stopped_server_answers_waits_at_once(served):
    served.services.waits.stop()
    job = make_job(served.store)
    answer = served.app.test_client().get(f"/v1/jobs/{job.id}?wait={MAX_WAIT_SECONDS:g}s", headers=AUTH)
    assert answer.status_code == 200 and answer.get_json()["status"] == ServerStatus.PENDING.value


def test_a_settle_batch_publishes_one_finished_wake_up_per_queue(served):
    published: list[str] = []
    notifier = served.services.notifier
    original = notifier.publish
    notifier.publish = lambda key: (published.append(key), original(key))
    jobs = [make_job(served.store, queue="settle") for _ in range(3)]
    leased = served.store.lease_jobs(["settle"], "w", 3, 30)

    served.services.manager.settle_many([Settlement(j.id, j.lease_id, success=True) for j in leased], worker_id="w")

    assert len(jobs) == 3 and published == ["finished/settle"]


def test_the_bulk_retry_route_refuses_a_filter_without_a_queue_or_for_a_status_it_cannot_retry(served):
    http = served.app.test_client()
    assert http.post("/v1/jobs/retry", json={"status": "dead"}, headers=AUTH).status_code == 400
    assert http.post("/v1/jobs/retry", json={"queue": "q", "status": "succeeded"}, headers=AUTH).status_code == 400
    assert http.post("/v1/jobs/retry", json={"queue": "q"}, headers=AUTH).get_json() == {"retried": 0}
