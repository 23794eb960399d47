"""The client's calls for operators: pause and resume a queue, workers, a job's attempts,
and deleting finished jobs (one, or by filter); sync and asyncio, against the real server."""

from __future__ import annotations

import asyncio

import pytest

from quorra.client import Attempt, Conflict, Worker
from quorra.store import WorkerSighting
from tests.factories import dead_job, leased_job


def test_pause_and_resume_a_queue(client, served):
    assert client.pause_queue("mail")["is_paused"] is True
    assert served.store.paused_queues().keys() == {"mail"}
    assert client.resume_queue("mail") == {"queue": "mail", "is_paused": False, "paused_at": None}


def test_workers_and_attempts(client, served):
    served.store.record_workers([WorkerSighting("w1", host="box", queues=("q",), handlers=("send",))])
    job = leased_job(served.store, worker_id="w1", queue="q")
    served.store.nack(job.id, job.lease_id, "boom")

    [worker] = client.workers(minutes=10)
    [attempt] = client.attempts(job.id)

    assert isinstance(worker, Worker) and (worker.id, worker.queues, worker.handlers) == ("w1", ("q",), ("send",))
    assert isinstance(attempt, Attempt) and (attempt.worker_id, attempt.outcome, attempt.error) == (
        "w1",
        "failed",
        "boom",
    )


def test_delete_one_job_and_jobs_by_filter(client, served):
    doomed = [dead_job(served.store, queue="dlq") for _ in range(3)]
    client.delete(doomed[0].id)
    assert client.delete_jobs("dlq", "dead") == 2
    with pytest.raises(Conflict):
        client.delete(leased_job(served.store).id)


def test_the_async_client_has_the_same_calls(async_client_factory, served):
    dead_job(served.store, queue="dlq")

    async def calls():
        async with async_client_factory() as client:
            paused = await client.pause_queue("dlq")
            deleted = await client.delete_jobs("dlq", "dead")
            return paused["is_paused"], deleted, await client.workers()

    assert asyncio.run(calls()) == (True, 1, [])
