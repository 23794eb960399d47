"""Wake-ups: enqueue and retry publish the queue's name; long-polling leases wait for it.
A job that finishes (succeeded, dead, cancelled) publishes ``finished_key(queue)``, which
long polls of GET /v1/jobs/{id}?wait= wait for.

A Notifier only shortens waits. It is never the source of truth: after any wake-up (or
none) the caller asks the store again, so a lost message costs latency, never a job.

    publish(queue)          best effort, never raises
    listen(queues)          a Subscription: .wait(timeout) returns True when a publish for
                            one of `queues` arrived since the subscription was made or last
                            woke, False when it is worth checking the store again anyway
    listen_for_work(queues, group)
                            the same for a long-polling lease, but a publish wakes only one
                            of the leases of each group (tenant) waiting on its queue
                            (see WorkSubscription)
    wait(queues, timeout)   listen(queues).wait(timeout), for one-off waits
    close()                 ends every wait at once (server shutdown)

Subscribe *before* asking the store, then wait: a publish that lands in between is not
lost (a bare ``wait`` after an empty lease could miss it).

Three channels, chosen by ``make_notifier(settings)``:

- ``RedisNotifier`` when REDIS_URL is set: pub/sub on one channel per Redis database,
  the queue name as the message. If Redis fails, it says so once, falls back to the next
  channel (NOTIFY or polling), and probes Redis in the background until it answers again.
- ``PgNotifier`` on PostgreSQL: LISTEN/NOTIFY on a dedicated connection, the payload the
  queue name only (NOTIFY payloads must stay under 8,000 bytes). Waiters still re-check
  the store every ``backstop`` seconds, because NOTIFY does not pass through a
  transaction-pooling PgBouncer and a listener can be reconnecting.
- ``PollingNotifier`` on SQLite: waiters re-check every QUORRA_POLL_INTERVAL.

Whatever the channel, deliveries land in a process-local ``LocalHub``, which wakes the
waiting threads.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from quorra.config import Settings

logger = logging.getLogger(__name__)

# Push channels can lose a message (a listener reconnecting, a restart): waiters re-check
# the store this many poll intervals apart anyway.
BACKSTOP_POLL_INTERVALS = 10
PG_CHANNEL = "quorra_wake"
PROBE_BACKOFF = (0.25, 5.0)  # first and longest pause between reconnection attempts
LISTEN_POLL_SECONDS = 0.25  # listeners look up this often to notice close()
_ALL = "\x00all"  # a wake-up for every queue: the channel was down, messages may be lost


def finished_key(queue: str) -> str:
    """The wake-up of jobs of `queue` that finished. '/' is no character of a queue name,
    so this never wakes the queue's leases (nor theirs this)."""
    return f"finished/{queue}"


class Subscription(Protocol):
    def wait(self, timeout: float) -> bool: ...


class WorkListener(Subscription, Protocol):
    def pass_on(self) -> None: ...


class Notifier(Protocol):
    def publish(self, queue: str) -> None: ...

    def listen(self, queues: Sequence[str]) -> Subscription: ...

    def listen_for_work(self, queues: Sequence[str], group: str = "") -> WorkListener: ...

    def wait(self, queues: Sequence[str], timeout: float) -> bool: ...

    def close(self) -> None: ...


def make_notifier(settings: Settings) -> Notifier:
    """Redis pub/sub when REDIS_URL is set, else LISTEN/NOTIFY on PostgreSQL, else polling;
    Redis falls back to the one of the other two that the database allows."""
    interval = settings.poll_interval_seconds
    backstop = interval * BACKSTOP_POLL_INTERVALS
    if settings.database_url.startswith("postgresql"):
        fallback: HubNotifier = PgNotifier(settings.database_url, interval=interval, backstop=backstop)
    else:
        fallback = PollingNotifier(interval)
    if settings.redis_url:
        return RedisNotifier(settings.redis_url, fallback, backstop=backstop)
    return fallback


# -- in-process delivery ----------------------------------------------------------------------


