"""The whole Procfile stack under honcho, as `make run` starts it (its grace periods read
from the Makefile): Ctrl-C (SIGINT to honcho) while a long job runs settles that job, since
the worker nacks it within its grace period while the gRPC server still drains, and every
process exits 0 (the Procfile `exec`s, so honcho signals and waits for the servers
themselves, not a shell)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import requests

from quorra.jobs import JobStatus
from quorra.store import Store
from tests.api.test_server import AUTH, web_env
from tests.conftest import REPO, free_port

ROLES = ("web", "grpc", "scheduler", "worker")
_RUN_EXPORT = re.compile(r"^run: export (\w+) \?= (\S+)$", re.MULTILINE)


def make_run_environment() -> dict[str, str]:
    """The variables the Makefile's `run` target exports (grace periods, worker queues)."""
    return dict(_RUN_EXPORT.findall((REPO / "Makefile").read_text()))


class Honcho:
    """honcho running the Procfile, its output read as it comes (so a test can wait for a line)."""

    def __init__(self, env: dict[str, str]):
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "honcho", "-f", str(REPO / "Procfile"), "-d", str(REPO), "start", *ROLES],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def stop(self, timeout: float) -> str:
        """SIGINT, as Ctrl-C does; all of honcho's output once it has exited."""
        self.popen.send_signal(signal.SIGINT)
        self.popen.wait(timeout)
        self._reader.join(10)
        return self.output

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def wait_for(condition, what: str, honcho: Honcho, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if honcho.popen.poll() is not None:
            raise AssertionError(f"honcho exited before {what}:\n{honcho.output[-5000:]}")
        try:
            if condition():
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    honcho.kill()
    raise AssertionError(f"no {what} within {timeout} s:\n{honcho.output[-5000:]}")


def test_ctrl_c_under_honcho_settles_the_running_job_and_every_process_exits_0(database_url, tmp_path):
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    env = web_env(
        database_url,
        http_port,
        QUORRA_GRPC_ADDR=f"127.0.0.1:{grpc_port}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        **make_run_environment(),
    )
    honcho = Honcho(env)
    try:
        wait_for(lambda: requests.get(f"{base}/healthz", timeout=1).status_code == 200, "healthy web", honcho)
        # every process is up (a signal during a process's imports would end it before it can exit 0)
        wait_for(lambda: '"event": "scheduler.started"' in honcho.output, "scheduler start", honcho)
        created = requests.post(
            f"{base}/v1/jobs", json={"type": "sleep", "payload": {"seconds": 600}}, headers=AUTH, timeout=10
        )
        job_id = created.json()["id"]
        running = ("leased", "processing")
        wait_for(
            lambda: requests.get(f"{base}/v1/jobs/{job_id}", headers=AUTH, timeout=5).json()["status"] in running,
            "running job",
            honcho,
        )

        output = honcho.stop(timeout=60)
    finally:
        honcho.kill()

    store = Store.from_url(database_url)
    job = store.get_job(job_id)
    store.close()
    assert job.status is JobStatus.FAILED, output[-5000:]  # nacked, to be retried
    assert "stopped before the job finished" in job.last_error
    assert job.attempts == 1
    assert "rc=-15" not in output, output[-5000:]  # no process (or shell) died of the SIGTERM itself
    for role in ("grpc", "scheduler", "worker"):
        assert f"{role}.1 stopped (rc=0)" in output, output[-5000:]
    # gunicorn's master waits up to its graceful timeout for its workers; on a heavily loaded
    # machine that can outlast honcho's fixed 5 s before SIGKILL, which only the web may need
    assert "web.1 stopped (rc=0)" in output or "sending SIGKILL to web.1" in output, output[-5000:]
