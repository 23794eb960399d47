"""X-Request-ID: kept when sane, made when missing or not sane, echoed on every response,
bound to the logging context for the duration of the request."""

from __future__ import annotations

import re

import pytest

from quorra import logs
from quorra.api import create_app
from tests.api.conftest import AUTH

GENERATED = re.compile(r"[0-9a-f]{32}")


def test_a_sane_incoming_request_id_is_echoed(sqlite_client):
    response = sqlite_client.get("/healthz", headers={"X-Request-ID": "abc-123:retry.2"})

    assert response.headers["X-Request-ID"] == "abc-123:retry.2"


def test_a_missing_or_insane_request_id_is_replaced(sqlite_client):
    for incoming in (None, "", "x" * 129, "has space", "semi;colon", 'quote"', "\xfcn\xefcode"):
        headers = {"X-Request-ID": incoming} if incoming is not None else {}

        response = sqlite_client.get("/healthz", headers=headers)

        assert GENERATED.fullmatch(response.headers["X-Request-ID"]), incoming


def test_each_request_gets_its_own_generated_id(sqlite_client):
    assert (
        sqlite_client.get("/healthz").headers["X-Request-ID"] != sqlite_client.get("/healthz").headers["X-Request-ID"]
    )


@pytest.mark.parametrize(
    ("method", "path", "key", "status"),
    [("get", "/nowhere", True, 404), ("get", "/v1/queues", False, 401), ("delete", "/v1/queues", True, 405)],
)
def test_error_responses_carry_the_request_id_too(sqlite_client, method, path, key, status):
    response = getattr(sqlite_client, method)(path, headers={"X-Request-ID": "trace-me", **(AUTH if key else {})})

    assert response.status_code == status
    assert response.headers["X-Request-ID"] == "trace-me"


def test_the_request_id_is_bound_for_logging_during_the_request_only(settings, store, notifier):
    app = create_app(settings, store=store, notifier=notifier)

    @app.get("/whoami")
    def whoami():
        return {"request_id": logs.request_id.get()}

    response = app.test_client().get("/whoami", headers={**AUTH, "X-Request-ID": "bound-1"})

    assert response.get_json() == {"request_id": "bound-1"}
    assert logs.request_id.get() is None