class LocalHub:
    """Wakes waiters of this process. Every notifier routes its deliveries through one.

    Two kinds of waiter: a plain one (`listen`) wakes on every delivery for its keys; a
    lease (`listen_for_work`) is one of many consumers of a queue, and a delivery wakes
    only the one of its group that has waited longest, since one new job needs one lease:
    waking every idle worker's long poll made each of them run a lease statement for the
    one job, all at once (a thundering herd of empty leases, on the database and on the
    GIL). The group is the lease's tenant: a queue's name is each tenant's own, and the
    publish does not say whose job came, so one lease of each tenant waiting is woken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)  # plain waiters
        self._generation: dict[str, int] = {}
        # leases waiting now, per key and group, longest first (a dict as an ordered set)
        self._consumers: dict[str, dict[str, dict[WorkSubscription, None]]] = {}
        self._closed = False

    def deliver(self, queue: str) -> None:
        with self._lock:
            self._generation[queue] = self._generation.get(queue, 0) + 1
            self._condition.notify_all()
            if queue == _ALL:
                self._wake_every_consumer()
            else:
                for waiting in list(self._consumers.get(queue, {}).values()):
                    self._wake(next(iter(waiting)))

    def wake_all(self) -> None:
        """Wake every waiter, whatever its queues: the channel was down or came back."""
        self.deliver(_ALL)

    def listen(self, queues: Sequence[str], recheck: Callable[[], float] | None = None) -> HubSubscription:
        return HubSubscription(self, queues, recheck)

    def listen_for_work(
        self, queues: Sequence[str], recheck: Callable[[], float] | None = None, group: str = ""
    ) -> WorkSubscription:
        return WorkSubscription(self, queues, recheck, group)

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self.listen(queues).wait(timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._condition.notify_all()
            self._wake_every_consumer()

    @property
    def closed(self) -> bool:
        return self._closed

    def consumers_waiting(self, queue: str) -> int:
        """Leases waiting on `queue` now, whatever their group."""
        with self._lock:
            return sum(len(waiting) for waiting in self._consumers.get(queue, {}).values())

    def _snapshot(self, keys: Sequence[str]) -> list[int]:
        return [self._generation.get(key, 0) for key in keys]

    # -- consumers (under self._lock) ------------------------------------------------------------

    def _add_consumer(self, consumer: WorkSubscription) -> None:
        for key in consumer.queues:
            self._consumers.setdefault(key, {}).setdefault(consumer.group, {})[consumer] = None

    def _remove_consumer(self, consumer: WorkSubscription) -> None:
        for key in consumer.queues:
            groups = self._consumers.get(key, {})
            waiting = groups.get(consumer.group)
            if waiting is not None:
                waiting.pop(consumer, None)
                if not waiting:
                    del groups[consumer.group]
            if not groups:
                self._consumers.pop(key, None)

    def _wake_every_consumer(self) -> None:
        for groups in list(self._consumers.values()):
            for waiting in list(groups.values()):
                for consumer in list(waiting):
                    self._wake(consumer)

    def _wake(self, consumer: WorkSubscription) -> None:
        """Take the consumer off every queue it waits on (it is woken once), and wake it."""
        self._remove_consumer(consumer)
        consumer.woken = True
        consumer.condition.notify()


class HubSubscription:
    """What a waiter has seen of its queues; `wait` returns once something newer arrives."""

    def __init__(self, hub: LocalHub, queues: Sequence[str], recheck: Callable[[], float] | None):
        self._hub = hub
        self._keys = (*queues, _ALL)
        self._recheck = recheck
        with hub._lock:
            self._seen = hub._snapshot(self._keys)

    def wait(self, timeout: float) -> bool:
        if self._recheck is not None:
            timeout = min(timeout, self._recheck())
        hub = self._hub
        with hub._lock:
            hub._condition.wait_for(lambda: hub._closed or hub._snapshot(self._keys) != self._seen, max(0.0, timeout))
            return self._catch_up() and not hub._closed

    def _catch_up(self) -> bool:
        """Under the hub's lock: take in what was delivered; True when anything was."""
        current = self._hub._snapshot(self._keys)
        woken, self._seen = current != self._seen, current
        return woken


