"""X-API-Key on every /v1 route, and on every request that matches no route or no method,
so that a client without a key learns nothing about which routes exist (it gets a 401, never
a 404 or 405). Several keys may be configured at once (QUORRA_API_KEY is a comma list), so a
key can be rotated without downtime."""

from __future__ import annotations

import hashlib
import logging

from flask import Flask, request

from quorra.api.services import services
from quorra.errors import NotAuthenticated

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"


def require_api_key() -> None:
    """A blueprint's before_request: refuse the request unless it carries a valid key."""
    given = request.headers.get(API_KEY_HEADER, "")
    if not given:
        raise NotAuthenticated(f"the {API_KEY_HEADER} header is required")
    if not services().settings.accepts_api_key(given):
        logger.info("request refused", extra={"event": "auth.refused", "path": request.path})
        raise NotAuthenticated(f"the {API_KEY_HEADER} header does not hold a valid key")


def api_key_scope() -> str:
    """Where this request's idempotency keys live: the sha256 of its API key (checked by
    require_api_key), so two clients with different keys never share one."""
    return hashlib.sha256(request.headers.get(API_KEY_HEADER, "").encode()).hexdigest()


def register_auth(app: Flask) -> None:
    """Call after every route is registered: the paths outside /v1 known now are public."""
    public_paths = frozenset(rule.rule for rule in app.url_map.iter_rules() if not rule.rule.startswith("/v1/"))

    def require_api_key_unless_routed() -> None:
        # A routed request is checked by its blueprint (or is public). An unrouted one is
        # about to be a 404 or 405: a public path keeps its 405, anything else needs a key first.
        if request.url_rule is None and request.path not in public_paths:
            require_api_key()

    app.before_request(require_api_key_unless_routed)
