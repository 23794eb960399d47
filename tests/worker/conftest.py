"""A real gRPC server (and, for end-to-end tests, the real REST API) per backend, and
workers pointed at it."""

from __future__ import annotations

import pytest

from quorra.api import create_app
from quorra.config import Settings
from quorra.notify import make_notifier
from quorra.worker import HandlerRegistry, Worker
from tests.conftest import TEST_API_KEY
from tests.rpc.support import rpc_settings, running_server
from tests.worker.support import serving


@pytest.fixture
def server_settings(settings):
    return rpc_settings(settings)


@pytest.fixture
def grpc_server(server_settings, store):
    """(port, notifier): publish on the notifier to wake the server's long polls."""
    notifier = make_notifier(server_settings)
    with running_server(server_settings, store, notifier) as (_, port):
        yield port, notifier


@pytest.fixture
def api_url(server_settings, store):
    """The REST API on a free port, with a notifier of its own, as a separate process has."""
    notifier = make_notifier(server_settings)
    with serving(create_app(server_settings, store=store, notifier=notifier)) as url:
        yield url
    notifier.close()


def worker_settings(port: int, **fields) -> Settings:
    defaults = {
        "grpc_addr": f"127.0.0.1:{port}",
        "api_keys": (TEST_API_KEY,),
        "worker_id": "test-worker",
        "worker_queues": ("work",),
        "worker_max_jobs": 2,
        "log_format": "text",
    }
    return Settings(**(defaults | fields))


@pytest.fixture
def make_worker():
    """Build and start in-process workers; each is stopped after the test."""
    started: list[Worker] = []

    def make(port: int, handlers: dict, **fields) -> Worker:
        registry = HandlerRegistry()
        for job_type, function in handlers.items():
            registry.register(job_type, function)
        worker = Worker(worker_settings(port, **fields), registry).start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop(grace=5)
