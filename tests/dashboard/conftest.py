"""The dashboard through Flask's test client, on each backend: a client signed in with an
API key (its session cookie kept by the client), and the CSRF token its forms carry."""

from __future__ import annotations

import re

import pytest

from quorra.api import create_app
from quorra.config import Settings
from quorra.notify import PollingNotifier
from tests.conftest import TEST_API_KEY

READONLY_KEY = "read-only-key"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def dashboard_settings(settings) -> Settings:
    return settings.model_copy(update={"readonly_api_keys": (READONLY_KEY,)})


@pytest.fixture
def app(dashboard_settings, store):
    notifier = PollingNotifier(0.5)
    yield create_app(dashboard_settings, store=store, notifier=notifier)
    notifier.close()


@pytest.fixture
def anonymous(app):
    return app.test_client()


@pytest.fixture
def client(app):
    """Signed in with the admin key."""
    client = app.test_client()
    assert sign_in(client, TEST_API_KEY).status_code == 302
    return client


def csrf_token(client, path: str = "/signin") -> str:
    page = client.get(path).get_data(as_text=True)
    match = _TOKEN.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client, key: str):
    return client.post("/signin", data={"api_key": key, "csrf_token": csrf_token(client)})


def post(client, path: str, **form):
    """A form of the dashboard, with the session's CSRF token."""
    return client.post(path, data={"csrf_token": csrf_token(client, "/"), **form})


def text(response) -> str:
    return response.get_data(as_text=True)
