"""A whole deployment of real processes on one host, as `make run` starts it: `quorra web`
(gunicorn, 2 workers), `quorra grpc`, `quorra scheduler` and `bin/quorra-worker`s, all in
prometheus multi-process mode over one metrics directory, with every process's stderr
collected line by line (the scheduler tests' harness)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import requests
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.api.test_server import AUTH, scrape, web_env
from tests.conftest import free_port
from tests.processes import QuorraProcess
from tests.worker.support import WorkerProcess, wait_until

SERVER_ROLES = ("web", "grpc", "scheduler")
START_TIMEOUT_SECONDS = 60.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class Deployment:
    def __init__(self, database_url: str, metrics_dir: Path, **env: str):
        self.metrics_dir = metrics_dir
        self.grpc_port = free_port()
        http_port = free_port()
        self.base_url = f"http://127.0.0.1:{http_port}"
        self.env = web_env(
            database_url,
            http_port,
            QUORRA_GRPC_ADDR=f"127.0.0.1:{self.grpc_port}",
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            QUORRA_SCHEDULER_INTERVAL="0.2s",
            QUORRA_POLL_INTERVAL="0.2s",
            QUORRA_LOG_LEVEL="info",
            **env,
        )
        self.servers = {role: QuorraProcess(role, self.env) for role in SERVER_ROLES}
        self.workers: list[WorkerProcess] = []

    def wait_ready(self) -> None:
        self.servers["grpc"].wait_for("rpc.started", timeout=START_TIMEOUT_SECONDS)
        self.servers["scheduler"].wait_for("leadership.acquired", timeout=START_TIMEOUT_SECONDS)
        wait_until(self._healthy, timeout=START_TIMEOUT_SECONDS, what="quorra web healthy")

    def _healthy(self) -> bool:
        assert self.servers["web"].popen.poll() is None, f"quorra web exited:\n{self.servers['web'].output()}"
        try:
            return requests.get(f"{self.base_url}/healthz", timeout=5).status_code == 200
        except requests.RequestException:  # not listening yet, or too busy to answer in time: ask again
            return False

    def worker(self, *args: str) -> WorkerProcess:
        worker = WorkerProcess(self.grpc_port, *args)
        self.workers.append(worker)
        return worker

    # -- REST -------------------------------------------------------------------------------

    def post(self, headers: dict[str, str] | None = None, **job: Any) -> requests.Response:
        response = requests.post(f"{self.base_url}/v1/jobs", json=job, headers={**AUTH, **(headers or {})}, timeout=10)
        assert response.status_code == 201, response.text
        return response

    def job(self, job_id: str) -> dict[str, Any]:
        return requests.get(f"{self.base_url}/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()

    def queue_counts(self) -> dict[tuple[str, str], int]:
        rows = requests.get(f"{self.base_url}/v1/queues", headers=AUTH, timeout=10).json()["queues"]
        return {(row["queue"], row["status"]): row["count"] for row in rows}

    def scrape(self) -> Samples:
        return scrape(self.base_url)

    def process_samples(self, role: str) -> Samples:
        """What the samples files of one server process (by its pid) hold on their own."""
        pid = self.servers[role].popen.pid
        with tempfile.TemporaryDirectory() as alone:
            for path in self.metrics_dir.glob(f"*_{pid}.db"):
                shutil.copy(path, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples}

    # -- the end ------------------------------------------------------------------------------

    def stop(self) -> dict[str, int | None]:
        """SIGTERM to every process still running (workers first, web last); the exit codes
        (None for a process the test killed) once every line of output is in."""
        codes: dict[str, int | None] = {}
        for n, worker in enumerate(self.workers):
            codes[f"worker{n}"] = worker.stop() if worker.popen.returncode is None else None
            worker.output()
        for role in reversed(SERVER_ROLES):
            codes[role] = self.servers[role].stop()
            self.servers[role].output()
        return codes

    def kill_all(self) -> None:
        for process in [*self.workers, *self.servers.values()]:
            process.kill()
