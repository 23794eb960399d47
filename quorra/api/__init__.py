"""The REST API: a Flask app factory with one blueprint per concern.

    create_app(settings=None, store=None, notifier=None) -> Flask

Everything the views need is injected (tests pass their own store and notifier); what is
not given is built from ``settings`` (default: the environment). A store built here is
refused unless the database answers and its schema is at the latest migration."""

from __future__ import annotations

import functools

from flask import Flask, Request

from quorra import dashboard, tracing
from quorra.api import (
    audit,
    health,
    jobs,
    keys,
    openapi,
    queues,
    schedules,
    stats,
    tenants,
    webhooks,
    workers,
    workflows,
)
from quorra.api.auth import register_auth
from quorra.api.errors import register_error_handlers
from quorra.api.metrics import register_metrics
from quorra.api.request_context import register_request_context
from quorra.api.services import (
    EXTENSION,
    Services,
    open_store,
    redis_client,
    warn_dev_api_key,
)
from quorra.config import Settings
from quorra.notify import Notifier, make_notifier
from quorra.store import Store


def create_app(settings: Settings | None = None, store: Store | None = None, notifier: Notifier | None = None) -> Flask:
    settings = settings or Settings.from_env()
    tracing.setup("web")  # before the store's engine is made, so that it is traced
    services = Services(
        settings=settings,
        store=store or open_store(settings),
        notifier=notifier or make_notifier(settings),
        redis=redis_client(settings),
    )
    if settings.uses_dev_api_key:
        warn_dev_api_key()
    app = QuorraFlask(__name__, static_folder=None)  # the API serves no files
    app.json.sort_keys = False  # keep the documented field order
    app.extensions[EXTENSION] = services
    app.stop_long_polls = services.waits.stop  # called by the web worker on SIGTERM
    register_request_context(app)
    register_blueprints(app)
    dashboard.init_app(app, settings, services.store, services.manager, services.authenticator)
    register_metrics(app, services.store, settings.metrics_max_queues)
    register_auth(app)
    register_error_handlers(app)
    if tracing.current is not None:
        tracing.current.instrument_app(app)
    return app


class QuorraRequest(Request):
    """Flask's request, its blueprint names worked out once: Flask asks for them before the
    hooks, after the view and at teardown, from the URL rule matched once."""

    @functools.cached_property
    def blueprints(self) -> list[str]:
        return super().blueprints


class QuorraFlask(Flask):
    """Flask, asking once per view or hook whether it is a coroutine function: Flask asks
    ``inspect`` on every call, ten times a request (2 % of a GET's CPU)."""

    request_class = QuorraRequest

    def ensure_sync(self, func):
        synced = self._synced.get(func)
        if synced is None:
            synced = self._synced[func] = super().ensure_sync(func)
        return synced

    @functools.cached_property
    def _synced(self) -> dict:
        return {}


def register_blueprints(app: Flask) -> None:
    for blueprint in (
        jobs.bp,
        workflows.bp,
        queues.bp,
        workers.bp,
        stats.bp,
        schedules.bp,
        webhooks.bp,
        keys.bp,
        audit.bp,
        tenants.bp,
        health.bp,
        openapi.bp,
    ):
        app.register_blueprint(blueprint)
