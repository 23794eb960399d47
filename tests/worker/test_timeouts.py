"""Per-job timeouts against a real gRPC server, on both backends: the attempt is nacked
'timed out after N s' and retried by the usual policy; a sync handler's thread is flagged,
then abandoned and counted; a coroutine handler is cancelled for real; and a worker that
abandoned QUORRA_WORKER_MAX_ABANDONED threads exits 3 to be restarted fresh."""

from __future__ import annotations

import asyncio
import threading

import requests

from quorra.jobs import JobStatus
from tests import factories
from tests.conftest import TEST_API_KEY
from tests.worker.support import WorkerProcess, wait_until

AUTH = {"X-API-Key": TEST_API_KEY}


def enqueue(store, notifier, **fields):
    job = factories.make_job(store, **({"queue": "work"} | fields))
    notifier.publish(job.queue)
    return job


def final(store, job_id: str, timeout: float = 30.0):
    terminal = (JobStatus.SUCCEEDED, JobStatus.DEAD)
    return wait_until(lambda: (j := store.get_job(job_id)).status in terminal and j, timeout, f"job {job_id} final")


def test_a_handler_past_its_timeout_is_nacked_retried_and_its_thread_abandoned(grpc_server, store, make_worker):
    # Given a handler that ignores every flag, and a job of 1 s with one retry
    port, notifier = grpc_server
    release = threading.Event()
    attempts = []
    worker = make_worker(port, {"stubborn": lambda job: attempts.append(job) or release.wait(60)})

    job = enqueue(store, notifier, type="stubborn", timeout_seconds=1, max_retries=1)

    # Then each attempt timed out: failed, retried after its backoff, then dead
    dead = final(store, job.id)
    release.set()
    assert (dead.status, dead.attempts, dead.last_error) == (JobStatus.DEAD, 2, "timed out after 1 s")
    assert [a.attempt for a in attempts] == [1, 2]
    assert all(a.timed_out.is_set() and a.lease_lost.is_set() for a in attempts)
    assert worker.limits.abandoned_threads == 2


def test_a_handler_that_checks_timed_out_is_nacked_and_not_abandoned(grpc_server, store, make_worker):
    port, notifier = grpc_server

    def polite(job):
        job.timed_out.wait(60)
        return "finished anyway"  # too late: the attempt was given up

    worker = make_worker(port, {"polite": polite})

    job = enqueue(store, notifier, type="polite", timeout_seconds=1, max_retries=0)

    dead = final(store, job.id)
    assert (dead.status, dead.last_error, dead.result) == (JobStatus.DEAD, "timed out after 1 s", None)
    assert worker.limits.abandoned_threads == 0


def test_a_job_within_its_timeout_succeeds(grpc_server, store, make_worker):
    port, notifier = grpc_server
    make_worker(port, {"quick": lambda job: {"timeout": job.timeout_seconds, "flagged": job.timed_out.is_set()}})

    job = enqueue(store, notifier, type="quick", timeout_seconds=30)

    done = final(store, job.id)
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, {"timeout": 30, "flagged": False})


def test_a_coroutine_handler_past_its_timeout_is_cancelled_for_real(grpc_server, store, make_worker):
    port, notifier = grpc_server
    cancelled = threading.Event()

    async def slow(job):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    worker = make_worker(port, {"slow": slow})

    job = enqueue(store, notifier, type="slow", timeout_seconds=1, max_retries=0)

    dead = final(store, job.id)
    assert (dead.status, dead.last_error) == (JobStatus.DEAD, "timed out after 1 s")
    assert cancelled.wait(10)
    assert worker.limits.abandoned_threads == 0


def test_a_worker_exits_3_after_abandoning_its_maximum_of_threads(api_url, grpc_server):
    # Given a worker process that may abandon one handler thread
    port, _ = grpc_server
    worker = WorkerProcess(port, "--handlers", "tests.worker.stubborn_handlers", QUORRA_WORKER_MAX_ABANDONED="1")

    # When a job's handler ignores its timeout
    body = {"type": "stubborn", "payload": {"seconds": 60}, "timeout_seconds": 1, "max_retries": 0}
    job_id = requests.post(f"{api_url}/v1/jobs", json=body, headers=AUTH, timeout=10).json()["id"]

    # Then the job is dead with the timeout, the thread counted, and the process stops with exit 3
    assert worker.popen.wait(60) == 3
    abandoned = worker.wait_for("job.thread_abandoned", job_id=job_id).record
    assert (abandoned["timeout_seconds"], abandoned["abandoned_threads"]) == (1, 1)
    assert worker.wait_for("worker.recycling").record["abandoned_threads"] == 1
    job = requests.get(f"{api_url}/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()
    assert (job["status"], job["last_error"], job["timeout_seconds"]) == ("dead", "timed out after 1 s", 1)