class WorkSubscription(HubSubscription):
    """A long-polling lease: one of the consumers of its queues.

    A publish that lands while the lease is not waiting (between listen and wait, or while
    it leases) makes its next `wait` return at once, as for any subscription: no wake-up
    is lost. A publish while it waits wakes only one consumer of that queue in each group
    (tenant), the one that has waited longest; the others sleep on. So the one woken passes
    the wake-up on (`pass_on`) when it may have left work behind (it leased a full batch)
    or cannot use it (its call ended meanwhile)."""

    def __init__(self, hub: LocalHub, queues: Sequence[str], recheck: Callable[[], float] | None, group: str = ""):
        super().__init__(hub, queues, recheck)
        self.queues = tuple(dict.fromkeys(queues))
        self.group = group
        self.condition = threading.Condition(hub._lock)  # its own: a delivery wakes this thread only
        self.woken = False

    def wait(self, timeout: float) -> bool:
        if self._recheck is not None:
            timeout = min(timeout, self._recheck())
        hub = self._hub
        with hub._lock:
            if hub._closed or self._catch_up():
                return not hub._closed
            self.woken = False
            hub._add_consumer(self)
            try:
                self.condition.wait_for(lambda: self.woken, max(0.0, timeout))
            finally:
                hub._remove_consumer(self)  # timed out (woken, it is off them already)
            self._catch_up()  # what the others were woken for meanwhile is theirs
            return self.woken and not hub._closed

    def pass_on(self) -> None:
        """Wake another consumer of these queues (this one leaves work it was woken for)."""
        for queue in self.queues:
            self._hub.deliver(queue)


class HubNotifier:
    """The shared part: deliveries go through `hub`; subclasses say how often waiters must
    re-check the store (`recheck_seconds`) and may start a listener on the first wait."""

    def __init__(self) -> None:
        self.hub = LocalHub()

    def publish(self, queue: str) -> None:
        self.hub.deliver(queue)

    def listen(self, queues: Sequence[str]) -> Subscription:
        self.start_listening()
        return self.hub.listen(queues, self.recheck_seconds)

    def listen_for_work(self, queues: Sequence[str], group: str = "") -> WorkListener:
        self.start_listening()
        return self.hub.listen_for_work(queues, self.recheck_seconds, group)

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self.listen(queues).wait(timeout)

    def close(self) -> None:
        self.hub.close()

    def start_listening(self) -> None:
        """Start receiving other processes' publishes (no-op where there is no channel)."""

    def recheck_seconds(self) -> float:
        raise NotImplementedError

    def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the notifier is closed."""
        with self.hub._lock:
            self.hub._condition.wait_for(lambda: self.hub.closed, seconds)


class PollingNotifier(HubNotifier):
    """No shared channel (SQLite, or the fallback): waiters re-check the store every
    `interval` seconds; publishes from this same process still wake them at once."""

    def __init__(self, interval: float, hub: LocalHub | None = None):
        super().__init__()
        self.hub = hub or self.hub
        self.interval = interval

    def recheck_seconds(self) -> float:
        return self.interval


# -- reconnecting in the background ---------------------------------------------------------------


class Backoff:
    """Pauses that double from `first` up to `longest`; `reset` after a success."""

    def __init__(self, first: float = PROBE_BACKOFF[0], longest: float = PROBE_BACKOFF[1]):
        self.first, self.longest = first, longest
        self.current = first

    def next(self) -> float:
        pause, self.current = self.current, min(self.current * 2, self.longest)
        return pause

    def reset(self) -> None:
        self.current = self.first


class ChannelHealth:
    """Up or down, with one warning when a channel goes down and one info line when it is
    back; either transition wakes every waiter so that it re-checks the store."""

    def __init__(self, name: str, hub: LocalHub):
        self.name = name
        self.hub = hub
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    def down(self, error: BaseException) -> bool:
        """Mark down; True when this call is the transition (and logged it)."""
        with self._lock:
            if not self._up.is_set():
                return False
            self._up.clear()
        logger.warning(
            "wake-up channel unavailable; falling back",
            extra={"event": "notify.channel_down", "channel": self.name, "error": str(error)[:300]},
        )
        self.hub.wake_all()
        return True

    def up(self) -> None:
        with self._lock:
            if self._up.is_set():
                return
            self._up.set()
        logger.info("wake-up channel available again", extra={"event": "notify.channel_up", "channel": self.name})
        self.hub.wake_all()

    def wait_up(self, timeout: float) -> bool:
        return self._up.wait(timeout)


def _daemon(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


# -- PostgreSQL LISTEN/NOTIFY -----------------------------------------------------------------------


def libpq_url(database_url: str) -> str:
    """SQLAlchemy's 'postgresql+psycopg2://' spelling -> the 'postgresql://' libpq reads."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(scheme="postgresql"))


