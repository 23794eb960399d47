"""PUT /v1/queues/{queue}/limits and /v1/tenants/{tenant}/limits: validation, what GET
/v1/queues shows, the audit entries, and who may set a tenant's limits."""

from __future__ import annotations

import pytest

from quorra.access import Role
from quorra.keys import KeySpec
from quorra.limits import Limits, Rate
from tests.api.conftest import AUTH, assert_error, post_job

LIMITS = {"max_in_flight": 3, "rate": {"limit": 50, "per": "second"}}


def test_queue_limits_are_set_shown_and_enforced(client, store):
    # Given a queue with 5 jobs
    for _ in range(5):
        post_job(client, {"type": "t", "payload": {}, "queue": "mail"})
    # When its limits are set
    response = client.put("/v1/queues/mail/limits", json=LIMITS, headers=AUTH)
    # Then the answer and the queue list show them, and a lease obeys them
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"queue": "mail", "limits": LIMITS}
    [summary] = client.get("/v1/queues", headers=AUTH).get_json()["summary"]
    assert summary["limits"] == LIMITS
    assert len(store.lease_jobs(["mail"], "worker-a", 10, 30)) == 3


def test_a_queue_without_jobs_can_be_limited_and_is_listed(client):
    assert client.put("/v1/queues/later/limits", json={"max_in_flight": 1}, headers=AUTH).status_code == 200
    [summary] = client.get("/v1/queues", headers=AUTH).get_json()["summary"]
    assert (summary["queue"], summary["limits"]) == ("later", {"max_in_flight": 1, "rate": None})


def test_an_empty_body_lifts_the_limits(client, store):
    client.put("/v1/queues/mail/limits", json=LIMITS, headers=AUTH)
    response = client.put("/v1/queues/mail/limits", json={}, headers=AUTH)
    assert response.get_json()["limits"] == {"max_in_flight": None, "rate": None}
    assert store.queue_limits() == {}


def test_setting_limits_wakes_the_queues_workers(client, notifier):
    notifier.published.clear()
    client.put("/v1/queues/mail/limits", json={"max_in_flight": 9}, headers=AUTH)
    assert notifier.published == ["mail"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": -1}, "max_in_flight"),
        ({"max_in_flight": "3"}, "max_in_flight"),
        ({"max_in_flight": True}, "max_in_flight"),
        ({"max_in_flight": 2.5}, "max_in_flight"),
        ({"max_in_flight": 10**12}, "max_in_flight"),
        ({"rate": {"limit": 0, "per": "second"}}, "rate.limit"),
        ({"rate": {"limit": 5, "per": "hour"}}, "rate.per"),
        ({"rate": {"limit": 5}}, "rate.per"),
        ({"rate": {"limit": 5, "per": "second", "burst": 9}}, "rate.burst"),
        ({"rate": 50}, "rate"),
        ({"max_inflight": 3}, "max_inflight"),
    ],
)
def test_invalid_limits_are_a_400_naming_the_field(client, store, body, field):
    error = assert_error(client.put("/v1/queues/mail/limits", json=body, headers=AUTH), 400, "invalid_argument")
    assert field in [detail["field"] for detail in error["details"]]
    assert store.queue_limits() == {}


@pytest.mark.parametrize("raw", ["[1]", '"x"', "null", "{"])
def test_a_body_that_is_not_an_object_is_a_400(client, raw):
    response = client.put("/v1/queues/mail/limits", data=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert_error(response, 400, "invalid_argument")


def test_an_invalid_queue_name_is_a_400(client):
    assert_error(client.put("/v1/queues/bad%20name/limits", json={}, headers=AUTH), 400, "invalid_argument")


def test_limits_need_a_json_body(client):
    assert_error(client.put("/v1/queues/mail/limits", data="x", headers=AUTH), 415, "unsupported_media_type")


def test_setting_limits_is_audited(client):
    client.put("/v1/queues/mail/limits", json=LIMITS, headers={**AUTH, "X-Request-ID": "lim-1"})
    client.put("/v1/tenants/acme/limits", json={"max_in_flight": 7}, headers={**AUTH, "X-Request-ID": "lim-2"})
    entries = client.get("/v1/audit", headers=AUTH).get_json()["entries"]
    assert [(e["action"], e["target"], e["request_id"], e["details"]) for e in reversed(entries)] == [
        ("queue.limits", "mail", "lim-1", LIMITS),
        ("tenant.limits", "acme", "lim-2", {"max_in_flight": 7, "rate": None}),
    ]


def test_an_installation_admin_sets_and_reads_a_tenants_limits(client, store):
    response = client.put("/v1/tenants/acme/limits", json=LIMITS, headers=AUTH)
    assert response.get_json() == {"tenant": "acme", "limits": LIMITS}
    assert store.tenant_limits("acme") == Limits(3, Rate(50, 1))
    assert client.get("/v1/tenants/acme/limits", headers=AUTH).get_json()["limits"] == LIMITS


def test_a_tenants_own_admin_may_read_its_limits_but_not_set_them(client, store):
    # Given an admin key of tenant acme, whose limits an installation admin set
    client.put("/v1/tenants/acme/limits", json={"max_in_flight": 2}, headers=AUTH)
    key = store.create_api_key(KeySpec(name="acme admin", role=Role.ADMIN, tenant="acme"), created_by="test")
    headers = {"X-API-Key": key.secret}
    # Then it reads its own limits, may not raise them, and another tenant does not exist for it
    assert client.get("/v1/tenants/acme/limits", headers=headers).get_json()["limits"]["max_in_flight"] == 2
    error = assert_error(client.put("/v1/tenants/acme/limits", json={}, headers=headers), 403, "permission_denied")
    assert error["details"]["permission"] == "tenants:manage"
    assert_error(client.get("/v1/tenants/default/limits", headers=headers), 404, "not_found")
    assert_error(client.put("/v1/tenants/default/limits", json={}, headers=headers), 404, "not_found")
    assert store.tenant_limits("acme") == Limits(max_in_flight=2)


def test_a_tenant_limit_caps_the_sum_over_its_queues(client, store):
    for queue in ("a", "b", "a", "b"):
        post_job(client, {"type": "t", "payload": {}, "queue": queue})
    client.put("/v1/tenants/default/limits", json={"max_in_flight": 3}, headers=AUTH)
    assert len(store.lease_jobs(["a", "b"], "worker-a", 10, 30)) == 3


def test_an_operator_sets_queue_limits_but_not_tenant_limits(client, store):
    key = store.create_api_key(KeySpec(name="ops", role=Role.OPERATOR), created_by="test")
    headers = {"X-API-Key": key.secret}
    assert client.put("/v1/queues/mail/limits", json={"max_in_flight": 1}, headers=headers).status_code == 200
    error = assert_error(client.put("/v1/tenants/default/limits", json={}, headers=headers), 403, "permission_denied")
    assert error["details"]["permission"] == "tenants:manage"
