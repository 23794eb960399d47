"""Webhooks through the Python client and `quorractl webhooks ...`, against the real Flask
app over real HTTP, on both backends."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from quorra.cli.quorractl import main
from quorra.client import InvalidArgument, NotFound
from tests.conftest import TEST_API_KEY


def quorractl(url: str, *args: str):
    return CliRunner().invoke(main, ["--url", url, "--api-key", TEST_API_KEY, *args])


def test_the_client_creates_lists_reads_and_deletes_webhooks(client):
    created = client.create_webhook(
        "https://example.com/hooks", ["job.dead"], queues=["billing"], description="pager", max_retries=3
    )

    assert created["secret"].startswith("whsec_")
    shown = {key: value for key, value in created.items() if key != "secret"}
    assert client.webhook(created["id"]) == shown
    assert client.webhooks() == [shown]
    assert (shown["queues"], shown["types"], shown["max_retries"]) == (["billing"], None, 3)
    client.delete_webhook(created["id"])
    with pytest.raises(NotFound):
        client.webhook(created["id"])


def test_the_client_raises_the_servers_400_for_a_bad_url(client):
    with pytest.raises(InvalidArgument, match="webhook is invalid"):
        client.create_webhook("ftp://example.com", ["job.dead"])


def test_quorractl_webhooks_create_list_get_delete(served):
    created = quorractl(
        served.url, "-o", "json", "webhooks", "create", "https://example.com/hooks", "--event", "job.failed",
        "--event", "job.dead", "--queue", "billing", "--description", "pager",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    webhook = json.loads(created.output)
    listing = quorractl(served.url, "webhooks", "list")
    got = quorractl(served.url, "webhooks", "get", webhook["id"])
    deleted = quorractl(served.url, "webhooks", "delete", webhook["id"])

    assert webhook["secret"].startswith("whsec_") and webhook["events"] == ["job.failed", "job.dead"]
    assert webhook["id"] in listing.output and "job.failed,job.dead" in listing.output and "billing" in listing.output
    assert "secret" not in json.loads(got.output)
    assert deleted.exit_code == 0 and served.store.list_webhooks() == []


def test_quorractl_prints_the_servers_error_for_an_unknown_event(served):
    result = quorractl(served.url, "webhooks", "create", "https://example.com", "--event", "job.leased")

    assert result.exit_code == 1
    assert "events" in result.output
