"""Who is using the dashboard: sign-in with an API key, sign-out, and the gate every
dashboard request passes.

The session cookie (signed by Flask) holds the key encrypted with Fernet (AES and an HMAC,
keys derived from QUORRA_SECRET_KEY or the API keys): a stolen cookie does not reveal the
key, and the server can check the key again on every request, so a revoked key, or a key
whose role changed, takes effect at once. The encrypted token carries the time of sign-in,
which bounds the session to QUORRA_DASHBOARD_SESSION_TTL however active it is.

Scripts may send HTTP Basic instead (any user name, the key as password). A state-changing
request, however authenticated, must carry the session's CSRF token: browsers replay Basic
credentials by themselves, so Basic alone proves nothing about who sent a form."""

from __future__ import annotations

import base64
import hmac
import logging
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import flash, g, redirect, render_template, request, session, url_for

from quorra.access import Permission, Principal
from quorra.audit import Actor
from quorra.dashboard import csrf, dashboard
from quorra.dashboard.web import bp, error_page

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_ENDPOINTS = frozenset({"dashboard.signin", "dashboard.static"})
CREDENTIAL = "credential"  # the session's field holding the encrypted key


@bp.before_request
def gate():
    """Every dashboard request: find who sends it (or ask them to sign in), then check the
    CSRF token of anything that changes state."""
    if request.endpoint not in PUBLIC_ENDPOINTS:
        principal = _from_session() or _from_basic_auth()
        if principal is None:
            return _ask_to_sign_in()
        if not principal.can(Permission.JOBS_READ):
            return error_page(403, "This key may not read jobs, so it cannot use the dashboard.")
        g.principal = principal
    if request.method not in SAFE_METHODS:
        csrf.protect()
    return None


@bp.route("/signin", methods=["GET", "POST"])
def signin():
    next_url = local_path(request.values.get("next"))
    if request.method == "GET":
        return render_template("signin.html", next_url=next_url)
    key = request.form.get("api_key", "").strip()
    principal = dashboard().authenticator.authenticate_key(key) if key else None
    if principal is None or not principal.can(Permission.JOBS_READ):
        logger.info("dashboard sign-in refused", extra={"event": "dashboard.sign_in_refused"})
        message = "That key is not accepted." if principal is None else "That key may not read jobs."
        return render_template("signin.html", next_url=next_url, error=message), 401
    _start_session(key)
    actor = Actor.of(principal, remote_addr=request.remote_addr, request_id=g.get("request_id"))
    dashboard().manager.record_signin(actor, role=str(principal.role))
    logger.info(
        "dashboard sign-in",
        extra={"event": "dashboard.signed_in", "subject": principal.subject, "role": str(principal.role)},
    )
    return redirect(next_url or url_for("dashboard.overview"))


@bp.post("/signout")
def signout():
    principal = g.principal
    session.clear()
    logger.info("dashboard sign-out", extra={"event": "dashboard.signed_out", "subject": principal.subject})
    return redirect(url_for("dashboard.signin"))


def _start_session(key: str) -> None:
    session.clear()  # a fresh session (and CSRF token) for each sign-in: no fixation
    session.permanent = True
    session[CREDENTIAL] = _sealer().encrypt(key.encode()).decode()


def _from_session() -> Principal | None:
    token = session.get(CREDENTIAL)
    if not isinstance(token, str):
        return None
    ttl = int(dashboard().settings.dashboard_session_seconds)
    try:
        key = _sealer().decrypt(token.encode(), ttl=ttl).decode()
    except InvalidToken:  # expired, or sealed with a key no longer configured
        session.clear()
        flash("Your session ended; sign in again.", "info")
        return None
    principal = dashboard().authenticator.authenticate_key(key)
    if principal is None:
        session.clear()
        flash("Your key is no longer accepted; sign in with a valid key.", "error")
        logger.info("dashboard session ended: key refused", extra={"event": "dashboard.session_refused"})
    return principal


def _from_basic_auth() -> Principal | None:
    credentials = request.authorization
    if credentials is None or credentials.type != "basic" or not credentials.password:
        return None
    return dashboard().authenticator.authenticate_key(credentials.password)


def _ask_to_sign_in():
    """A script (it sent credentials, or asks for a fragment) gets a 401; a person is sent
    to the sign-in form, and back here afterwards."""
    message = "A valid API key is required: sign in, or send it as the Basic auth password.\n"
    if request.authorization is not None:
        return message, 401, {"WWW-Authenticate": 'Basic realm="Quorra", charset="UTF-8"', "Content-Type": "text/plain"}
    if request.headers.get("X-Quorra-Fragment"):  # the page's script reloads, landing on the form
        return message, 401, {"Content-Type": "text/plain"}  # no WWW-Authenticate: no browser prompt
    back = request.full_path.rstrip("?") if request.method in SAFE_METHODS else None
    return redirect(url_for("dashboard.signin", next=back))


def local_path(url: str | None) -> str | None:
    """`url` if it is a path on this server, else None: the sign-in form never redirects away."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return None
    parts = urlsplit(url)
    return url if not parts.scheme and not parts.netloc else None


def _sealer() -> MultiFernet:
    """Fernet keys from the session keys: the first encrypts, every one decrypts."""
    keys = (hmac.digest(key, b"dashboard session credential", "sha256") for key in dashboard().settings.session_keys)
    return MultiFernet([Fernet(base64.urlsafe_b64encode(key)) for key in keys])
