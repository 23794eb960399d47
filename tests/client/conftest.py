"""The real Flask app behind a real HTTP server (werkzeug, threaded, a free port), on each
backend, for the client and quorractl. `served.refuse_submits(n)` makes the next n submits
answer 503 (as Quorra does when the database is down: nothing changed), and
`served.idempotency_keys` records the Idempotency-Key of every submit the app saw."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
from flask import Flask, request
from werkzeug.serving import make_server

from quorra.api import create_app
from quorra.api.services import EXTENSION, Services
from quorra.client import AsyncClient, Client
from quorra.jobs import Job
from quorra.notify import PollingNotifier
from quorra.store import Store
from tests.conftest import TEST_API_KEY


@dataclass
class Served:
    url: str
    app: Flask
    idempotency_keys: list[str | None] = field(default_factory=list)
    refusals_left: int = 0

    @property
    def services(self) -> Services:
        return self.app.extensions[EXTENSION]

    @property
    def store(self) -> Store:
        return self.services.store

    def refuse_submits(self, count: int) -> None:
        self.refusals_left = count

    def finish(self, job: Job, *, success: bool = True) -> Job:
        """Lease `job` and ack (or nack) it through the app's manager, as a worker would."""
        [leased] = [j for j in self.store.lease_jobs([job.queue], "worker-t", 10, 30) if j.id == job.id]
        if success:
            return self.services.manager.ack(leased.id, leased.lease_id, {"ok": True}, worker_id="worker-t")
        return self.services.manager.nack(leased.id, leased.lease_id, "boom", worker_id="worker-t")


def _before_submit(served: Served):
    def hook():
        if request.method == "POST" and request.path in ("/v1/jobs", "/v1/jobs/batch"):
            served.idempotency_keys.append(request.headers.get("Idempotency-Key"))
            if served.refusals_left:
                served.refusals_left -= 1
                body = {"error": {"code": "unavailable", "message": "try again", "details": None}}
                return body, 503, {"Retry-After": "0"}
        return None

    return hook


@pytest.fixture
def served(settings, store):
    notifier = PollingNotifier(0.05)
    app = create_app(settings, store=store, notifier=notifier)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    served = Served(f"http://127.0.0.1:{server.server_port}", app)
    app.before_request_funcs.setdefault(None, []).insert(0, _before_submit(served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.services.waits.stop()
    server.shutdown()
    thread.join(timeout=10)
    notifier.close()


@pytest.fixture
def client(served):
    with Client(served.url, TEST_API_KEY, timeout=30) as client:
        yield client


@pytest.fixture
def async_client_factory(served):
    return lambda: AsyncClient(served.url, TEST_API_KEY, timeout=30)
