"""Every /v1 route, walked with a credential of each role (a managed key, and a JWT): a role
that lacks the route's permission gets a 403 naming it; a role that has it gets past the
check. The table below is the one place a route's permission is written down for the tests:
a new route fails here until it is added (with the permission its view declares)."""

from __future__ import annotations

import uuid

import pytest

from quorra.access import ROLE_PERMISSIONS, Permission, Role
from quorra.api import create_app
from quorra.audit import Action, Actor, AuditEntry
from quorra.keys import KeySpec
from tests.api.conftest import assert_error
from tests.support.tokens import AUDIENCE, ISSUER, JWT_SECRET, hs256

P = Permission
ROUTE_PERMISSIONS: dict[tuple[str, str], Permission] = {
    ("POST", "/v1/jobs"): P.JOBS_SUBMIT,
    ("POST", "/v1/jobs/batch"): P.JOBS_SUBMIT,
    ("GET", "/v1/jobs"): P.JOBS_READ,
    ("GET", "/v1/jobs/<uuid:job_id>"): P.JOBS_READ,
    ("GET", "/v1/jobs/<uuid:job_id>/attempts"): P.JOBS_READ,
    ("POST", "/v1/jobs/retry"): P.JOBS_MANAGE,
    ("DELETE", "/v1/jobs"): P.JOBS_MANAGE,
    ("DELETE", "/v1/jobs/<uuid:job_id>"): P.JOBS_MANAGE,
    ("POST", "/v1/jobs/<job_id>/cancel"): P.JOBS_MANAGE,
    ("POST", "/v1/jobs/<job_id>/retry"): P.JOBS_MANAGE,
    ("GET", "/v1/queues"): P.JOBS_READ,
    ("POST", "/v1/queues/<queue>/pause"): P.QUEUES_MANAGE,
    ("POST", "/v1/queues/<queue>/resume"): P.QUEUES_MANAGE,
    ("PUT", "/v1/queues/<queue>/limits"): P.QUEUES_MANAGE,
    ("GET", "/v1/tenants/<tenant>/limits"): P.JOBS_READ,
    ("PUT", "/v1/tenants/<tenant>/limits"): P.TENANTS_MANAGE,
    ("GET", "/v1/workers"): P.JOBS_READ,
    ("GET", "/v1/stats/throughput"): P.JOBS_READ,
    ("POST", "/v1/workflows"): P.JOBS_SUBMIT,
    ("GET", "/v1/workflows/<uuid:workflow_id>"): P.JOBS_READ,
    ("POST", "/v1/webhooks"): P.WEBHOOKS_MANAGE,
    ("GET", "/v1/webhooks"): P.WEBHOOKS_MANAGE,
    ("GET", "/v1/webhooks/<webhook_id>"): P.WEBHOOKS_MANAGE,
    ("DELETE", "/v1/webhooks/<webhook_id>"): P.WEBHOOKS_MANAGE,
    ("POST", "/v1/schedules"): P.SCHEDULES_MANAGE,
    ("GET", "/v1/schedules"): P.SCHEDULES_READ,
    ("GET", "/v1/schedules/<name>"): P.SCHEDULES_READ,
    ("PATCH", "/v1/schedules/<name>"): P.SCHEDULES_MANAGE,
    ("DELETE", "/v1/schedules/<name>"): P.SCHEDULES_MANAGE,
    ("POST", "/v1/schedules/<name>/pause"): P.SCHEDULES_MANAGE,
    ("POST", "/v1/schedules/<name>/resume"): P.SCHEDULES_MANAGE,
    ("POST", "/v1/keys"): P.KEYS_MANAGE,
    ("GET", "/v1/keys"): P.KEYS_MANAGE,
    ("GET", "/v1/keys/<key_id>"): P.KEYS_MANAGE,
    ("DELETE", "/v1/keys/<key_id>"): P.KEYS_MANAGE,
    ("GET", "/v1/audit"): P.AUDIT_READ,
}
# Bodies that pass validation, so that a permitted call reaches its verb.
BODIES = {
    ("POST", "/v1/jobs"): {"type": "t", "payload": {}},
    ("POST", "/v1/jobs/batch"): {"jobs": [{"type": "t", "payload": {}}]},
    ("POST", "/v1/jobs/retry"): {"queue": "default"},
    ("DELETE", "/v1/jobs"): {"queue": "default", "status": "dead"},
    ("POST", "/v1/schedules"): {"name": "walked", "interval_seconds": 60, "job": {"type": "t", "payload": {}}},
    ("PATCH", "/v1/schedules/<name>"): {"timezone": "UTC"},
    ("POST", "/v1/keys"): {"name": "walked", "role": "viewer"},
    ("PUT", "/v1/queues/<queue>/limits"): {"max_in_flight": 2},
    ("PUT", "/v1/tenants/<tenant>/limits"): {"rate": {"limit": 100, "per": "second"}},
}
PARAMS = {
    "<uuid:job_id>": str(uuid.UUID(int=1)),
    "<job_id>": str(uuid.UUID(int=1)),
    "<uuid:workflow_id>": str(uuid.UUID(int=3)),
    "<webhook_id>": str(uuid.UUID(int=4)),
    "<name>": "ghost",
    "<queue>": "walked",
    "<tenant>": "default",
}


