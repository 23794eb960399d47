"""Sign-in, the session cookie, HTTP Basic for scripts, and the security headers."""

from __future__ import annotations

import base64

import pytest

from quorra.config import Settings
from tests.conftest import TEST_API_KEY
from tests.dashboard.conftest import csrf_token, sign_in, text


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def test_a_person_without_a_session_is_sent_to_the_sign_in_form(anonymous):
    response = anonymous.get("/jobs?queue=email")
    assert response.status_code == 302
    assert response.headers["Location"] == "/signin?next=/jobs?queue%3Demail"


def test_signing_in_sets_an_http_only_same_site_cookie_that_does_not_reveal_the_key(anonymous):
    response = sign_in(anonymous, TEST_API_KEY)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("quorra_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test
    value = cookie.split(";")[0].split("=", 1)[1]
    decoded = base64.urlsafe_b64decode(value.split(".")[0] + "==")
    assert TEST_API_KEY.encode() not in decoded and TEST_API_KEY not in value
    assert anonymous.get("/").status_code == 200


def test_over_https_the_cookie_is_secure(anonymous):
    token = csrf_token(anonymous)
    response = anonymous.post(
        "/signin",
        data={"api_key": TEST_API_KEY, "csrf_token": token},
        base_url="https://localhost",
        headers={"Referer": "https://localhost/signin"},  # Flask-WTF checks it over https
    )
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_wrong_key_is_refused_and_sets_no_session(anonymous):
    response = sign_in(anonymous, "not-a-key")
    assert response.status_code == 401
    assert "That key is not accepted." in text(response)
    assert anonymous.get("/").status_code == 302


def test_sign_in_without_a_csrf_token_is_refused(anonymous):
    anonymous.get("/signin")
    response = anonymous.post("/signin", data={"api_key": TEST_API_KEY})
    assert response.status_code == 400
    assert "CSRF token is missing" in text(response)
    assert anonymous.get("/").status_code == 302


def test_sign_in_returns_to_the_page_asked_for_but_never_to_another_site(anonymous):
    token = csrf_token(anonymous)
    back = anonymous.post("/signin", data={"api_key": TEST_API_KEY, "csrf_token": token, "next": "/jobs?queue=a"})
    assert back.headers["Location"] == "/jobs?queue=a"
    for elsewhere in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        token = csrf_token(anonymous)
        response = anonymous.post("/signin", data={"api_key": TEST_API_KEY, "csrf_token": token, "next": elsewhere})
        assert response.headers["Location"] == "/"


def test_signing_out_ends_the_session(client):
    response = client.post("/signout", data={"csrf_token": csrf_token(client, "/")})
    assert response.status_code == 302 and response.headers["Location"] == "/signin"
    assert client.get("/").status_code == 302


def test_signing_out_needs_the_csrf_token(client):
    assert client.post("/signout").status_code == 400
    assert client.get("/").status_code == 200


def test_a_session_ends_when_its_key_is_no_longer_configured(app, client, dashboard_settings, store):
    # The same session cookie, presented to an app whose keys changed: the key is checked again.
    from quorra.api import create_app

    cookie = client.get_cookie("quorra_session")
    rotated = dashboard_settings.model_copy(update={"api_keys": ("a-new-key-entirely",), "secret_keys": ()})
    other = create_app(rotated, store=store).test_client()
    other.set_cookie("quorra_session", cookie.value)
    assert other.get("/").status_code == 302


def test_a_session_ends_when_its_key_is_revoked_though_the_secret_stays(client, dashboard_settings, store):
    from quorra.api import create_app

    secret = "a-secret-of-at-least-sixteen-characters"
    kept = dashboard_settings.model_copy(update={"secret_keys": (secret,)})
    app = create_app(kept, store=store)
    signed_in = app.test_client()
    sign_in(signed_in, TEST_API_KEY)
    assert signed_in.get("/").status_code == 200
    revoked = create_app(kept.model_copy(update={"api_keys": ("another-key",)}), store=store).test_client()
    revoked.set_cookie("quorra_session", signed_in.get_cookie("quorra_session").value)
    response = revoked.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/signin")
    assert "no longer accepted" in text(revoked.get("/signin"))


def test_a_session_lasts_no_longer_than_its_ttl(dashboard_settings, store, monkeypatch):
    from quorra.api import create_app

    app = create_app(dashboard_settings.model_copy(update={"dashboard_session_seconds": 60}), store=store)
    client = app.test_client()
    sign_in(client, TEST_API_KEY)
    import time as time_module

    real_time = time_module.time
    monkeypatch.setattr("cryptography.fernet.time.time", lambda: real_time() + 120)
    assert client.get("/").status_code == 302


def test_scripts_may_use_basic_auth_for_reading(anonymous):
    response = anonymous.get("/jobs", headers=basic(TEST_API_KEY))
    assert response.status_code == 200


def test_a_wrong_basic_password_gets_a_401_that_asks_for_basic(anonymous):
    response = anonymous.get("/", headers=basic("wrong"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_basic_auth_alone_cannot_change_anything(anonymous, store):
    from tests.factories import dead_job

    job = dead_job(store)
    response = anonymous.post(f"/jobs/{job.id}/retry", headers=basic(TEST_API_KEY))
    assert response.status_code == 400
    assert store.get_job(job.id).status.value == "dead"


@pytest.mark.parametrize("path", ["/", "/signin", "/jobs", "/static/dashboard.js"])
def test_every_answer_carries_the_security_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_pages_carry_no_inline_script_or_style(client):
    page = text(client.get("/"))
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert '<script src="/static/dashboard.js" defer></script>' in page


def test_the_scripts_and_stylesheet_are_served_by_quorra_itself(anonymous):
    for name, mimetype in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        response = anonymous.get(f"/static/{name}")
        assert response.status_code == 200 and response.mimetype == mimetype
        response.close()


def test_the_secret_key_setting_signs_sessions(dashboard_settings):
    derived = dashboard_settings.session_keys
    assert len(derived) == len(dashboard_settings.api_keys)
    with_secret = Settings(database_url="sqlite:///x.db", secret_keys=("s" * 16, "t" * 16))
    assert len(with_secret.session_keys) == 2 and with_secret.session_keys != with_secret.cursor_keys


def test_a_key_that_may_not_read_jobs_cannot_sign_in(app, anonymous):
    # A worker's key (jobs:work only), as a resolver of managed keys would return it.
    from quorra.access import Principal, Role

    worker = Principal(subject="key:w", name="worker key", role=Role.WORKER)
    app.extensions["quorra"].authenticator.add_resolver(lambda credential: worker if credential.value == "wk" else None)
    response = sign_in(anonymous, "wk")
    assert response.status_code == 401 and "That key may not read jobs." in text(response)
    assert anonymous.get("/jobs", headers=basic("wk")).status_code == 403


def test_a_live_refresh_after_the_session_ended_gets_a_401_without_a_browser_prompt(anonymous):
    response = anonymous.get("/jobs", headers={"X-Quorra-Fragment": "1"})
    assert response.status_code == 401 and "WWW-Authenticate" not in response.headers
