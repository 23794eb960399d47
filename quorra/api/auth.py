"""X-API-Key on every /v1 route. Several keys may be configured at once (QUORRA_API_KEY
is a comma list), so a key can be rotated without downtime."""

from __future__ import annotations

import logging

from flask import request

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