def v1_routes(app) -> dict[tuple[str, str], object]:
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/v1/"):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes[(method, rule.rule)] = app.view_functions[rule.endpoint]
    return routes


def concrete(path: str) -> str:
    for name, value in PARAMS.items():
        path = path.replace(name, value)
    return path.replace("<key_id>", str(uuid.UUID(int=2)))


@pytest.fixture
def jwt_app(settings, store, notifier):
    jwt_settings = settings.model_copy(
        update={"jwt_secret": JWT_SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    )
    return create_app(jwt_settings, store=store, notifier=notifier)


@pytest.fixture
def credentials(store):
    """Per role: the headers of a managed key and of a JWT of that role."""
    found = {}
    for role in Role:
        key = store.create_api_key(KeySpec(name=f"{role} key", role=role), created_by="test").secret
        found[role] = {
            "managed key": {"X-API-Key": key},
            "jwt": {"Authorization": f"Bearer {hs256(sub=f'{role}-user', role=role.value)}"},
        }
    return found


def test_the_table_names_every_v1_route_with_the_permission_its_view_declares(jwt_app):
    declared = {route: getattr(view, "required_permission", None) for route, view in v1_routes(jwt_app).items()}
    assert declared == ROUTE_PERMISSIONS


@pytest.mark.parametrize("role", list(Role))
def test_each_role_reaches_exactly_the_routes_its_permissions_allow(jwt_app, credentials, role):
    client = jwt_app.test_client()
    for kind, headers in credentials[role].items():
        for (method, rule), permission in ROUTE_PERMISSIONS.items():
            response = client.open(concrete(rule), method=method, json=BODIES.get((method, rule)), headers=headers)
            where = f"{kind} of {role}: {method} {rule} -> {response.status_code} {response.get_data(as_text=True)}"
            if permission in ROLE_PERMISSIONS[role]:
                assert response.status_code not in (401, 403), where
            else:
                error = assert_error(response, 403, "permission_denied")
                assert error["details"] == {"permission": permission.value, "role": role.value}, where
                assert permission.value in error["message"], where


@pytest.mark.parametrize("role", list(Role))
def test_the_dashboard_admits_the_roles_that_read_jobs(jwt_app, credentials, role):
    key = credentials[role]["managed key"]["X-API-Key"]
    response = jwt_app.test_client().get("/", auth=("anyone", key))
    assert response.status_code == (200 if Permission.JOBS_READ in ROLE_PERMISSIONS[role] else 403)


def test_a_refused_action_changes_nothing_and_records_nothing(jwt_app, credentials, store):
    client = jwt_app.test_client()
    job = client.post("/v1/jobs", json={"type": "t", "payload": {}}, headers=credentials[Role.PRODUCER]["jwt"])
    job_id = job.get_json()["id"]

    for role in (Role.PRODUCER, Role.VIEWER, Role.WORKER):
        refused = client.post(f"/v1/jobs/{job_id}/cancel", headers=credentials[role]["managed key"])
        assert_error(refused, 403, "permission_denied")

    assert store.get_job(job_id).status.value == "pending"
    assert store.list_audit().records == []


@pytest.mark.parametrize("role", list(Role))
def test_the_dashboard_audit_page_is_for_the_roles_that_read_the_audit_log(jwt_app, credentials, store, role):
    store.retry_dead("q", audit=AuditEntry(Actor("key:x", "<script>x</script>"), Action.JOBS_RETRY_DEAD, "q"))
    key = credentials[role]["managed key"]["X-API-Key"]
    response = jwt_app.test_client().get("/audit", auth=("anyone", key))
    if Permission.AUDIT_READ in ROLE_PERMISSIONS[role]:
        page = response.get_data(as_text=True)
        assert response.status_code == 200 and "jobs.retry_dead" in page
        assert "<script>" not in page  # escaped
    elif Permission.JOBS_READ in ROLE_PERMISSIONS[role]:
        assert response.status_code == 403 and "audit:read" in response.get_data(as_text=True)
    else:
        assert response.status_code == 403  # a valid key that may not read jobs: no dashboard at all
