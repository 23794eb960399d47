"""The dashboard in a real browser: Debian's chromium (/usr/bin/chromium, which .ci/run
installs) driven by playwright's Python package, never a browser playwright downloads.
One browser per test session; each test gets a fresh context (no cookies), at 1280 px.

The deployment is the real one (`quorra web` under gunicorn, `quorra grpc`, `quorra
scheduler`, `bin/quorra-worker`) on a SQLite file, with the pages refreshing every 0.5 s
instead of 5 s so a test waits less (the interval is a setting; the mechanism is the same).
Screenshots go to tests/artifacts/ (git-ignored); the README's come from there
(QUORRA_README_IMAGES=1 copies them into docs/images/)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_API_KEY
from tests.observability.deployment import Deployment

CHROMIUM = Path(os.environ.get("QUORRA_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
ARTIFACTS = REPO / "tests" / "artifacts"
# QUORRA_README_IMAGES=1 also copies these screenshots over the README's images.
README_IMAGES = {"overview": "dashboard-overview.png", "job": "dashboard-job.png"}
READONLY_KEY = "read-only-key-for-browser-tests"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 60_000  # generous: the machine may be busy; a pass never waits this long


# Module scope, not session: playwright's sync API keeps an event loop running in this thread
# while it is open, and asyncio.run() (the async client's tests, on the same xdist worker
# later) refuses to start inside one. The module's tests run together (one xdist group).
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    sync_api.expect.set_options(timeout=WAIT_MS)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    directory = tmp_path_factory.mktemp("browser")
    database_url = f"sqlite:///{directory / 'quorra.db'}"
    from quorra import migrate
    from quorra.db import make_engine

    engine = make_engine(database_url)
    migrate.upgrade(engine)
    engine.dispose()
    deployment = Deployment(
        database_url,
        directory / "metrics",
        QUORRA_DASHBOARD_REFRESH="0.5s",
        QUORRA_READONLY_API_KEYS=READONLY_KEY,
    )
    try:
        deployment.wait_ready()
        yield deployment
    finally:
        deployment.kill_all()


@pytest.fixture
def page(browser, request):
    """A page of a fresh browser context; what the browser's console reported is checked at the end."""
    options = getattr(request, "param", {})
    context = browser.new_context(
        viewport=options.get("viewport", DESKTOP), color_scheme=options.get("scheme", "light")
    )
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.console_problems = []
    page.on("console", lambda message: message.type == "error" and page.console_problems.append(message.text))
    page.on("pageerror", lambda error: page.console_problems.append(str(error)))
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append((dialog.type, dialog.message)), dialog.accept()))
    yield page
    context.close()
    assert page.console_problems == [], "the browser reported errors (a CSP violation?)"
    assert [d for d in page.dialogs if d[0] != "confirm"] == [], "a page opened a dialog: script ran"


def sign_in(page, base_url: str, key: str = TEST_API_KEY, path: str = "/") -> None:
    page.goto(base_url + path)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("nav.menu")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("QUORRA_README_IMAGES") == "1" and name in README_IMAGES:
        shutil.copyfile(path, REPO / "docs" / "images" / README_IMAGES[name])
    return path
