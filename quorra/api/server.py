"""`quorra web`: the REST API under gunicorn, run from code (no gunicorn command line).

The master checks the database (reachable, schema at head) before it forks, so a bad
DATABASE_URL or a missing `quorra migrate` fails at once with exit code 1; then it forks
QUORRA_WEB_WORKERS gthread workers of QUORRA_WEB_THREADS threads each. SIGTERM is a
graceful stop: in-flight requests get QUORRA_SHUTDOWN_GRACE seconds, then exit 0.
``gunicorn.conf.py`` (top of the repository) applies the same settings to a plain
`gunicorn -c gunicorn.conf.py 'quorra.api:create_app()'`."""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from prometheus_client import multiprocess

from quorra import tracing
from quorra.api import create_app
from quorra.api.http_worker import WebLimits, worker_class
from quorra.api.jobs import BATCH_BODY_FACTOR
from quorra.api.services import EXTENSION, open_store, warn_dev_api_key
from quorra.config import Settings, listen_address, multiprocess_dir
from quorra.errors import DatabaseUnavailable, QuorraError
from quorra.store import Store

logger = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    WebServer(settings).run()


class WebServer(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for name, value in gunicorn_settings(self.settings).items():
            self.cfg.set(name, value)

    def load(self):
        # The master has checked the schema already; a worker (re)started while the
        # database blips must still boot, and /readyz reports the outage.
        # One pooled connection per request thread (the pool may overflow to twice that).
        tracing.setup("web")  # in the forked worker (the SDK's export thread is per process)
        store = Store.from_url(self.settings.database_url, pool_size=self.settings.web_threads)
        return create_app(self.settings, store=store)


def gunicorn_settings(settings: Settings) -> dict[str, Any]:
    return {
        "bind": [listen_address(settings.http_addr)],
        "worker_class": worker_class(web_limits(settings)),
        "workers": settings.web_workers,
        "threads": settings.web_threads,
        "worker_connections": settings.web_max_connections,
        "keepalive": max(1, math.ceil(settings.web_keepalive_seconds)),
        "graceful_timeout": max(1, math.ceil(settings.shutdown_grace_seconds)),
        "accesslog": None,  # the app logs each request itself, as JSON
        "pre_request": _no_request_line,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "logger_class": GunicornLogger,
        "proc_name": "quorra-web",
        "control_socket_disable": True,  # one shared socket path would collide between servers
        "on_starting": lambda _arbiter: check_database(settings),
        "child_exit": child_exit,
        "worker_exit": worker_exit,
    }


def _no_request_line(_worker, _req) -> None:
    """gunicorn's default pre_request logs "<method> <path>" at debug level for every request,
    which the app's own access line already says (and which cost 1.5 % of a GET's CPU)."""


def web_limits(settings: Settings) -> WebLimits:
    return WebLimits(
        header_timeout=settings.web_header_timeout_seconds,
        body_timeout=settings.web_body_timeout_seconds,
        max_body_bytes=settings.max_payload_bytes * BATCH_BODY_FACTOR,  # the largest body a route takes
        buffer_bytes=settings.web_buffer_bytes,
        queue=settings.web_queue,
    )


def check_database(settings: Settings) -> None:
    """Before any worker forks: exit 1 with the reason unless the database answers and
    its schema is at head."""
    try:
        open_store(settings).close()
    except QuorraError as exc:
        reason = _start_failure(exc)
        logger.error("cannot start", extra={"event": "web.start_failed", "error": reason})
        sys.exit(f"quorra: {reason}")
    if settings.uses_dev_api_key:
        warn_dev_api_key()  # here, once, before the workers fork and inherit "already warned"


def _start_failure(exc: QuorraError) -> str:
    """The error's message, plus the driver's own first line when the database is down
    ('connection refused', 'no such database'), which is what an operator needs."""
    cause = getattr(exc.__cause__, "orig", exc.__cause__)
    if isinstance(exc, DatabaseUnavailable) and cause is not None:
        return f"{exc.message} ({str(cause).strip().splitlines()[0]})"
    return exc.message


def child_exit(_arbiter, worker) -> None:
    """A dead worker's live gauges must leave the sums (prometheus_client multiprocess)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(worker.pid)


def worker_exit(_arbiter, worker) -> None:
    app = getattr(worker, "wsgi", None)
    if app is not None and EXTENSION in getattr(app, "extensions", {}):
        app.extensions[EXTENSION].close()


class GunicornLogger(glogging.Logger):
    """gunicorn's own lines (boot, workers, signals) go through Quorra's handler, in the
    same JSON or text format as every other line, instead of gunicorn's."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True
