"""X-API-Key on every /v1 route; the public routes need none."""

from __future__ import annotations

import logging

import pytest

from quorra.access import Credential, Permission, Role
from quorra.api import create_app
from quorra.api.services import warn_dev_api_key
from quorra.config import DEV_API_KEY, Settings
from tests.api.conftest import assert_error, job_count

V1_ROUTES = [
    ("post", "/v1/jobs"),
    ("post", "/v1/jobs/batch"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/00000000-0000-0000-0000-000000000000"),
    ("post", "/v1/jobs/00000000-0000-0000-0000-000000000000/cancel"),
    ("post", "/v1/jobs/00000000-0000-0000-0000-000000000000/retry"),
    ("get", "/v1/queues"),
]
BODY = {"type": "email_send", "payload": {}}


BAD_HEADERS = [
    {},
    {"X-API-Key": ""},
    {"X-API-Key": "wrong"},
    {"X-API-Key": "test-api-key "},
    {"X-API-Key": "test-api-key,other"},
    {"X-API-Key": "t\xe9st"},
    {"Authorization": "Bearer test-api-key"},
]


def test_every_v1_route_refuses_a_missing_or_wrong_key(client, store):
    for headers in BAD_HEADERS:
        for method, path in V1_ROUTES:
            response = getattr(client, method)(path, json=BODY if method == "post" else None, headers=headers)

            assert_error(response, 401, "unauthenticated")
    assert job_count(store) == 0


@pytest.fixture
def rotating_client(database_url, store, notifier):
    settings = Settings(database_url=database_url, api_keys=("old-key", "new-key-which-is-longer"))
    return create_app(settings, store=store, notifier=notifier).test_client()


@pytest.mark.parametrize("key", ["old-key", "new-key-which-is-longer"])
def test_each_configured_key_is_accepted(rotating_client, store, key):
    response = rotating_client.post("/v1/jobs", json=BODY, headers={"X-API-Key": key})

    assert response.status_code == 201
    assert job_count(store) == 1


def test_a_prefix_of_a_key_is_refused(rotating_client):
    assert_error(rotating_client.get("/v1/queues", headers={"X-API-Key": "old"}), 401, "unauthenticated")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_public_routes_need_no_key(client, path):
    assert client.get(path).status_code == 200


def test_the_authenticator_knows_every_configured_key_and_its_role():
    authenticator = Settings(api_keys=("a", "b", "c", "clé"), readonly_api_keys=("r",)).authenticator()

    assert authenticator.authenticate_key("b").role is Role.ADMIN
    assert authenticator.authenticate_key("clé").role is Role.ADMIN
    assert authenticator.authenticate_key("r").role is Role.VIEWER
    assert authenticator.authenticate_key("d") is None
    assert authenticator.authenticate_key("") is None
    assert authenticator.authenticate(Credential("bearer", "a")) is None  # a key is no bearer token


@pytest.fixture
def readonly_client(database_url, store, notifier):
    settings = Settings(database_url=database_url, api_keys=("admin-key",), readonly_api_keys=("viewer-key",))
    return create_app(settings, store=store, notifier=notifier).test_client()


def test_a_readonly_key_reads_but_is_refused_every_change(readonly_client, store):
    viewer = {"X-API-Key": "viewer-key"}
    created = readonly_client.post("/v1/jobs", json=BODY, headers={"X-API-Key": "admin-key"}).get_json()

    assert readonly_client.get(f"/v1/jobs/{created['id']}", headers=viewer).status_code == 200
    assert readonly_client.get("/v1/queues", headers=viewer).status_code == 200
    refused = [
        readonly_client.post("/v1/jobs", json=BODY, headers=viewer),
        readonly_client.post(f"/v1/jobs/{created['id']}/cancel", headers=viewer),
        readonly_client.post("/v1/schedules", json={"name": "s", "every": "1m", "type": "t"}, headers=viewer),
    ]
    for response in refused:
        assert_error(response, 403, "permission_denied")
        assert response.get_json()["error"]["details"]["role"] == "viewer"
    assert readonly_client.get(f"/v1/jobs/{created['id']}", headers=viewer).get_json()["status"] == "pending"
    assert job_count(store) == 1


def test_every_v1_view_declares_the_permission_it_needs(app):
    undeclared = [
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
        and not isinstance(getattr(app.view_functions[rule.endpoint], "required_permission", None), Permission)
    ]
    assert undeclared == []


def test_the_dev_api_key_is_warned_about_once_per_process(settings, store, notifier, caplog):
    dev_settings = settings.model_copy(update={"api_keys": (DEV_API_KEY,)})
    warn_dev_api_key.cache_clear()
    caplog.set_level(logging.WARNING, logger="quorra.api")

    create_app(dev_settings, store=store, notifier=notifier)
    create_app(dev_settings, store=store, notifier=notifier)

    warnings = [r for r in caplog.records if getattr(r, "event", None) == "auth.dev_key_in_use"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_no_warning_without_the_dev_key(settings, store, notifier, caplog):
    warn_dev_api_key.cache_clear()
    caplog.set_level(logging.WARNING, logger="quorra.api")

    create_app(settings, store=store, notifier=notifier)

    assert not [r for r in caplog.records if getattr(r, "event", None) == "auth.dev_key_in_use"]
