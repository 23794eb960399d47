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


# -- leases: one consumer woken per publish --------------------------------------------------------


class WaitingLease:
    """A long poll's subscription, waiting in a thread of its own (once in place)."""

    def __init__(self, notifier, queues=("q",), group=""):
        self.subscription = notifier.listen_for_work(list(queues), group)
        self.results: list[bool] = []
        self.thread = threading.Thread(target=lambda: self.results.append(self.subscription.wait(LONG)))
        self.thread.start()


def leases_in_place(notifier, count: int, queue: str = "q") -> None:
    wait_until(lambda: notifier.hub.consumers_waiting(queue) == count, what=f"{count} leases waiting")


def test_a_publish_wakes_one_of_the_waiting_leases():
    # Given two leases waiting on the queue
    notifier = PollingNotifier(LONG)
    first, second = WaitingLease(notifier), WaitingLease(notifier)
    leases_in_place(notifier, 2)

    # When one job's publish arrives
    notifier.publish("q")

    # Then the one that waited longest wakes, and the other waits on
    first.thread.join(LONG)
    assert first.results == [True]
    assert second.thread.is_alive() and notifier.hub.consumers_waiting("q") == 1
    notifier.publish("q")
    second.thread.join(LONG)
    assert second.results == [True]
    notifier.close()


def test_a_publish_wakes_one_waiting_lease_of_each_tenant():
    # Given two leases of each of two tenants waiting on a queue of that name (each its own)
    notifier = PollingNotifier(LONG)
    leases = {group: [WaitingLease(notifier, group=group) for _ in range(2)] for group in ("acme", "globex")}
    leases_in_place(notifier, 4)

    # When a job of one of them comes (the publish names the queue, not the tenant)
    notifier.publish("q")

    # Then the longest waiting of each tenant wakes: one of them can lease it
    for group in leases:
        leases[group][0].thread.join(LONG)
    assert [leases[group][0].results for group in leases] == [[True], [True]]
    assert notifier.hub.consumers_waiting("q") == 2
    notifier.close()


def test_a_wake_up_passed_on_wakes_the_next_lease():
    # Given two waiting leases, the first of them woken by a publish
    notifier = PollingNotifier(LONG)
    first, second = WaitingLease(notifier), WaitingLease(notifier)
    leases_in_place(notifier, 2)
    notifier.publish("q")
    first.thread.join(LONG)

    # When it passes the wake-up on (it leased a full batch, or its call ended)
    first.subscription.pass_on()

    # Then the other one wakes
    second.thread.join(LONG)
    assert (first.results, second.results) == ([True], [True])
    notifier.close()


def test_a_publish_while_no_lease_waits_reaches_every_lease_at_its_next_wait():
    # Given two leases subscribed, both busy leasing (not waiting yet)
    notifier = PollingNotifier(LONG)
    subscriptions = [notifier.listen_for_work(["q"]), notifier.listen_for_work(["q"])]

    # When a publish lands meanwhile
    notifier.publish("q")

    # Then neither misses it: each one's next wait returns at once
    assert [s.wait(LONG) for s in subscriptions] == [True, True]
    notifier.close()


def test_a_lease_on_several_queues_is_woken_once_and_waits_on_none_after():
    notifier = PollingNotifier(LONG)
    lease = WaitingLease(notifier, queues=("a", "b"))
    leases_in_place(notifier, 1, "b")

    notifier.publish("b")

    lease.thread.join(LONG)
    assert lease.results == [True]
    assert notifier.hub.consumers_waiting("a") == notifier.hub.consumers_waiting("b") == 0
    notifier.close()


def test_wake_all_and_close_wake_every_waiting_lease():
    notifier = PollingNotifier(LONG)
    woken = [WaitingLease(notifier, queues=(queue,)) for queue in ("a", "b")]
    leases_in_place(notifier, 1, "a")
    leases_in_place(notifier, 1, "b")
    notifier.hub.wake_all()
    for lease in woken:
        lease.thread.join(LONG)

    closed = [WaitingLease(notifier), WaitingLease(notifier)]
    leases_in_place(notifier, 2)
    notifier.close()
    for lease in closed:
        lease.thread.join(LONG)

    assert [lease.results for lease in woken] == [[True], [True]]
    assert [lease.results for lease in closed] == [[False], [False]]


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


@pytest.fixture
def notifying(postgres_url):
    """(publisher, waiter): two PgNotifiers, as two processes have, the waiter's listener connected."""
    publisher = PgNotifier(postgres_url, interval=LONG, backstop=LONG)
    waiter = PgNotifier(postgres_url, interval=LONG, backstop=LONG)
    assert woken_by(publisher, waiter.listen(["warm-up"]), "warm-up")
    yield publisher, waiter
    publisher.close()
    waiter.close()


@pytest.mark.postgres
def test_notify_of_many_publishers_at_once_wakes_every_queue(notifying):
    # Given a waiter on each of 40 queues, listening through another notifier (another process's)
    publisher, waiter = notifying
    queues = [f"q{n}" for n in range(40)]
    subscriptions = {queue: waiter.listen([queue]) for queue in queues}

    # When 40 threads publish one queue each, at once
    start = threading.Barrier(len(queues))

    def publish(queue: str) -> None:
        start.wait()
        publisher.publish(queue)

    threads = [threading.Thread(target=publish, args=(queue,)) for queue in queues]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every queue's waiter wakes: no publish that found another in flight was lost
    deadline = time.monotonic() + 15
    unwoken = [queue for queue, sub in subscriptions.items() if not sub.wait(max(0.0, deadline - time.monotonic()))]
    assert unwoken == []


@pytest.mark.postgres
def test_a_publish_during_anothers_notify_leaves_its_queue_to_it_and_does_not_wait(notifying):
    # Given a publisher whose first NOTIFY is held up until the test lets it go (a busy server)
    publisher, waiter = notifying
    sent, in_flight, let_go, real_notify = [], threading.Event(), threading.Event(), publisher._notify

    def held_first_notify(queues):
        sent.append(list(queues))
        if len(sent) == 1:
            in_flight.set()
            assert let_go.wait(30)
        real_notify(queues)

    publisher._notify = held_first_notify
    subscriptions = {queue: waiter.listen([queue]) for queue in ("first", "a", "b", "c")}
    first = threading.Thread(target=publisher.publish, args=("first",))
    first.start()
    assert in_flight.wait(10)

    # When three more publish while it is in flight
    for queue in ("a", "b", "c"):
        publisher.publish(queue)
    still_in_flight = first.is_alive()
    let_go.set()
    first.join()

    # Then they returned without waiting for it, and it sent their queues in one more statement
    assert still_in_flight
    assert sent == [["first"], ["a", "b", "c"]]
    assert all(subscription.wait(10) for subscription in subscriptions.values())


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
