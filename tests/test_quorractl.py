"""quorractl against the real Flask app served over real HTTP (werkzeug, a free port)."""

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
from tests.factories import dead_job, make_job


@pytest.fixture
def server_url(settings, store):
    notifier = PollingNotifier(0.5)
    app = create_app(settings, store=store, notifier=notifier)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    notifier.close()


def quorractl(url: str, *args: str, key: str = TEST_API_KEY):
    return CliRunner().invoke(main, ["--url", url, "--api-key", key, *args], catch_exceptions=False)


def test_enqueue_prints_the_created_job(server_url, store):
    result = quorractl(server_url, "enqueue", "email_send", "--payload", '{"to": "a@b.c"}', "--priority", "5")
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    job = store.get_job(created["id"])
    assert (job.type, job.payload, job.priority, created["status"]) == ("email_send", {"to": "a@b.c"}, 5, "pending")


def test_get_shows_the_job(server_url, store):
    job = make_job(store)
    result = quorractl(server_url, "get", job.id)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["id"] == job.id


def test_list_filters_by_status_and_retry_revives_a_dead_job(server_url, store):
    dead = dead_job(store)
    listing = quorractl(server_url, "list", "--status", "dead")
    assert listing.exit_code == 0 and dead.id in listing.output
    retried = quorractl(server_url, "retry", dead.id)
    assert retried.exit_code == 0, retried.output
    assert store.get_job(dead.id).status == "pending"


def test_cancel_and_queues(server_url, store):
    job = json.loads(quorractl(server_url, "enqueue", "sleep", "--queue", "slow").output)
    assert quorractl(server_url, "cancel", job["id"]).exit_code == 0
    queues = quorractl(server_url, "queues")
    assert queues.exit_code == 0
    assert queues.output.split() == ["slow", "cancelled", "1"]


def test_a_rejected_job_exits_non_zero_with_the_servers_reasons(server_url, store):
    result = quorractl(server_url, "enqueue", "email_send", "--priority", "99999")
    assert result.exit_code == 1
    assert "400 invalid_argument" in result.output and "priority" in result.output
    assert store.queue_counts() == []


def test_a_wrong_api_key_is_reported(server_url):
    result = quorractl(server_url, "queues", key="wrong")
    assert result.exit_code == 1 and "401 unauthenticated" in result.output


def test_payload_that_is_not_json_is_refused_locally(server_url, store):
    result = quorractl(server_url, "enqueue", "email_send", "--payload", "{nope")
    assert result.exit_code == 2 and "not JSON" in result.output
    assert store.queue_counts() == []


def test_an_unreachable_server_is_a_clear_error():
    from tests.conftest import free_port

    result = quorractl(f"http://127.0.0.1:{free_port()}", "queues")
    assert result.exit_code == 1 and "cannot reach" in result.output
