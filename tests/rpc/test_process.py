"""`quorra grpc` as a real process: it refuses a database behind on migrations, serves
with or without PROMETHEUS_MULTIPROC_DIR, and stops gracefully on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quorra.rpc import quorra_pb2 as pb2
from quorra.rpc import quorra_pb2_grpc as pb2_grpc
from tests.conftest import REPO, TEST_API_KEY, free_port
from tests.rpc.support import AUTH


def start_grpc(database_url: str, port: int, **env: str) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("QUORRA_", "REDIS_URL", "PROMETHEUS"))}
    environ |= {
        "DATABASE_URL": database_url,
        "QUORRA_GRPC_ADDR": f"127.0.0.1:{port}",
        "QUORRA_API_KEY": TEST_API_KEY,
        "QUORRA_LOG_FORMAT": "text",
        "QUORRA_SHUTDOWN_GRACE": "5s",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "quorra.cli.admin", "grpc"],
        env=environ,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_serving(channel: grpc.Channel, process: subprocess.Popen) -> None:
    try:
        grpc.channel_ready_future(channel).result(timeout=60)
    except grpc.FutureTimeoutError:
        process.kill()
        raise AssertionError(f"quorra grpc never listened:\n{process.communicate()[1]}") from None
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("multiprocess", [True, False], ids=["multiprocess-metrics", "plain-metrics"])
def test_sigterm_lets_a_long_poll_end_and_exits_0(database_url, tmp_path, multiprocess):
    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)} if multiprocess else {}
    process = start_grpc(database_url, port, QUORRA_LEASE_WAIT_MAX="30s", **env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        wait_serving(channel, process)
        stub = pb2_grpc.WorkerServiceStub(channel)
        poll = stub.LeaseJobs(pb2.LeaseRequest(worker_id="w", queue="idle", wait_seconds=30), metadata=AUTH, timeout=40)
        time.sleep(0.3)  # the poll is waiting on the server by now
        process.send_signal(signal.SIGTERM)

        assert list(poll) == []  # the in-flight poll ended cleanly, nothing leased
        assert process.wait(timeout=15) == 0
    log = process.stderr.read()
    assert "grpc server stopped" in log
    assert any(metrics_dir.iterdir()) == multiprocess  # counters went to the shared directory


def test_a_database_behind_on_migrations_is_refused(tmp_path):
    process = start_grpc(f"sqlite:///{tmp_path / 'empty.db'}", free_port())

    assert process.wait(timeout=30) == 1
    assert "quorra migrate" in process.stderr.read()
