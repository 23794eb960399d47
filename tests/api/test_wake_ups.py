"""Enqueue wakes workers through the notifier that make_notifier picks for the settings."""

from __future__ import annotations

import pytest
import redis

from quorra.api import create_app
from quorra.notify import PgNotifier, PollingNotifier, RedisNotifier
from tests.api.conftest import AUTH, post_job


def test_without_a_notifier_the_app_builds_the_one_the_database_calls_for(settings, store):
    app = create_app(settings, store=store)
    notifier = app.extensions["quorra"].notifier

    response = post_job(app.test_client(), {"type": "t", "payload": {}})

    assert response.status_code == 201
    expected = PgNotifier if settings.database_url.startswith("postgresql") else PollingNotifier
    assert type(notifier) is expected
    notifier.close()


@pytest.mark.redis
def test_with_redis_an_enqueue_publishes_the_queue_name_on_the_wake_up_channel(settings, store, redis_url):
    app = create_app(settings.model_copy(update={"redis_url": redis_url}), store=store)
    notifier = app.extensions["quorra"].notifier
    assert isinstance(notifier, RedisNotifier)
    subscriber = redis.Redis.from_url(redis_url).pubsub()
    subscriber.subscribe(notifier.channel)
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"

    app.test_client().post("/v1/jobs", json={"type": "t", "payload": {}, "queue": "mail"}, headers=AUTH)

    message = subscriber.get_message(timeout=5)
    assert message is not None and message["data"] == b"mail"
    subscriber.close()
    app.extensions["quorra"].close()
