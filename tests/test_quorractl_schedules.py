"""`quorractl schedules ...` against the real Flask app over real HTTP, on both backends."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from quorra.api import create_app
from quorra.cli.quorractl import main
from quorra.notify import PollingNotifier
from tests.conftest import TEST_API_KEY


@pytest.fixture
def server_url(settings, store):
    notifier = PollingNotifier(0.5)
    server = make_server("127.0.0.1", 0, create_app(settings, store=store, notifier=notifier), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    notifier.close()


def schedules(url: str, *args: str):
    return CliRunner().invoke(main, ["--url", url, "--api-key", TEST_API_KEY, "schedules", *args])


def test_create_list_update_pause_resume_delete(server_url, store):
    created = schedules(
        server_url,
        *("create", "nightly", "--cron", "0 3 * * *", "--timezone", "Europe/Paris", "--type", "report_build"),
        *("--payload", '{"kind": "daily"}', "--timeout", "600", "--missed-ticks", "catch_up"),
    )
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["job"]["timeout_seconds"] == 600

    updated = schedules(server_url, "update", "nightly", "--priority", "5")
    listing = schedules(server_url, "list")
    paused = schedules(server_url, "pause", "nightly")
    resumed = schedules(server_url, "resume", "nightly")
    deleted = schedules(server_url, "delete", "nightly")

    assert json.loads(updated.output)["job"] | {"payload": None} == {
        "type": "report_build",
        "payload": None,
        "queue": "default",
        "priority": 5,
        "max_retries": 3,
        "timeout_seconds": 600,
    }
    assert listing.output.startswith("nightly") and "0 3 * * *" in listing.output
    assert (json.loads(paused.output)["is_paused"], json.loads(resumed.output)["is_paused"]) == (True, False)
    assert deleted.exit_code == 0 and store.list_schedules() == []


def test_a_bad_schedule_prints_the_server_error(server_url):
    result = schedules(server_url, "create", "bad", "--cron", "0 25 * * *", "--type", "x")

    assert result.exit_code == 1
    assert "400 invalid_argument" in result.output and "cron" in result.output
