"""Health while the database goes away and comes back (tests/api/test_health.py and
tests/rpc/test_server.py cover Redis unreachable and a database that is never there).

The outage is real but private to the test's own PostgreSQL database: it stops accepting
connections and its sessions are terminated, so every new connection is refused, exactly
as for a database that is down, while the shared server keeps running for everyone else."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.engine import make_url

from quorra.api import create_app
from quorra.config import Settings
from quorra.notify import PollingNotifier
from quorra.rpc.server import create_server
from quorra.store import Store
from tests.api.conftest import assert_error
from tests.conftest import TEST_API_KEY, free_port
from tests.worker.support import wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OUTAGE_TIMEOUT_SECONDS = 10.0


@contextmanager
def database_down(pg_admin, url: str) -> Iterator[None]:
    conn, _ = pg_admin
    name = make_url(url).database
    conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name})
    try:
        yield
    finally:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))


@pytest.fixture
def pg_store(postgres_url):
    store = Store.from_url(postgres_url)
    yield store
    store.close()


@pytest.mark.postgres
def test_grpc_health_is_not_serving_while_the_database_is_down_and_serving_once_it_is_back(
    postgres_url, pg_admin, pg_store
):
    settings = Settings(database_url=postgres_url, api_keys=(TEST_API_KEY,))
    server, port = create_server(settings, pg_store, PollingNotifier(1.0), "127.0.0.1:0", health_interval=0.1)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def status():
                return health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status

            assert status() == SERVING
            with database_down(pg_admin, postgres_url):
                wait_until(lambda: status() == NOT_SERVING, OUTAGE_TIMEOUT_SECONDS, "NOT_SERVING during the outage")
            wait_until(lambda: status() == SERVING, OUTAGE_TIMEOUT_SECONDS, "SERVING after the outage")
    finally:
        server.stop(0)


@pytest.mark.postgres
def test_readyz_is_a_503_naming_the_database_while_it_is_down_and_ready_once_it_is_back(
    postgres_url, pg_admin, pg_store
):
    notifier = PollingNotifier(1.0)
    client = create_app(
        Settings(database_url=postgres_url, api_keys=(TEST_API_KEY,)), store=pg_store, notifier=notifier
    ).test_client()

    assert client.get("/readyz").status_code == 200
    with database_down(pg_admin, postgres_url):
        error = assert_error(client.get("/readyz"), 503, "unavailable")
        alive = client.get("/healthz")
    back = client.get("/readyz")
    notifier.close()

    assert error["details"] == {"database": "cannot be reached"}
    assert "database" in error["message"]
    assert alive.status_code == 200  # liveness does not depend on the database
    assert back.status_code == 200 and back.get_json()["checks"] == {"database": "ok"}


def test_readyz_is_a_503_naming_the_database_when_it_cannot_be_reached():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/quorra"
    store = Store.from_url(url)
    notifier = PollingNotifier(1.0)
    client = create_app(
        Settings(database_url=url, api_keys=(TEST_API_KEY,)), store=store, notifier=notifier
    ).test_client()

    error = assert_error(client.get("/readyz"), 503, "unavailable")
    notifier.close()
    store.close()

    assert error["details"] == {"database": "cannot be reached"}
    assert error["message"] == "not ready: database cannot be reached"
