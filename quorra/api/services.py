"""What the views share, built once per app by ``create_app``: settings, the store (for
reads), the job manager (for every change of state, with its metrics and wake-ups), the
job waits (long polls), the notifier and (when REDIS_URL is set) a Redis client for the readiness check."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import redis
from flask import current_app

from quorra.access import Authenticator
from quorra.api.waits import JobWaits, max_job_waits
from quorra.config import Settings
from quorra.credentials import build_authenticator
from quorra.keys import KeyResolver
from quorra.manager import JobManager
from quorra.migrate import ensure_at_head
from quorra.notify import Notifier
from quorra.store import Store

logger = logging.getLogger(__name__)

EXTENSION = "quorra"
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    notifier: Notifier
    redis: redis.Redis | None = None

    @functools.cached_property
    def manager(self) -> JobManager:
        return JobManager(self.store, self.notifier, default_timeout_seconds=self.settings.default_job_timeout_seconds)

    @functools.cached_property
    def _access(self) -> tuple[Authenticator, KeyResolver]:
        return build_authenticator(self.settings, self.store)

    @property
    def authenticator(self) -> Authenticator:
        return self._access[0]

    @property
    def key_resolver(self) -> KeyResolver:
        """The managed keys' cache of this process (a key revoked here is forgotten at once)."""
        return self._access[1]

    @functools.cached_property
    def waits(self) -> JobWaits:
        """The long polls of GET /v1/jobs/{id}?wait=, bounded by the request threads."""
        return JobWaits(self.store, self.notifier, max_job_waits(self.settings.web_threads))

    def close(self) -> None:
        self.waits.stop()
        self.notifier.close()
        if self.redis is not None:
            self.redis.close()
        self.store.close()


def services() -> Services:
    return current_app.extensions[EXTENSION]


def open_store(settings: Settings) -> Store:
    """A store on DATABASE_URL, refused (SchemaOutOfDate, DatabaseUnavailable) unless the
    database answers and its schema is at the latest migration."""
    store = Store.from_url(settings.database_url)
    try:
        store.ping()
        ensure_at_head(store.engine)
    except BaseException:
        store.close()
        raise
    return store


def redis_client(settings: Settings) -> redis.Redis | None:
    if settings.redis_url is None:
        return None
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
    )


@functools.cache
def warn_dev_api_key() -> None:
    """Once per process tree: gunicorn's master warns before it forks, and its workers
    inherit the cache, so one start logs one warning."""
    logger.warning(
        "THE DEVELOPMENT API KEY IS IN USE: anyone who has read the README can submit jobs."
        " Set QUORRA_API_KEY to a secret of your own before exposing this server.",
        extra={"event": "auth.dev_key_in_use"},
    )
