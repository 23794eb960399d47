"""The web dashboard at `/`: queue statistics and recent jobs, refreshed every 5 seconds.
Read-only, through the Store only; it never shows payloads or results.

Browsers cannot send X-API-Key, so the dashboard asks for HTTP Basic credentials: any user
name, and one of the API keys as the password. Every answer forbids framing (clickjacking),
MIME sniffing, and any script or outside resource (a Content-Security-Policy that admits only
the page's own stylesheet, by a nonce fresh for each response)."""

from __future__ import annotations

import secrets
from collections import defaultdict

from flask import Blueprint, Flask, Response, current_app, g, render_template, request

from quorra.access import Authenticator, Permission
from quorra.audit import Action
from quorra.jobs import JobStatus
from quorra.store import AuditFilter, Store

EXTENSION = "quorra.dashboard"
RECENT_JOBS = 25
QUEUES_PER_PAGE = 50  # however many queues clients make up, a page stays small
STATUS_COLUMNS = [status.value for status in JobStatus]
AUDIT_ENTRIES = 100
AUDIT_ACTIONS = [action.value for action in Action]

bp = Blueprint("dashboard", __name__, template_folder="templates")


def init_app(app: Flask, store: Store, authenticator: Authenticator) -> None:
    app.extensions[EXTENSION] = (store, authenticator)
    app.register_blueprint(bp)


@bp.before_request
def make_style_nonce() -> None:
    g.csp_nonce = secrets.token_urlsafe(16)


@bp.after_request
def add_security_headers(response: Response) -> Response:
    nonce = g.get("csp_nonce", "")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.before_request
def require_basic_auth() -> Response | None:
    _, authenticator = current_app.extensions[EXTENSION]
    credentials = request.authorization
    principal = None if credentials is None else authenticator.authenticate_key(credentials.password or "")
    if principal is None or not principal.can(Permission.JOBS_READ):
        return Response(
            "An API key is required (any user name, the key as password).\n",
            401,
            {"WWW-Authenticate": 'Basic realm="Quorra", charset="UTF-8"', "Content-Type": "text/plain"},
        )
    g.principal = principal
    return None


@bp.get("/")
def overview():
    store, _ = current_app.extensions[EXTENSION]
    status = request.args.get("status")
    if status not in STATUS_COLUMNS:
        status = None
    table = _queue_table(store)
    page = _page_number(request.args.get("queue_page"), len(table))
    first = (page - 1) * QUEUES_PER_PAGE
    return render_template(
        "dashboard.html",
        queues=dict(list(table.items())[first : first + QUEUES_PER_PAGE]),
        queue_count=len(table),
        queue_page=page,
        queue_pages=_page_count(len(table)),
        columns=STATUS_COLUMNS,
        jobs=store.list_jobs(status=status, limit=RECENT_JOBS, bodies=False).jobs,
        status=status,
        can_read_audit=g.principal.can(Permission.AUDIT_READ),
        csp_nonce=g.csp_nonce,
    )


@bp.get("/audit")
def audit_log():
    """The latest audit entries (audit:read), optionally of one action; read only."""
    if not g.principal.can(Permission.AUDIT_READ):
        message = f"the {g.principal.role} role lacks the {Permission.AUDIT_READ} permission\n"
        return Response(message, 403, {"Content-Type": "text/plain"})
    unknown = sorted(set(request.args) - {"action"})
    if unknown:
        return Response(f"unknown query parameters: {', '.join(unknown)}\n", 400, {"Content-Type": "text/plain"})
    store, _ = current_app.extensions[EXTENSION]
    action = request.args.get("action")
    if action not in AUDIT_ACTIONS:
        action = None
    records = store.list_audit(AuditFilter(action=action), limit=AUDIT_ENTRIES).records
    return render_template("audit.html", records=records, actions=AUDIT_ACTIONS, action=action, csp_nonce=g.csp_nonce)


def _queue_table(store: Store) -> dict[str, dict[str, int]]:
    """{queue: {status: count}} with every status present, for a rectangular table."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STATUS_COLUMNS, 0))
    for row in store.queue_counts():
        table[row.queue][row.status] = row.count
    return dict(sorted(table.items()))


def _page_count(queues: int) -> int:
    return max(1, -(-queues // QUEUES_PER_PAGE))


def _page_number(given: str | None, queues: int) -> int:
    """The page asked for, within 1..last; anything else (absent, not a number) is page 1."""
    if given is None or not given.isdigit():
        return 1
    return min(max(1, int(given)), _page_count(queues))
