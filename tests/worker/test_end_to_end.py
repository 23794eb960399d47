"""The whole path with real processes: POST over REST -> gRPC server -> `bin/quorra-worker`
subprocess (the built-in example handlers) -> the job's final state over REST."""

from __future__ import annotations

import signal
import time
from datetime import datetime

import requests

from tests.conftest import TEST_API_KEY
from tests.worker.support import WorkerProcess, wait_until

AUTH = {"X-API-Key": TEST_API_KEY}


def post(api_url: str, **job) -> str:
    response = requests.post(f"{api_url}/v1/jobs", json=job, headers=AUTH, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def get(api_url: str, job_id: str) -> dict:
    response = requests.get(f"{api_url}/v1/jobs/{job_id}", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def test_posted_jobs_succeed_or_walk_through_failed_to_dead(api_url, grpc_server):
    port, _ = grpc_server
    worker = WorkerProcess(port, "--queues", "default,mail", "--max-jobs", "4")
    try:
        # Given the README's job and a job whose handler always fails
        email = post(
            api_url,
            type="email_send",
            queue="mail",
            priority=10,
            max_retries=3,
            payload={"to": "user@example.com", "subject": "Welcome", "body": "Your job queue is ready."},
        )
        failing = post(api_url, type="fail", payload={"message": "always"}, max_retries=2)

        # When the worker runs them, and we watch the failing one over REST
        seen = _watch(api_url, failing, until="dead", timeout=30)

        # Then the email succeeded at once, and the failure went failed(2 s) -> failed(4 s) -> dead
        done = get(api_url, email)
        assert (done["status"], done["attempts"], done["result"]) == (
            "succeeded",
            1,
            {"delivered": False, "logged": True},
        )
        failed = {state["attempts"]: state for state in seen if state["status"] == "failed"}
        assert sorted(failed) == [1, 2]
        assert seconds_between(failed[1]["updated_at"], failed[1]["run_at"]) == 2
        assert seconds_between(failed[2]["updated_at"], failed[2]["run_at"]) == 4
        dead = seen[-1]
        assert (dead["status"], dead["attempts"]) == ("dead", 3)
        assert dead["last_error"].startswith("JobFailed: always")
        assert worker.popen.poll() is None
    finally:
        assert worker.stop() == 0


def _watch(api_url: str, job_id: str, until: str, timeout: float) -> list[dict]:
    """Every distinct state the job shows over REST until it reaches `until`."""
    states: list[dict] = []
    deadline = time.monotonic() + timeout
    while not states or states[-1]["status"] != until:
        assert time.monotonic() < deadline, f"job never became {until}: {states}"
        state = get(api_url, job_id)
        if not states or (state["status"], state["attempts"]) != (states[-1]["status"], states[-1]["attempts"]):
            states.append(state)
        time.sleep(0.05)
    return states


def test_sigterm_lets_jobs_in_flight_finish_and_be_acked(api_url, grpc_server):
    port, _ = grpc_server
    worker = WorkerProcess(port, "--max-jobs", "3", QUORRA_WORKER_SHUTDOWN_GRACE="20s")
    jobs = [post(api_url, type="sleep", payload={"seconds": 1.5}) for _ in range(3)]
    for job_id in jobs:
        worker.wait_for("job.started", job_id=job_id)

    worker.signal(signal.SIGTERM)
    code = worker.stop(timeout=20)

    assert code == 0
    finished = [get(api_url, job_id) for job_id in jobs]
    assert [(job["status"], job["attempts"]) for job in finished] == [("succeeded", 1)] * 3
    assert worker.wait_for("worker.stopped").record["clean"] is True
    after = post(api_url, type="email_send", payload={})
    time.sleep(0.3)
    assert get(api_url, after)["status"] == "pending"  # nothing leases once the worker is gone


def test_a_worker_whose_key_is_refused_exits_2(grpc_server):
    port, _ = grpc_server
    worker = WorkerProcess(port, QUORRA_API_KEY="not-the-key")

    assert worker.popen.wait(30) == 2
    assert "UNAUTHENTICATED" in worker.output()


def test_handlers_from_a_module_of_our_own(api_url, grpc_server):
    port, _ = grpc_server
    worker = WorkerProcess(port, "--handlers", "tests.worker.handlers_module")
    try:
        greet = post(api_url, type="greet", payload={"name": "Flynn"})
        yell = post(api_url, type="yell", payload={"text": "end of line"})
        example = post(api_url, type="email_send", payload={}, max_retries=0)

        results = [wait_until(lambda j=j: _finished(api_url, j), what=f"job {j}") for j in (greet, yell, example)]
    finally:
        assert worker.stop() == 0

    assert [job["result"] for job in results[:2]] == [{"greeting": "hello Flynn"}, "END OF LINE"]
    assert results[2]["status"] == "dead"  # the built-in examples are not loaded alongside
    assert "no handler for job type 'email_send'" in results[2]["last_error"]


def _finished(api_url: str, job_id: str) -> dict | None:
    job = get(api_url, job_id)
    return job if job["status"] in ("succeeded", "dead") else None
