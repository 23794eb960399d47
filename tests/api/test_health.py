"""/healthz and /readyz, with and without Redis."""

from __future__ import annotations

import pytest

from quorra.api import create_app
from tests.conftest import free_port


def test_healthz_answers_ok(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_checks_the_database(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "checks": {"database": "ok"}}


@pytest.mark.redis
def test_readyz_checks_redis_when_it_is_configured(settings, store, notifier, redis_url):
    app = create_app(settings.model_copy(update={"redis_url": redis_url}), store=store, notifier=notifier)

    response = app.test_client().get("/readyz")

    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "redis": "ok"}
    app.extensions["quorra"].redis.close()


def test_readyz_stays_200_but_degraded_naming_redis_when_redis_is_unreachable(settings, store, notifier):
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(settings.model_copy(update={"redis_url": unreachable}), store=store, notifier=notifier)

    response = app.test_client().get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "degraded", "checks": {"database": "ok", "redis": "cannot be reached"}}
