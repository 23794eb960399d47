"""Wake-ups over each channel: in-process, PostgreSQL LISTEN/NOTIFY and Redis pub/sub, and
Redis going down and coming back (a private redis-server)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis

from quorra.config import Settings
from quorra.notify import PgNotifier, PollingNotifier, RedisNotifier, make_notifier
from tests.conftest import free_port
from tests.worker.support import PrivateRedis, wait_until

LONG = 30.0  # a recheck interval no test waits out: a True can only come from a publish


def woken_by(publisher, subscription, queue: str = "q", timeout: float = 15.0) -> bool:
    """Publish until the subscription wakes (a listener may still be connecting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publisher.publish(queue)
        if subscription.wait(0.2):
            return True
    return False


# -- in-process ----------------------------------------------------------------------------------


def test_a_publish_between_listen_and_wait_is_not_lost():
    notifier = PollingNotifier(LONG)
    subscription = notifier.listen(["q"])

    notifier.publish("q")  # lands before the wait starts, as after an empty lease

    assert subscription.wait(LONG) is True
    notifier.close()


def test_a_publish_for_another_queue_does_not_wake():
    notifier = PollingNotifier(LONG)
    subscription = notifier.listen(["q"])

    notifier.publish("other")

    assert subscription.wait(0.1) is False
    notifier.close()


def test_polling_waiters_recheck_at_the_interval():
    notifier = PollingNotifier(0.05)
    started = time.monotonic()

    assert notifier.wait(["q"], LONG) is False
    assert time.monotonic() - started < LONG / 2
    notifier.close()


def test_close_ends_every_wait_at_once():
    notifier = PollingNotifier(LONG)
    subscription = notifier.listen(["q"])
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(subscription.wait(LONG)))
    waiter.start()

    notifier.close()
    waiter.join(5)

    assert results == [False]


def test_wake_all_wakes_waiters_of_every_queue():
    notifier = PollingNotifier(LONG)
    subscription = notifier.listen(["a", "b"])

    notifier.hub.wake_all()

    assert subscription.wait(LONG) is True
    notifier.close()


@pytest.mark.parametrize(
    ("database_url", "redis_url", "kind", "fallback"),
    [
        ("sqlite:///q.db", None, PollingNotifier, None),
        ("postgresql://u@h/db", None, PgNotifier, None),
        ("sqlite:///q.db", "redis://h:1/2", RedisNotifier, PollingNotifier),
        ("postgresql+psycopg2://u@h/db", "redis://h:1/2", RedisNotifier, PgNotifier),
    ],
)
def test_make_notifier_picks_the_channel(database_url, redis_url, kind, fallback):
    notifier = make_notifier(Settings(database_url=database_url, redis_url=redis_url))

    assert type(notifier) is kind
    if fallback is not None:
        assert type(notifier.fallback) is fallback
        assert notifier.channel == "quorra:wake:2"  # pub/sub ignores db numbers: the channel names it
    notifier.close()


def test_publish_never_raises_when_the_channel_is_unreachable(caplog):
    # Given notifiers pointed at ports where nothing listens
    pg = PgNotifier(f"postgresql://postgres@127.0.0.1:{free_port()}/x", interval=LONG, backstop=LONG)
    over_redis = RedisNotifier(f"redis://127.0.0.1:{free_port()}/0", PollingNotifier(LONG), backstop=LONG)

    for notifier in (pg, over_redis):
        subscription = notifier.hub.listen(["q"])
        # When they publish, several times
        for _ in range(3):
            notifier.publish("q")
        # Then nothing raised and this process's waiters still woke
        assert subscription.wait(1) is True
        notifier.close()
    redis_warnings = [r for r in caplog.records if getattr(r, "event", None) == "notify.channel_down"]
    assert len(redis_warnings) == 1  # one warning for the outage, not one per publish


# -- across processes' channels ------------------------------------------------------------------


@pytest.mark.postgres
def test_notify_wakes_a_waiter_of_another_notifier(postgres_url):
    publisher = PgNotifier(postgres_url, interval=LONG, backstop=LONG)
    waiter = PgNotifier(postgres_url, interval=LONG, backstop=LONG)

    assert woken_by(publisher, waiter.listen(["q"]))
    publisher.close()
    waiter.close()


@pytest.mark.redis
def test_redis_pubsub_wakes_a_waiter_of_another_notifier(redis_url):
    publisher = RedisNotifier(redis_url, PollingNotifier(LONG), backstop=LONG)
    waiter = RedisNotifier(redis_url, PollingNotifier(LONG), backstop=LONG)

    assert woken_by(publisher, waiter.listen(["q"]))
    publisher.close()
    waiter.close()


@pytest.mark.redis
@pytest.mark.postgres
def test_redis_down_falls_back_to_notify_with_one_warning_and_comes_back(postgres_url, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="quorra.notify")
    server = PrivateRedis(tmp_path)
    server.start()

    def notifier() -> RedisNotifier:
        return RedisNotifier(server.url, PgNotifier(postgres_url, interval=LONG, backstop=LONG), backstop=LONG)

    publisher, waiter = notifier(), notifier()
    subscription = waiter.listen(["q"])
    try:
        # Redis carries the wake-ups
        assert woken_by(publisher, subscription)

        # Redis stops: wake-ups still arrive (NOTIFY), and each notifier warns once
        server.stop()
        assert woken_by(publisher, subscription)
        for _ in range(5):
            publisher.publish("q")
        assert not publisher.health.is_up
        wait_until(lambda: not waiter.health.is_up, what="the listener notices")
        downs = [r for r in caplog.records if getattr(r, "event", None) == "notify.channel_down"]
        assert [r.channel for r in downs] == ["redis", "redis"]

        # Redis returns: both notifiers use it again
        server.start()
        wait_until(lambda: publisher.health.is_up and waiter.health.is_up, what="redis back in use")
        assert _published_over_redis(publisher, server.url)
        assert woken_by(publisher, subscription)
        ups = [r for r in caplog.records if getattr(r, "event", None) == "notify.channel_up"]
        assert sorted(r.channel for r in ups) == ["redis", "redis"]
    finally:
        publisher.close()
        waiter.close()
        server.stop()


def _published_over_redis(publisher: RedisNotifier, url: str) -> bool:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(publisher.channel)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            publisher.publish("seen")
            message = pubsub.get_message(timeout=0.2)
            if message is not None:
                return message["data"] == b"seen"
        return False
    finally:
        pubsub.close()
        client.close()
