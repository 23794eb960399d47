"""/v1/keys for admins: a key is shown once, works at once with its role, lists without its
secret, and stops working the moment it is revoked here; every change is audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quorra.access import Role
from quorra.keys import KeySpec
from tests.api.conftest import AUTH, assert_error


def create_key(client, **body):
    response = client.post("/v1/keys", json={"name": "ci deploy", "role": "producer"} | body, headers=AUTH)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response


def test_a_created_key_is_shown_once_and_works_with_its_role(client):
    response = create_key(client)
    created = response.get_json()
    key = {"X-API-Key": created["key"]}

    assert response.headers["Location"].endswith(f"/v1/keys/{created['id']}")
    assert created["key"].startswith(created["prefix"] + "_")
    assert (created["role"], created["tenant"], created["revoked_at"]) == ("producer", "default", None)
    assert created["created_by"].startswith("env-key:")
    # It submits (producer) but cannot cancel (operator's)
    job = client.post("/v1/jobs", json={"type": "t", "payload": {}}, headers=key).get_json()
    assert_error(client.post(f"/v1/jobs/{job['id']}/cancel", headers=key), 403, "permission_denied")
    # And the secret is never shown again
    listed = client.get("/v1/keys", headers=AUTH).get_json()["keys"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "key" not in client.get(f"/v1/keys/{created['id']}", headers=AUTH).get_json()


def test_a_key_also_works_as_a_bearer_token(client):
    secret = create_key(client, role="viewer").get_json()["key"]
    assert client.get("/v1/queues", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_a_revoked_key_is_refused_at_once_and_listed_only_on_request(client):
    created = create_key(client).get_json()
    key = {"X-API-Key": created["key"]}
    assert client.get("/v1/jobs", headers=key).status_code == 200  # cached as valid now

    revoked = client.delete(f"/v1/keys/{created['id']}", headers=AUTH)

    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"] is not None
    assert_error(client.get("/v1/jobs", headers=key), 401, "unauthenticated")
    assert client.get("/v1/keys", headers=AUTH).get_json()["keys"] == []
    assert len(client.get("/v1/keys?include_revoked=true", headers=AUTH).get_json()["keys"]) == 1
    assert_error(client.delete(f"/v1/keys/{created['id']}", headers=AUTH), 409, "conflict")


def test_a_key_is_revoked_by_its_shown_prefix_too(client):
    created = create_key(client).get_json()
    assert client.delete(f"/v1/keys/{created['prefix']}", headers=AUTH).get_json()["id"] == created["id"]


def test_an_expiring_key_works_until_its_expiry_and_is_refused_after(client, store):
    created = create_key(client, expires_in_seconds=3600).get_json()
    assert client.get("/v1/jobs", headers={"X-API-Key": created["key"]}).status_code == 200
    # Given a key whose hour ran out (made an hour and a second ago)
    past = datetime.now(UTC) - timedelta(hours=1, seconds=1)
    expired = store.create_api_key(
        KeySpec(name="old", role=Role.VIEWER, expires_in_seconds=3600), created_by="test", now=past
    )
    # Then it is refused
    assert_error(client.get("/v1/jobs", headers={"X-API-Key": expired.secret}), 401, "unauthenticated")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "role": "superuser"},
        {"role": "viewer"},
        {"name": "x", "role": "viewer", "expires_in_seconds": -1},
        {"name": "x", "role": "viewer", "expires_in_seconds": "90d"},  # a number of seconds only
        {"name": "x", "role": "viewer", "expires_in_seconds": True},
        {"name": "x", "role": "viewer", "secret": "mine"},
        ["not", "an", "object"],
    ],
)
def test_an_invalid_key_is_a_400_naming_the_problem(client, body):
    assert_error(client.post("/v1/keys", json=body, headers=AUTH), 400, "invalid_argument")


@pytest.mark.parametrize("key_id", ["00000000-0000-0000-0000-000000000000", "qk_0123456789ab", "nope"])
def test_an_unknown_key_is_a_404(client, key_id):
    assert_error(client.get(f"/v1/keys/{key_id}", headers=AUTH), 404, "not_found")
    assert_error(client.delete(f"/v1/keys/{key_id}", headers=AUTH), 404, "not_found")


def test_key_changes_are_audited_with_the_admin_and_the_request(client):
    created = create_key(client).get_json()
    client.delete(f"/v1/keys/{created['id']}", headers={**AUTH, "X-Request-ID": "revoke-1"})

    entries = client.get("/v1/audit", headers=AUTH).get_json()["entries"]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("key.revoke", created["id"]),
        ("key.create", created["id"]),
    ]
    assert entries[0]["request_id"] == "revoke-1" and entries[0]["remote_addr"] == "127.0.0.1"
    assert entries[1]["details"]["role"] == "producer"
    assert created["key"] not in str(entries)


def test_a_listing_parameter_that_is_unknown_is_refused(client):
    assert_error(client.get("/v1/keys?revoked=1", headers=AUTH), 400, "invalid_argument")
