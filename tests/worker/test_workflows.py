"""Workflows end to end, with real processes: POST /v1/workflows over REST -> gRPC server
-> `bin/quorra-worker` subprocess -> GET /v1/workflows/{id}. The 1,000-node DAG runs
every job exactly once, each after all its parents finished, and the fan-in reads its
parents' results."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.conftest import TEST_API_KEY
from tests.worker.support import WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(1200)

AUTH = {"X-API-Key": TEST_API_KEY}
HANDLERS = "tests.worker.dag_handlers"
DAG_TIMEOUT_SECONDS = 900  # generous: a 2-core machine shared with other suites


def submit(api_url: str, body: dict) -> dict:
    response = requests.post(f"{api_url}/v1/workflows", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 201, response.text
    return response.json()


def workflow(api_url: str, workflow_id: str) -> dict:
    response = requests.get(f"{api_url}/v1/workflows/{workflow_id}", headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def job(api_url: str, job_id: str) -> dict:
    return requests.get(f"{api_url}/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()


def finished(api_url: str, workflow_id: str) -> dict | None:
    whole = workflow(api_url, workflow_id)
    return whole if whole["status"] != "running" else None


def dag(log: Path, fan_out: int = 100, layers: int = 10, fan_in: int = 10, total: int = 1000) -> list[dict]:
    """root -> `fan_out` jobs -> layers of up to `fan_out` jobs, each depending on `fan_in`
    jobs of the layer above -> a sink depending on every job of the last layer: `total` jobs."""
    sizes = [1] + [fan_out] * (layers - 1)
    sizes.append(total - sum(sizes) - 1)
    names = [[f"L{n}-{i}" for i in range(size)] for n, size in enumerate(sizes)]
    jobs = [_step(log, names[0][0])]
    jobs += [_step(log, name, names[0][0]) for name in names[1]]
    for above, layer in itertools.pairwise(names[1:]):
        for i, name in enumerate(layer):
            jobs.append(_step(log, name, *{above[(i + k * 7) % len(above)] for k in range(fan_in)}))
    jobs.append(_step(log, "sink", *names[-1]))
    return jobs


def _step(log: Path, ref: str, *parents: str) -> dict:
    return {"ref": ref, "type": "dag.step", "queue": "dag", "payload": {"log": str(log)}, "depends_on": list(parents)}


def recorded(log: Path) -> dict[str, dict[str, list[int]]]:
    events: dict[str, dict[str, list[int]]] = {}
    for line in log.read_text().splitlines():
        event, ref, at = line.split()
        events.setdefault(ref, {"start": [], "finish": []})[event].append(int(at))
    return events


def test_a_diamond_workflow_fans_out_and_in_with_parent_results(api_url, grpc_server, tmp_path):
    port, _ = grpc_server
    log = tmp_path / "steps.log"
    worker = WorkerProcess(port, "--queues", "dag", "--max-jobs", "4", "--handlers", HANDLERS)
    try:
        # Given a -> (b, c) -> d, submitted in one request
        body = {
            "name": "diamond",
            "jobs": [_step(log, "d", "b", "c"), _step(log, "b", "a"), _step(log, "c", "a"), _step(log, "a")],
        }
        created = submit(api_url, body)
        # When the worker runs it
        whole = wait_until(lambda: finished(api_url, created["id"]), timeout=120, what="the workflow to finish")
        # Then it succeeded, and d read both parents' results by ref
        assert (whole["status"], whole["counts"]) == ("succeeded", {"succeeded": 4})
        sink = job(api_url, created["jobs"]["d"]["id"])
        assert sink["result"] == {"paths": 5, "parents": ["b", "c"]}
        assert sorted(sink["depends_on"]) == sorted([created["jobs"]["b"]["id"], created["jobs"]["c"]["id"]])
    finally:
        assert worker.stop() == 0


def test_a_dependant_that_runs_anyway_sees_its_failed_parent(api_url, grpc_server, tmp_path):
    port, _ = grpc_server
    worker = WorkerProcess(port, "--queues", "dag", "--max-jobs", "2", "--handlers", HANDLERS)
    try:
        jobs = [
            {"ref": "flaky", "type": "dag.fail", "queue": "dag", "payload": {}, "max_retries": 0},
            {
                "ref": "cleanup",
                "type": "dag.report",
                "queue": "dag",
                "payload": {},
                "depends_on": ["flaky"],
                "on_parent_failure": "run",
            },
            {"ref": "next", "type": "dag.report", "queue": "dag", "payload": {}, "depends_on": ["flaky"]},
        ]
        created = submit(api_url, {"jobs": jobs})
        whole = wait_until(lambda: finished(api_url, created["id"]), timeout=120, what="the workflow to finish")
        assert (whole["status"], whole["counts"]) == ("failed", {"dead": 1, "succeeded": 1, "cancelled": 1})
        cleanup = job(api_url, created["jobs"]["cleanup"]["id"])
        assert cleanup["result"]["flaky"][0] == "dead"
        assert "this step always fails" in cleanup["result"]["flaky"][1]
        skipped = job(api_url, created["jobs"]["next"]["id"])
        assert skipped["last_error"] == f"parent {created['jobs']['flaky']['id']} is dead"
    finally:
        assert worker.stop() == 0


def test_a_thousand_node_dag_runs_each_job_once_in_dependency_order(api_url, grpc_server, tmp_path, figures):
    port, _ = grpc_server
    log = tmp_path / "steps.log"
    jobs = dag(log)
    assert len(jobs) == 1000
    worker = WorkerProcess(port, "--queues", "dag", "--max-jobs", "50", "--handlers", HANDLERS)
    try:
        # Given a 1,000-node DAG submitted in one request
        started = time.monotonic()
        created = submit(api_url, {"name": "thousand", "jobs": jobs})
        submitted = time.monotonic()
        # When one worker process runs it
        whole = wait_until(lambda: finished(api_url, created["id"]), timeout=DAG_TIMEOUT_SECONDS, what="the DAG")
        done = time.monotonic()
        # Then every job succeeded, each started and finished exactly once
        assert (whole["status"], whole["counts"]) == ("succeeded", {"succeeded": 1000})
        events = recorded(log)
        assert set(events) == {job["ref"] for job in jobs}
        assert Counter(len(e["start"]) for e in events.values()) == {1: 1000}
        assert Counter(len(e["finish"]) for e in events.values()) == {1: 1000}
        # And each started after every one of its parents had finished
        late = [
            (job["ref"], parent)
            for job in jobs
            for parent in job["depends_on"]
            if events[job["ref"]]["start"][0] <= events[parent]["finish"][0]
        ]
        assert late == []
        # And the sink summed its parents' results: the number of root-to-sink paths
        assert job(api_url, created["jobs"]["sink"]["id"])["result"]["paths"] > 1000
        figures.update(
            jobs=1000,
            edges=sum(len(job["depends_on"]) for job in jobs),
            submit_s=round(submitted - started, 2),
            run_s=round(done - submitted, 2),
            jobs_per_s=round(1000 / (done - submitted), 1),
        )
    finally:
        assert worker.stop() == 0