class PgNotifier(HubNotifier):
    """NOTIFY on publish; LISTEN on a dedicated connection, in a thread started by the first
    wait. Waiters re-check every `backstop` seconds while the listener is connected and every
    `interval` seconds while it is reconnecting.

    Publishes share one connection, and each NOTIFY is a transaction of its own, whose commit
    PostgreSQL serialises with every other notifying commit. A publish that finds another's
    NOTIFY in flight does not wait for it: it leaves its queue with that publisher, which
    sends every queue left meanwhile in one more statement before it lets go (and a publish
    with none in flight sends at once, from its caller's thread). Under load one NOTIFY then
    wakes for many submits, and no request waits in line to publish."""

    def __init__(self, database_url: str, *, interval: float, backstop: float, hub: LocalHub | None = None):
        super().__init__()
        self.hub = hub or self.hub
        self.dsn = libpq_url(database_url)
        self.interval, self.backstop = interval, backstop
        self.health = ChannelHealth("postgresql", self.hub)
        self._listening = threading.Event()
        self._publish_lock = threading.Lock()  # held by the one publisher sending
        self._publish_conn = None
        self._waiting: set[str] = set()  # queues left for the publisher sending
        self._waiting_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._listener: threading.Thread | None = None

    def publish(self, queue: str) -> None:
        with self._waiting_lock:
            self._waiting.add(queue)
        # Whoever holds the lock looks again once it has let go, so a queue left while it
        # sent is sent by it (or by a later publisher), never stranded.
        while self._waiting and self._publish_lock.acquire(blocking=False):
            try:
                self._notify_waiting()
            finally:
                self._publish_lock.release()

    def _notify_waiting(self) -> None:
        import psycopg2

        with self._waiting_lock:
            queues, self._waiting = sorted(self._waiting), set()
        if not queues:
            return
        try:
            self._notify(queues)
        except psycopg2.Error as exc:
            self._close_publish_connection()
            logger.warning(
                "NOTIFY failed",
                extra={"event": "notify.publish_failed", "queues": queues, "error": str(exc)[:300]},
            )
            for queue in queues:
                self.hub.deliver(queue)  # at least this process's waiters

    def _notify(self, queues: list[str]) -> None:
        import psycopg2

        if self._publish_conn is None or self._publish_conn.closed:
            self._publish_conn = psycopg2.connect(self.dsn, connect_timeout=2, application_name="quorra-notify")
            self._publish_conn.autocommit = True
        with self._publish_conn.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, queue) FROM unnest(%s::text[]) AS queue", (PG_CHANNEL, queues))

    def _drop_publish_connection(self) -> None:
        with self._publish_lock:
            self._close_publish_connection()

    def _close_publish_connection(self) -> None:
        if self._publish_conn is not None:
            self._publish_conn.close()
        self._publish_conn = None

    def recheck_seconds(self) -> float:
        return self.backstop if self._listening.is_set() else self.interval

    def start_listening(self) -> None:
        with self._start_lock:
            if self._listener is None and not self.hub.closed:
                self._listener = _daemon(self._listen_forever, "quorra-pg-listen")

    def close(self) -> None:
        super().close()
        self._drop_publish_connection()
        if self._listener is not None:
            self._listener.join(timeout=5)

    def _listen_forever(self) -> None:
        import psycopg2

        backoff = Backoff()
        while not self.hub.closed:
            try:
                self._listen_once(backoff)
            except (psycopg2.Error, OSError) as exc:
                self._listening.clear()
                self.health.down(exc)
                self.pause(backoff.next())

    def _listen_once(self, backoff: Backoff) -> None:
        import psycopg2

        conn = psycopg2.connect(
            self.dsn, connect_timeout=5, application_name="quorra-listen", keepalives=1, keepalives_idle=30
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {PG_CHANNEL}")
            self._listening.set()
            backoff.reset()
            self.health.up()
            self._drain(conn)
        finally:
            conn.close()

    def _drain(self, conn) -> None:
        while not self.hub.closed:
            if select.select([conn], [], [], LISTEN_POLL_SECONDS)[0]:
                conn.poll()
                while conn.notifies:
                    self.hub.deliver(conn.notifies.pop(0).payload)


# -- Redis pub/sub ----------------------------------------------------------------------------------


class RedisNotifier(HubNotifier):
    """PUBLISH on one channel per Redis database; a listener thread (started by the first
    wait) delivers into the fallback's hub. While Redis is down, publishes go through the
    fallback and a prober reconnects with backoff."""

    def __init__(self, redis_url: str, fallback: HubNotifier, *, backstop: float):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        super().__init__()
        self.fallback = fallback
        self.hub = fallback.hub
        self.backstop = backstop
        self.health = ChannelHealth("redis", self.hub)
        # One quick retry (a pooled connection may be stale), never redis-py's long default.
        self.client = redis.Redis.from_url(
            redis_url, socket_connect_timeout=1, socket_timeout=2, retry=Retry(NoBackoff(), 1)
        )
        self.channel = f"quorra:wake:{self.client.connection_pool.connection_kwargs.get('db', 0)}"
        self._redis_errors = (redis.RedisError, OSError)
        self._start_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._prober: threading.Thread | None = None

    def publish(self, queue: str) -> None:
        if self.health.is_up:
            try:
                self.client.publish(self.channel, queue)
                return
            except self._redis_errors as exc:
                self._went_down(exc)
        self.fallback.publish(queue)

    def recheck_seconds(self) -> float:
        return self.backstop if self.health.is_up else self.fallback.recheck_seconds()

    def start_listening(self) -> None:
        self.fallback.start_listening()  # NOTIFY keeps flowing for publishers that fell back
        with self._start_lock:
            if self._listener is None and not self.hub.closed:
                self._listener = _daemon(self._listen_forever, "quorra-redis-listen")

    def close(self) -> None:
        self.fallback.close()
        for thread in (self._listener, self._prober):
            if thread is not None:
                thread.join(timeout=5)
        self.client.close()

    def _went_down(self, error: BaseException) -> None:
        if self.health.down(error):
            with self._start_lock:
                if self._prober is None or not self._prober.is_alive():
                    self._prober = _daemon(self._probe_until_up, "quorra-redis-probe")

    def _probe_until_up(self) -> None:
        backoff = Backoff()
        while not self.hub.closed and not self.health.is_up:
            self.pause(backoff.next())
            try:
                self.client.ping()
            except self._redis_errors:
                continue
            self.health.up()

    def _listen_forever(self) -> None:
        while not self.hub.closed:
            if not self.health.wait_up(LISTEN_POLL_SECONDS):
                continue
            try:
                self._listen_once()
            except self._redis_errors as exc:
                self._went_down(exc)

    def _listen_once(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            self.hub.wake_all()  # anything published while we were not subscribed is lost
            while not self.hub.closed:
                message = pubsub.get_message(timeout=LISTEN_POLL_SECONDS)
                if message is not None:
                    self.hub.deliver(message["data"].decode("utf-8", "replace"))
        finally:
            pubsub.close()
