"""/v1/webhooks over the real app on both backends: create (the secret shown once), list,
read, delete; a URL that is not http(s), an unknown event and other bad input are a 400
naming the field."""

from __future__ import annotations

import base64

import pytest

from tests.api.conftest import AUTH, assert_error

HOOK = {
    "url": "https://example.com/quorra/hooks",
    "events": ["job.dead", "job.succeeded"],
    "queues": ["billing"],
    "types": ["invoice_send"],
    "description": "pager for failed invoices",
}


def create(client, body=HOOK):
    return client.post("/v1/webhooks", json=body, headers=AUTH)


def test_a_created_webhook_shows_its_secret_once(client):
    created = create(client)

    assert created.status_code == 201, created.get_data(as_text=True)
    body = created.get_json()
    assert created.headers["Location"].endswith(f"/v1/webhooks/{body['id']}")
    secret = body.pop("secret")
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert {key: body[key] for key in HOOK} == HOOK
    assert body["max_retries"] == 10 and body["created_at"].endswith("Z")
    # reads never show it again
    assert client.get(f"/v1/webhooks/{body['id']}", headers=AUTH).get_json() == body
    assert client.get("/v1/webhooks", headers=AUTH).get_json() == {"webhooks": [body]}


def test_each_webhook_gets_a_secret_of_its_own(client):
    first, second = create(client).get_json(), create(client).get_json()

    assert first["secret"] != second["secret"]


def test_only_url_and_events_are_required(client):
    body = create(client, {"url": "http://10.0.0.5:8080/in", "events": ["job.cancelled"]}).get_json()

    assert (body["queues"], body["types"], body["description"], body["max_retries"]) == (None, None, None, 10)


def test_a_deleted_webhook_is_gone(client):
    webhook_id = create(client).get_json()["id"]

    assert client.delete(f"/v1/webhooks/{webhook_id}", headers=AUTH).status_code == 204

    assert_error(client.get(f"/v1/webhooks/{webhook_id}", headers=AUTH), 404, "not_found")
    assert_error(client.delete(f"/v1/webhooks/{webhook_id}", headers=AUTH), 404, "not_found")
    assert client.get("/v1/webhooks", headers=AUTH).get_json() == {"webhooks": []}


@pytest.mark.parametrize("webhook_id", ["5f0c6a7e-8d3b-4c2a-9e1f-0a1b2c3d4e5f", "not-a-uuid"])
def test_an_unknown_webhook_is_not_found(client, webhook_id):
    assert_error(client.get(f"/v1/webhooks/{webhook_id}", headers=AUTH), 404, "not_found")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hooks",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "example.com/hooks",
        "https://",
        "http://user:pass@example.com/",
        "http://example.com:99999/",
        "http://exa mple.com/",
    ],
)
def test_a_url_that_is_not_http_or_https_is_refused(client, url):
    error = assert_error(create(client, HOOK | {"url": url}), 400, "invalid_argument")

    assert [detail["field"] for detail in error["details"]] == ["url"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"events": []}, "events"),
        ({"events": ["job.leased"]}, "events.0"),
        ({"events": ["job.dead", "job.dead"]}, "events"),
        ({"queues": ["bad queue"]}, "queues.0"),
        ({"queues": []}, "queues"),
        ({"types": [""]}, "types.0"),
        ({"max_retries": 101}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"secret": "whsec_mine"}, "secret"),
        ({"description": "x" * 501}, "description"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client, change, field):
    error = assert_error(create(client, HOOK | change), 400, "invalid_argument")

    assert field in [detail["field"] for detail in error["details"]]


def test_a_body_that_is_not_an_object_is_refused(client):
    assert_error(create(client, ["https://example.com"]), 400, "invalid_argument")


def test_webhooks_need_an_api_key(client):
    assert_error(client.get("/v1/webhooks"), 401, "unauthenticated")
    assert_error(client.post("/v1/webhooks", json=HOOK), 401, "unauthenticated")
