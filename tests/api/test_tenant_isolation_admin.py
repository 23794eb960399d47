"""Tenant isolation of the admin routes (schedules, webhooks, keys, the audit log), walked
with two tenants' admin keys on both backends: tenant B sees none of tenant A's objects
(empty lists, 404s by name or id, never a 403 that would tell them apart from missing ones)
and changes none of them; only the installation's admins (admins of the default tenant) act
for another tenant; the tenant '*' is for worker keys only."""

from __future__ import annotations

import pytest

from quorra.access import Role
from tests.api.conftest import AUTH, assert_error
from tests.support.tenants import key_of

SCHEDULE = {"name": "nightly", "cron": "0 3 * * *", "job": {"type": "report", "queue": "reports"}}
WEBHOOK = {"url": "https://example.com/hooks", "events": ["job.succeeded"]}
# Every route of the blueprints walked here; a new route must join a walk below.
WALKED = {
    ("POST", "/v1/schedules"),
    ("GET", "/v1/schedules"),
    ("GET", "/v1/schedules/<name>"),
    ("PATCH", "/v1/schedules/<name>"),
    ("DELETE", "/v1/schedules/<name>"),
    ("POST", "/v1/schedules/<name>/pause"),
    ("POST", "/v1/schedules/<name>/resume"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/webhooks/<webhook_id>"),
    ("DELETE", "/v1/webhooks/<webhook_id>"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("GET", "/v1/keys/<key_id>"),
    ("DELETE", "/v1/keys/<key_id>"),
    ("GET", "/v1/audit"),
}


@pytest.fixture
def acme(store):
    return key_of(store, "acme")


@pytest.fixture
def globex(store):
    return key_of(store, "globex")


def created(response) -> dict:
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def test_every_admin_route_is_walked(app):
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(("/v1/schedules", "/v1/webhooks", "/v1/keys", "/v1/audit"))
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == WALKED


def test_another_tenants_schedule_is_missing_and_unchanged(client, acme, globex):
    mine = created(client.post("/v1/schedules", json=SCHEDULE, headers=acme))

    assert client.get("/v1/schedules", headers=globex).get_json() == {"schedules": []}
    assert client.get("/v1/schedules", headers=AUTH).get_json() == {"schedules": []}
    for response in (
        client.get("/v1/schedules/nightly", headers=globex),
        client.patch("/v1/schedules/nightly", json={"cron": "0 4 * * *"}, headers=globex),
        client.post("/v1/schedules/nightly/pause", headers=globex),
        client.post("/v1/schedules/nightly/resume", headers=globex),
        client.delete("/v1/schedules/nightly", headers=globex),
    ):
        assert_error(response, 404, "not_found")
    assert client.get("/v1/schedules/nightly", headers=acme).get_json() == mine


def test_a_schedule_name_is_free_in_every_other_tenant(client, acme, globex):
    created(client.post("/v1/schedules", json=SCHEDULE, headers=acme))

    theirs = created(client.post("/v1/schedules", json=SCHEDULE | {"cron": "0 5 * * *"}, headers=globex))
    paused = client.post("/v1/schedules/nightly/pause", headers=globex).get_json()

    assert theirs["cron"] == "0 5 * * *" and paused["is_paused"] is True
    mine = client.get("/v1/schedules/nightly", headers=acme).get_json()
    assert (mine["cron"], mine["is_paused"]) == ("0 3 * * *", False)
    assert_error(client.post("/v1/schedules", json=SCHEDULE, headers=acme), 409, "conflict")


def test_another_tenants_webhook_is_missing_and_unchanged(client, acme, globex):
    mine = created(client.post("/v1/webhooks", json=WEBHOOK, headers=acme))
    del mine["secret"]

    assert client.get("/v1/webhooks", headers=globex).get_json() == {"webhooks": []}
    assert client.get("/v1/webhooks", headers=AUTH).get_json() == {"webhooks": []}
    assert_error(client.get(f"/v1/webhooks/{mine['id']}", headers=globex), 404, "not_found")
    assert_error(client.delete(f"/v1/webhooks/{mine['id']}", headers=globex), 404, "not_found")
    assert client.get(f"/v1/webhooks/{mine['id']}", headers=acme).get_json() == mine
    assert client.get("/v1/webhooks", headers=acme).get_json() == {"webhooks": [mine]}


def test_another_tenants_key_is_missing_and_keeps_working(client, acme, globex):
    # Given a key that acme's admin made (of acme, the creator's tenant)
    mine = created(client.post("/v1/keys", json={"name": "acme ci", "role": "producer"}, headers=acme))
    assert mine["tenant"] == "acme"

    # Then globex's admin finds it neither listed nor by id or prefix, and cannot revoke it
    assert [k["tenant"] for k in client.get("/v1/keys", headers=globex).get_json()["keys"]] == ["globex"]
    for key_id in (mine["id"], mine["prefix"]):
        assert_error(client.get(f"/v1/keys/{key_id}", headers=globex), 404, "not_found")
        assert_error(client.delete(f"/v1/keys/{key_id}", headers=globex), 404, "not_found")
    assert client.get(f"/v1/keys/{mine['id']}", headers=acme).get_json()["revoked_at"] is None
    assert client.get("/v1/schedules", headers={"X-API-Key": mine["key"]}).status_code == 403  # a producer, alive
    # and the default tenant's admins see their own keys only, unless they name the tenant
    assert client.get("/v1/keys", headers=AUTH).get_json() == {"keys": []}
    assert_error(client.get(f"/v1/keys/{mine['id']}", headers=AUTH), 404, "not_found")
    assert client.get(f"/v1/keys/{mine['id']}?tenant=acme", headers=AUTH).get_json()["id"] == mine["id"]


def test_only_the_installations_admins_make_or_read_another_tenants_keys(client, acme, store):
    body = {"name": "globex ci", "role": "producer", "tenant": "globex"}

    refused = assert_error(client.post("/v1/keys", json=body, headers=acme), 403, "permission_denied")
    assert "'default' tenant" in refused["message"] and "'globex'" in refused["message"]
    assert_error(client.get("/v1/keys?tenant=globex", headers=acme), 403, "permission_denied")
    made = created(client.post("/v1/keys", json=body, headers=AUTH))

    assert made["tenant"] == "globex"
    assert [k["id"] for k in client.get("/v1/keys?tenant=globex", headers=AUTH).get_json()["keys"]] == [made["id"]]
    assert client.delete(f"/v1/keys/{made['id']}?tenant=globex", headers=AUTH).get_json()["revoked_at"]
    # An admin of another tenant is no installation admin, whatever its role
    operator = key_of(store, "default", Role.OPERATOR)
    assert_error(client.get("/v1/keys", headers=operator), 403, "permission_denied")


def test_every_tenant_is_for_worker_keys_only(client, acme):
    fleet = created(client.post("/v1/keys", json={"name": "fleet", "role": "worker", "tenant": "*"}, headers=AUTH))
    assert fleet["tenant"] == "*"

    refused = assert_error(
        client.post("/v1/keys", json={"name": "root", "role": "admin", "tenant": "*"}, headers=AUTH),
        400,
        "invalid_argument",
    )
    assert refused["details"] == [
        {"field": "tenant", "message": "the tenant '*' (every tenant) is for the worker role only, not admin"}
    ]
    # and a tenant's own admins may not make a worker of every tenant
    body = {"name": "fleet", "role": "worker", "tenant": "*"}
    assert_error(client.post("/v1/keys", json=body, headers=acme), 403, "permission_denied")


def test_each_tenant_reads_its_own_audit_entries(client, acme, globex):
    created(client.post("/v1/schedules", json=SCHEDULE, headers=acme))
    created(client.post("/v1/webhooks", json=WEBHOOK, headers=globex))
    client.delete("/v1/schedules/nightly", headers=globex)  # a 404: nothing recorded

    mine = client.get("/v1/audit", headers=acme).get_json()["entries"]
    theirs = client.get("/v1/audit", headers=globex).get_json()["entries"]

    assert [(e["action"], e["tenant"]) for e in mine] == [("schedule.create", "acme")]
    assert [(e["action"], e["tenant"]) for e in theirs] == [("webhook.create", "globex")]
    assert client.get("/v1/audit", headers=AUTH).get_json()["entries"] == []
