"""Authentication and permissions of the REST API.

Every /v1 route, and every request that matches no route or no method, needs a credential,
so that a client without one learns nothing about which routes exist (it gets a 401, never a
404 or 405): an API key as X-API-Key, or a bearer token as `Authorization: Bearer` (when a
resolver accepts tokens). Several keys may be configured at once (QUORRA_API_KEY is a comma
list), so a key can be rotated without downtime.

Each view declares the permission it needs with ``@requires``; the principal's role decides
(quorra.access). A refused action is a 403 naming the missing permission.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, g, request

from quorra.access import ALL_TENANTS, Credential, Permission, Principal
from quorra.api.services import services
from quorra.audit import Actor
from quorra.errors import NotAuthenticated, PermissionDenied

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
BEARER_PREFIX = "Bearer "
View = TypeVar("View", bound=Callable[..., object])


def require_api_key() -> None:
    """A blueprint's before_request: authenticate the request (401 unless it carries a valid
    credential) and keep its principal for the view's permission check and the logs."""
    credential = _credential()
    if credential is None:
        raise NotAuthenticated(f"the {API_KEY_HEADER} header is required")
    principal = services().authenticator.authenticate(credential)
    if principal is None:
        logger.info("request refused", extra={"event": "auth.refused", "path": request.path})
        if credential.kind == "api_key":
            raise NotAuthenticated(f"the {API_KEY_HEADER} header does not hold a valid key")
        raise NotAuthenticated("the bearer token is not valid")
    g.principal = principal


def _credential() -> Credential | None:
    key = request.headers.get(API_KEY_HEADER, "")
    if key:
        return Credential("api_key", key)
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith(BEARER_PREFIX) and authorization[len(BEARER_PREFIX) :].strip():
        return Credential("bearer", authorization[len(BEARER_PREFIX) :].strip())
    return None


def current_principal() -> Principal:
    """The caller of this request, authenticated by require_api_key."""
    principal = g.get("principal")
    if principal is None:  # a view without require_api_key is a bug, never an open door
        raise NotAuthenticated(f"the {API_KEY_HEADER} header is required")
    return principal


def current_tenant() -> str:
    """The tenant this request acts for: its caller's (quorra.access). Every job, queue,
    workflow and worker a view reads or changes is this tenant's; another's is not found.
    A fleet key ("*", worker role only) names no tenant to act for here: refused, so that a
    key given "*" by mistake can never read every tenant's jobs."""
    principal = current_principal()
    if principal.tenant == ALL_TENANTS:
        raise PermissionDenied(
            f'a key of the tenant "{ALL_TENANTS}" (a fleet worker) acts on no tenant\'s jobs here',
            details={"tenant": ALL_TENANTS},
        )
    return principal.tenant


def current_actor() -> Actor:
    """Who acts in this request, for the audit log: its principal, address and request id."""
    return Actor.of(current_principal(), remote_addr=request.remote_addr, request_id=g.get("request_id"))


def requires(permission: Permission) -> Callable[[View], View]:
    """Declare the permission a view needs; it is checked before the view runs."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def checked(*args, **kwargs):
            current_principal().require(permission)
            return view(*args, **kwargs)

        checked.required_permission = permission  # type: ignore[attr-defined]  # walked by tests
        return checked  # type: ignore[return-value]

    return decorate


def api_key_scope() -> str:
    """Where this request's idempotency keys live: its caller's scope, so two callers never
    share one."""
    return current_principal().idempotency_scope


def register_auth(app: Flask) -> None:
    """Call after every route is registered: the paths outside /v1 known now are public."""
    public_paths = frozenset(rule.rule for rule in app.url_map.iter_rules() if not rule.rule.startswith("/v1/"))

    def require_api_key_unless_routed() -> None:
        # A routed request is checked by its blueprint (or is public). An unrouted one is
        # about to be a 404 or 405: a public path keeps its 405, anything else needs a key first.
        if request.url_rule is None and request.path not in public_paths:
            require_api_key()

    app.before_request(require_api_key_unless_routed)
