"""Real processes and servers for the worker tests: a private redis-server the test may
stop and restart, the REST API on a free port, and `bin/quorra-worker` as a subprocess."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from flask import Flask
from werkzeug.serving import make_server

from tests.conftest import REPO, TEST_API_KEY, free_port
from tests.processes import LoggedProcess, clean_environ


def wait_until(condition: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll `condition` until it is truthy (and return it); fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not met within {timeout} s"
        time.sleep(0.02)
    return value


class PrivateRedis:
    """A redis-server of this test's own, on a free port, that it may stop and start again."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        wait_until(lambda: _answers(client), timeout=30, what=f"redis-server on port {self.port}")
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app behind a real HTTP server on a free port; yields its base URL."""
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


class WorkerProcess(LoggedProcess):
    """`bin/quorra-worker` with JSON logs collected as they come."""

    def __init__(self, grpc_port: int, *args: str, **env: str):
        defaults = {
            "QUORRA_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "QUORRA_API_KEY": TEST_API_KEY,
            "QUORRA_LOG_FORMAT": "json",
            "QUORRA_LOG_LEVEL": "info",
        }
        environ = clean_environ(**(defaults | env))
        super().__init__([sys.executable, str(REPO / "bin" / "quorra-worker"), *args], environ, cwd=REPO)
