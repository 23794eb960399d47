"""The web dashboard at `/`: see and steer every queue from a browser.

Pages (server-rendered templates, a little JavaScript of our own in static/): the overview,
the jobs table, a job's detail, the dead letters of a queue, the queues (pause, resume) and
the workers. It talks to the Store (reads) and the JobManager (every change of state, so
metrics and wake-ups happen as for REST) in-process, never over HTTP.

Sign-in (signin.py): a form takes an API key and sets a signed session cookie (HttpOnly,
SameSite=Lax, Secure over https) holding the key encrypted, so the key is checked again on
every request and a revoked key stops working at once. HTTP Basic (any user name, the key as
password) still works for scripts. Every state-changing request carries a CSRF token
(Flask-WTF). Every answer forbids framing and MIME sniffing, and its Content-Security-Policy
admits only Quorra's own script and stylesheet files: no inline script, no CDN.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import Flask, current_app, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

from quorra.access import Authenticator
from quorra.config import Settings
from quorra.manager import JobManager
from quorra.store import Store

EXTENSION = "quorra.dashboard"
SESSION_COOKIE = "quorra_session"

csrf = CSRFProtect()


@dataclass(frozen=True)
class Dashboard:
    """What the dashboard's views share, built once per app."""

    settings: Settings
    store: Store
    manager: JobManager
    authenticator: Authenticator  # a key -> who holds it (quorra.access)


def dashboard() -> Dashboard:
    return current_app.extensions[EXTENSION]


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request came over https (gunicorn
    honours X-Forwarded-Proto from the proxies it trusts), so one deployment serves both."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or bool(app.config["SESSION_COOKIE_SECURE"])

    def open_session(self, app: Flask, request):
        # REST calls carry no session cookie: hand them an empty session without building
        # the signing serializer that Flask would build first for every request, nor parsing
        # cookies when there are none (3 % of a GET's CPU).
        if "HTTP_COOKIE" not in request.environ or not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session, response) -> None:
        # An empty session nobody touched: Flask would do nothing either, after reading seven
        # cookie settings (and is_secure) first.
        if not session and not session.modified and not session.accessed:
            return
        super().save_session(app, session, response)


def init_app(app: Flask, settings: Settings, store: Store, manager: JobManager, authenticator: Authenticator) -> None:
    from quorra.dashboard import actions, pages, signin  # noqa: F401 - their routes join the blueprint
    from quorra.dashboard.web import bp

    app.extensions[EXTENSION] = Dashboard(settings, store, manager, authenticator)
    keys = settings.session_keys
    app.secret_key = keys[0]
    app.config.update(
        SECRET_KEY_FALLBACKS=list(keys[1:]),
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # Lax, not Strict: a shared link opens signed in
        SESSION_REFRESH_EACH_REQUEST=False,  # a sign-in lasts its TTL from sign-in (signin.py)
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.dashboard_session_seconds),
        WTF_CSRF_CHECK_DEFAULT=False,  # the REST API has no cookies to forge; the dashboard checks
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session it is bound to
    )
    app.session_interface = SessionCookies()
    csrf.init_app(app)
    app.register_blueprint(bp)
