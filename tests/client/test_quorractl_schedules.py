"""`quorractl schedules ...` against the real Flask app over real HTTP, on both backends."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from quorra.cli.quorractl import main
from tests.conftest import TEST_API_KEY


@pytest.fixture
def server_url(served):
    return served.url


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
    assert "nightly" in listing.output and "0 3 * * *" in listing.output and "Europe/Paris" in listing.output
    assert (json.loads(paused.output)["is_paused"], json.loads(resumed.output)["is_paused"]) == (True, False)
    assert deleted.exit_code == 0 and store.list_schedules() == []


def test_a_bad_schedule_prints_the_server_error(server_url):
    result = schedules(server_url, "create", "bad", "--cron", "0 25 * * *", "--type", "x")

    assert result.exit_code == 1
    assert "cron" in result.output


def test_submit_takes_a_timeout(server_url, store):
    result = CliRunner().invoke(
        main, ["--url", server_url, "--api-key", TEST_API_KEY, "-o", "json", "submit", "sleep", "--timeout", "30"]
    )

    assert result.exit_code == 0, result.output
    assert store.get_job(json.loads(result.output)["id"]).timeout_seconds == 30
