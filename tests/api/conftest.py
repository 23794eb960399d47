"""The real Flask app on each backend, through Flask's test client."""

from __future__ import annotations

from typing import Any

import pytest

from quorra.api import create_app
from quorra.notify import PollingNotifier
from quorra.store import Store
from tests.conftest import TEST_API_KEY

AUTH = {"X-API-Key": TEST_API_KEY}


class RecordingNotifier(PollingNotifier):
    """The real in-process notifier, remembering what was published."""

    def __init__(self, interval: float = 0.5):
        super().__init__(interval)
        self.published: list[str] = []

    def publish(self, queue: str) -> None:
        self.published.append(queue)
        super().publish(queue)


@pytest.fixture
def notifier():
    notifier = RecordingNotifier()
    yield notifier
    notifier.close()


@pytest.fixture
def app(settings, store, notifier):
    return create_app(settings, store=store, notifier=notifier)


@pytest.fixture
def client(app):
    return app.test_client()


def job_count(store: Store) -> int:
    return sum(count.count for count in store.queue_counts())


def post_job(client, body: Any, **kwargs):
    return client.post("/v1/jobs", json=body, headers=AUTH, **kwargs)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "details" in error
    return error


@pytest.fixture
def sqlite_client(sqlite_url, notifier):
    """For behaviour that does not touch storage (routing, headers, the spec): one backend."""
    from quorra.config import Settings

    store = Store.from_url(sqlite_url)
    yield create_app(
        Settings(database_url=sqlite_url, api_keys=(TEST_API_KEY,)), store=store, notifier=notifier
    ).test_client()
    store.close()
