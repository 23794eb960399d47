"""Every error is the JSON envelope: routing errors, unknown exceptions, an unreachable
database, and a database whose schema is behind."""

from __future__ import annotations

import logging

import pytest

from quorra.api import create_app
from quorra.api.errors import STATUS_BY_CODE
from quorra.config import Settings
from quorra.errors import DatabaseUnavailable, SchemaOutOfDate
from quorra.store import Store
from tests.api.conftest import AUTH, RecordingNotifier, assert_error
from tests.conftest import TEST_API_KEY, free_port


def test_an_unknown_route_is_a_json_404(sqlite_client):
    assert_error(sqlite_client.get("/v2/nothing", headers=AUTH), 404, "not_found")


def test_a_wrong_method_is_a_json_405_with_allow(sqlite_client):
    response = sqlite_client.put("/v1/jobs", headers=AUTH)

    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST", "DELETE"}


def test_an_unexpected_exception_is_a_500_without_its_text_and_is_logged(settings, store, notifier, caplog):
    app = create_app(settings, store=store, notifier=notifier)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret connection string postgresql://user:hunter2@db")

    response = app.test_client().get("/boom", headers={"X-Request-ID": "req-500"})

    error = assert_error(response, 500, "internal")
    assert "hunter2" not in response.get_data(as_text=True)
    assert "req-500" in error["message"]
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "http.failed"]
    assert record.levelno == logging.ERROR and record.exc_info[0] is RuntimeError


def test_every_error_code_maps_to_an_http_error_status():
    assert all(400 <= status < 600 for status in STATUS_BY_CODE.values())
    assert STATUS_BY_CODE[DatabaseUnavailable.code] == 503


@pytest.fixture
def down_client():
    """A PostgreSQL store pointed at a free port where nothing listens."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/quorra"
    store = Store.from_url(url)
    notifier = RecordingNotifier()
    yield create_app(Settings(database_url=url, api_keys=(TEST_API_KEY,)), store=store, notifier=notifier).test_client()
    notifier.close()
    store.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/jobs"),
        ("post", "/v1/jobs/batch"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/00000000-0000-0000-0000-000000000000"),
        ("post", "/v1/jobs/00000000-0000-0000-0000-000000000000/cancel"),
        ("get", "/v1/queues"),
    ],
)
def test_an_unreachable_database_is_a_json_503(down_client, method, path):
    body = {"type": "t", "payload": {}}
    json_body = {"jobs": [body]} if path.endswith("batch") else body

    response = getattr(down_client, method)(path, json=json_body if method == "post" else None, headers=AUTH)

    assert_error(response, 503, "unavailable")


def test_readyz_names_the_database_when_it_is_unreachable(down_client):
    error = assert_error(down_client.get("/readyz"), 503, "unavailable")

    assert error["details"] == {"database": "cannot be reached"}
    assert "database" in error["message"]


def test_healthz_stays_up_while_the_database_is_down(down_client):
    assert down_client.get("/healthz").get_json() == {"status": "ok"}


def test_create_app_refuses_a_database_without_the_schema(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", api_keys=(TEST_API_KEY,))

    with pytest.raises(SchemaOutOfDate, match="quorra migrate"):
        create_app(settings, notifier=RecordingNotifier())


@pytest.mark.postgres
def test_create_app_refuses_a_postgres_database_without_the_schema(empty_postgres_url):
    settings = Settings(database_url=empty_postgres_url, api_keys=(TEST_API_KEY,))

    with pytest.raises(SchemaOutOfDate, match="quorra migrate"):
        create_app(settings, notifier=RecordingNotifier())


def test_create_app_refuses_an_unreachable_database():
    settings = Settings(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/q", api_keys=(TEST_API_KEY,))

    with pytest.raises(DatabaseUnavailable):
        create_app(settings, notifier=RecordingNotifier())


def test_create_app_opens_its_own_store_on_a_migrated_database(database_url):
    app = create_app(Settings(database_url=database_url, api_keys=(TEST_API_KEY,)), notifier=RecordingNotifier())

    response = app.test_client().post("/v1/jobs", json={"type": "t", "payload": {}}, headers=AUTH)

    assert response.status_code == 201
    app.extensions["quorra"].close()
