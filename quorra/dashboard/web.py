"""The dashboard's blueprint and what every page shares: security headers, HTML error pages,
and the template helpers (times, durations, JSON, permissions)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, g, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from quorra.access import DEFAULT_TENANT, Permission
from quorra.audit import Actor
from quorra.dashboard import dashboard
from quorra.errors import QuorraError

logger = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/static")

# QuorraError codes -> the status of the HTML page that explains them (as the REST API's table)
STATUS_BY_CODE = {
    "invalid_argument": 400,
    "not_found": 404,
    "conflict": 409,
    "unavailable": 503,
    "permission_denied": 403,
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@bp.after_request
def add_security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(QuorraError)
def quorra_error(exc: QuorraError):
    status = STATUS_BY_CODE.get(exc.code)
    if status is None:
        raise exc  # the app's handler logs it and answers 500 without its text
    return error_page(status, exc.message)


@bp.errorhandler(CSRFError)
def csrf_error(exc: CSRFError):
    logger.info("dashboard request refused", extra={"event": "dashboard.csrf_refused", "path": request.path})
    return error_page(400, f"The form was refused: {exc.description} Reload the page and try again.")


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return error_page(exc.code or 500, exc.description or exc.name)


def error_page(status: int, message: str):
    if request.headers.get("X-Quorra-Fragment"):
        return message, status, {"Content-Type": "text/plain; charset=utf-8"}
    return render_template("error.html", status=status, message=message), status


# -- template helpers -----------------------------------------------------------------------


@bp.app_context_processor
def page_globals() -> dict[str, Any]:
    return {
        "can": allowed,
        "Permission": Permission,
        "principal": g.get("principal"),
        "DEFAULT_TENANT": DEFAULT_TENANT,
        "refresh_seconds": dashboard().settings.dashboard_refresh_seconds,
    }


def allowed(permission: Permission) -> bool:
    """Whether the signed-in user may do this: the one place the dashboard asks."""
    principal = g.get("principal")
    return principal is not None and principal.can(permission)


def tenant() -> str:
    """The signed-in key's tenant: every page shows it alone, and every action stays in it."""
    return g.principal.tenant


def actor() -> Actor:
    """Who acts in this request, for the audit log: the signed-in principal, its address and request id."""
    return Actor.of(g.principal, remote_addr=request.remote_addr, request_id=g.get("request_id"))


def show_payloads() -> bool:
    return dashboard().settings.dashboard_show_payloads


@bp.app_template_filter("utc")
def utc(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


@bp.app_template_filter("iso")
def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """3 -> '3s', 75 -> '1m 15s', 7260 -> '2h 1m', 90000 -> '1d 1h'."""
    if seconds is None:
        return ""
    seconds = int(max(0, seconds))
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // smaller_size
            return f"{seconds // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{seconds}s"


@bp.app_template_filter("pretty_json")
def pretty_json(value: Any) -> str:
    """Indented JSON, as text: the template escapes it like any other value."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
