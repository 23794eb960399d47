"""`async def` handlers against a real server: they run on the worker's event loop with the
same results, nacks, slots, heartbeats and shutdown as sync handlers. Both backends."""

from __future__ import annotations

import asyncio
import threading
import time

from quorra.jobs import JobStatus
from tests.worker.support import wait_until
from tests.worker.test_worker import enqueue, settled


def test_an_async_handler_runs_and_its_result_is_stored(grpc_server, store, make_worker):
    port, notifier = grpc_server

    async def send(job):
        await asyncio.sleep(0.05)
        return {"to": job.payload["to"], "loop": asyncio.get_running_loop().is_running()}

    make_worker(port, {"email_send": send})

    job = enqueue(store, notifier, payload={"to": "a@example.com"})

    done = settled(store, job.id)
    assert (done.status, done.attempts, done.result) == (JobStatus.SUCCEEDED, 1, {"to": "a@example.com", "loop": True})


def test_an_async_handler_that_raises_nacks_with_its_traceback(grpc_server, store, make_worker):
    port, notifier = grpc_server

    async def broken(job):
        await asyncio.sleep(0)
        raise ValueError(f"cannot send to {job.payload['to']}")

    make_worker(port, {"email_send": broken})

    job = enqueue(store, notifier, payload={"to": "nobody"}, max_retries=0)

    done = settled(store, job.id)
    assert done.status is JobStatus.DEAD
    assert done.last_error.startswith("ValueError: cannot send to nobody\n\nTraceback (most recent call last):")
    assert "in broken" in done.last_error


def test_async_jobs_run_concurrently_on_one_loop_within_the_slots(grpc_server, store, make_worker):
    port, notifier = grpc_server
    release = threading.Event()
    running, loops = [], set()

    async def wait_for_release(job):
        running.append(job.id)
        loops.add(id(asyncio.get_running_loop()))
        while not release.is_set():
            await asyncio.sleep(0.01)

    worker = make_worker(port, {"email_send": wait_for_release}, worker_max_jobs=2)
    jobs = [enqueue(store, notifier) for _ in range(5)]

    wait_until(lambda: len(running) == 2, what="two async jobs running at once")
    time.sleep(0.3)  # time enough for a third, if the slots did not hold
    statuses = [store.get_job(job.id).status for job in jobs]
    assert (len(running), worker.running_jobs, statuses.count(JobStatus.PENDING)) == (2, 2, 3)
    release.set()
    assert all(settled(store, job.id).status is JobStatus.SUCCEEDED for job in jobs)
    assert len(loops) == 1


def test_heartbeats_keep_an_async_job_longer_than_its_ttl_leased(grpc_server, store, make_worker):
    port, notifier = grpc_server

    async def slow(job):
        await asyncio.sleep(2.6)

    make_worker(port, {"email_send": slow}, worker_lease_ttl_seconds=2)

    job = enqueue(store, notifier)

    wait_until(lambda: store.get_job(job.id).status is JobStatus.PROCESSING, what="the first heartbeat")
    done = settled(store, job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)


def test_stop_lets_an_async_job_finish_within_the_grace_and_acks_it(grpc_server, store, make_worker):
    port, notifier = grpc_server
    started = threading.Event()

    async def short(job):
        started.set()
        await asyncio.sleep(0.5)
        return "done"

    worker = make_worker(port, {"email_send": short})
    job = enqueue(store, notifier)
    assert started.wait(20)

    assert worker.stop(grace=10) is True
    done = store.get_job(job.id)
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, "done")


def test_an_async_job_still_running_after_the_grace_is_nacked_and_cancelled(grpc_server, store, make_worker):
    port, notifier = grpc_server
    started, cancelled = threading.Event(), threading.Event()

    async def endless(job):
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    worker = make_worker(port, {"email_send": endless})
    job = enqueue(store, notifier)
    assert started.wait(20)

    clean = worker.stop(grace=0.2)

    failed = store.get_job(job.id)
    assert clean is False
    assert (failed.status, failed.last_error) == (
        JobStatus.FAILED,
        "worker test-worker stopped before the job finished",
    )
    assert cancelled.wait(10)
