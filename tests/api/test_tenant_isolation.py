"""Tenant isolation over REST: every route of jobs, queues, workflows, statistics and
workers, walked with tenant B's keys (a managed key and a JWT) against tenant A's objects.
Another tenant's id is a 404 exactly like a missing id, lists and counts are empty or B's
own, and A's objects are unchanged afterwards. Tenant A's key walks the same routes as a
control (it finds its objects), so the test can fail.

The walk fails when a /v1 route that takes a job or workflow id, or any route of these
blueprints, is added without an entry in ID_ROUTES or LIST_ROUTES below."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from quorra.access import ALL_TENANTS, Role
from quorra.api import create_app
from quorra.jobs import JobStatus
from quorra.keys import KeySpec
from quorra.limits import Limits, Rate
from quorra.store import Store, WorkerSighting
from quorra.workflows import parse_workflow
from tests.api.conftest import assert_error
from tests.factories import spec
from tests.support.tokens import AUDIENCE, ISSUER, JWT_SECRET, hs256

A, B = "acme", "globex"
QUEUE = "emails"  # both tenants have a queue of this name: two queues
ISOLATED_PREFIXES = ("/v1/jobs", "/v1/queues", "/v1/workflows", "/v1/stats", "/v1/workers")


@dataclass(frozen=True)
class TenantA:
    """Tenant A's objects, one of each kind a route can name."""

    pending: str
    dead: str
    succeeded: str
    workflow: str

    def ids(self) -> list[str]:
        return [self.pending, self.dead, self.succeeded]


# Every route that names a job or workflow: which of A's objects to name, and the body.
ID_ROUTES: dict[tuple[str, str], tuple[str, dict | None]] = {
    ("GET", "/v1/jobs/<uuid:job_id>"): ("pending", None),
    ("GET", "/v1/jobs/<uuid:job_id>/attempts"): ("succeeded", None),
    ("DELETE", "/v1/jobs/<uuid:job_id>"): ("succeeded", None),
    ("POST", "/v1/jobs/<job_id>/cancel"): ("pending", None),
    ("POST", "/v1/jobs/<job_id>/retry"): ("dead", None),
    ("GET", "/v1/workflows/<uuid:workflow_id>"): ("workflow", None),
}
# The other routes of these blueprints, each checked by a test below.
LIST_ROUTES = {
    ("POST", "/v1/jobs"),
    ("POST", "/v1/jobs/batch"),
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs/retry"),
    ("DELETE", "/v1/jobs"),
    ("GET", "/v1/queues"),
    ("POST", "/v1/queues/<queue>/pause"),
    ("POST", "/v1/queues/<queue>/resume"),
    ("PUT", "/v1/queues/<queue>/limits"),
    ("GET", "/v1/stats/throughput"),
    ("GET", "/v1/workers"),
    ("POST", "/v1/workflows"),
}


@pytest.fixture
def app(settings, store, notifier):
    jwt_settings = settings.model_copy(
        update={"jwt_secret": JWT_SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    )
    return create_app(jwt_settings, store=store, notifier=notifier)


@pytest.fixture
def client(app):
    return app.test_client()


def managed_key(store: Store, tenant: str, role: Role = Role.ADMIN) -> dict[str, str]:
    key = store.create_api_key(KeySpec(name=f"{tenant} {role}", role=role, tenant=tenant), created_by="test")
    return {"X-API-Key": key.secret}


def bearer(tenant: str, role: Role = Role.ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {hs256(sub=f'{tenant}-user', role=role.value, tenant=tenant)}"}


@pytest.fixture
def tenant_a(store) -> TenantA:
    """Tenant A's jobs in every state a route acts on, an attempt history, a workflow, a
    worker; the fleet's worker too."""
    pending = store.enqueue(spec(queue="later", payload={"to": "a@acme.test"}), tenant=A)
    store.enqueue(spec(queue=QUEUE, max_retries=0), tenant=A)
    [doomed] = store.lease_jobs([QUEUE], "a-worker", 1, 30, tenant=A)
    dead = store.nack(doomed.id, doomed.lease_id, "boom", tenant=A)
    store.enqueue(spec(queue=QUEUE), tenant=A)
    [done] = store.lease_jobs([QUEUE], "a-worker", 1, 30, tenant=A)
    succeeded = store.ack(done.id, done.lease_id, {"ok": True}, tenant=A)
    plan = parse_workflow({"jobs": [{"ref": "only", "type": "t", "payload": {}, "queue": QUEUE}]})
    workflow, _ = store.submit_workflow(plan, tenant=A)
    store.record_workers(
        [
            WorkerSighting("a-worker", queues=(QUEUE,), tenant=A),
            WorkerSighting("fleet-worker", queues=(QUEUE,), tenant=ALL_TENANTS),
        ]
    )
    return TenantA(pending.id, dead.id, succeeded.id, workflow.id)


@pytest.fixture(params=["managed key", "jwt"])
def b_headers(request, store):
    return managed_key(store, B) if request.param == "managed key" else bearer(B)


def concrete(rule: str, object_id: str) -> str:
    for name in ("<uuid:job_id>", "<job_id>", "<uuid:workflow_id>"):
        rule = rule.replace(name, object_id)
    return rule


def snapshot(store: Store, a: TenantA):
    return [store.get_job(job_id, tenant=A) for job_id in a.ids()], store.get_workflow(a.workflow, tenant=A).counts


def test_the_walk_covers_every_route_of_jobs_queues_workflows_stats_and_workers(app):
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    naming_an_object = {route for route in routes if "job_id" in route[1] or "workflow_id" in route[1]}
    ours = {route for route in routes if route[1].startswith(ISOLATED_PREFIXES)}
    assert naming_an_object <= set(ID_ROUTES), "a route names a job or workflow: add it to ID_ROUTES"
    assert ours == set(ID_ROUTES) | LIST_ROUTES, "a route of jobs, queues, workflows, stats or workers is not walked"


def test_another_tenants_id_is_a_404_exactly_like_a_missing_id_and_changes_nothing(client, store, tenant_a, b_headers):
    before = snapshot(store, tenant_a)
    for (method, rule), (kind, body) in ID_ROUTES.items():
        theirs, ghost = getattr(tenant_a, kind), str(uuid.uuid4())
        foreign = client.open(concrete(rule, theirs), method=method, json=body, headers=b_headers)
        missing = client.open(concrete(rule, ghost), method=method, json=body, headers=b_headers)
        error, expected = assert_error(foreign, 404, "not_found"), assert_error(missing, 404, "not_found")
        assert error | {"message": error["message"].replace(theirs, ghost)} == expected, f"{method} {rule}"
    waited = client.get(f"/v1/jobs/{tenant_a.pending}?wait=1s&include=attempts_history", headers=b_headers)
    assert_error(waited, 404, "not_found")
    assert snapshot(store, tenant_a) == before


def test_the_owner_reaches_every_id_route(client, store, tenant_a):
    """The control: A's own key finds each object the walk above names."""
    headers = managed_key(store, A, Role.OPERATOR)
    for (method, rule), (kind, body) in ID_ROUTES.items():
        response = client.open(concrete(rule, getattr(tenant_a, kind)), method=method, json=body, headers=headers)
        assert response.status_code in (200, 204), f"{method} {rule}: {response.get_data(as_text=True)}"


def test_lists_show_one_tenants_jobs_whatever_the_filter(client, store, tenant_a, b_headers):
    own = store.enqueue(spec(queue=QUEUE, payload={"to": "b@globex.test"}), tenant=B)
    filters = [
        "",
        f"?queue={QUEUE}",
        "?queue=later",
        "?status=dead",
        "?status=succeeded",
        "?status=pending",
        "?status=ready",
        "?type=email_send",
        f"?id={tenant_a.pending}",
        "?payload_contains=acme",
        "?created_from=2000-01-01T00:00:00Z",
        "?include=payload,result&limit=500",
    ]
    for query in filters:
        listed = client.get(f"/v1/jobs{query}", headers=b_headers)
        assert listed.status_code == 200, query
        assert {job["id"] for job in listed.get_json()["jobs"]} <= {own.id}, query
    mine = client.get(f"/v1/jobs?queue={QUEUE}", headers=b_headers).get_json()["jobs"]
    assert [job["id"] for job in mine] == [own.id]


def test_queues_show_one_tenants_counts_and_pauses(client, store, tenant_a, b_headers):
    store.enqueue(spec(queue=QUEUE), tenant=B)
    store.set_queue_paused("later", True, tenant=A)
    body = client.get("/v1/queues", headers=b_headers).get_json()
    assert body["queues"] == [{"queue": QUEUE, "status": "pending", "count": 1}]
    [summary] = body["summary"]
    assert (summary["queue"], summary["counts"], summary["is_paused"]) == (QUEUE, {"pending": 1}, False)
    assert summary["has_workers"] is True  # the fleet's worker serves every tenant's "emails"


def test_pausing_a_queue_pauses_the_tenants_queue_of_that_name_only(client, store, tenant_a, b_headers):
    mine = store.enqueue(spec(queue="later"), tenant=B)
    paused = client.post("/v1/queues/later/pause", headers=b_headers)
    assert paused.status_code == 200 and paused.get_json()["is_paused"] is True
    assert store.paused_queues(tenant=A) == {}
    assert store.lease_jobs(["later"], "b-worker", 1, 30, tenant=B) == []
    [leased] = store.lease_jobs(["later"], "a-worker", 1, 30, tenant=A)
    assert leased.id == tenant_a.pending
    client.post("/v1/queues/later/resume", headers=b_headers)
    assert [job.id for job in store.lease_jobs(["later"], "b-worker", 1, 30, tenant=B)] == [mine.id]


def test_limiting_a_queue_limits_the_tenants_queue_of_that_name_only(client, store, tenant_a, b_headers):
    # Given two jobs of B's "later" beside A's, and a limit A set on its own "later"
    store.enqueue_many([spec(queue="later"), spec(queue="later")], tenant=B)
    store.set_queue_limits("later", Limits(rate=Rate(1, 60)), tenant=A)
    # When B limits its "later" to 1 in flight
    limited = client.put("/v1/queues/later/limits", json={"max_in_flight": 1}, headers=b_headers)
    # Then B's lease takes 1, A's limits are A's own, and B's queue list shows B's limit only
    assert limited.status_code == 200
    assert len(store.lease_jobs(["later"], "b-worker", 5, 30, tenant=B)) == 1
    assert store.queue_limits(tenant=A) == {"later": Limits(rate=Rate(1, 60))}
    summaries = {s["queue"]: s["limits"] for s in client.get("/v1/queues", headers=b_headers).get_json()["summary"]}
    assert summaries["later"] == {"max_in_flight": 1, "rate": None}


def test_bulk_actions_touch_the_tenants_jobs_only(client, store, tenant_a, b_headers):
    before = snapshot(store, tenant_a)
    retried = client.post("/v1/jobs/retry", json={"queue": QUEUE}, headers=b_headers)
    deleted = client.delete("/v1/jobs", json={"queue": QUEUE, "status": "succeeded"}, headers=b_headers)
    assert (retried.get_json(), deleted.get_json()) == ({"retried": 0}, {"deleted": 0})
    assert snapshot(store, tenant_a) == before


def test_statistics_and_workers_are_the_tenants(client, store, tenant_a, b_headers):
    throughput = client.get("/v1/stats/throughput?minutes=60", headers=b_headers).get_json()
    assert throughput["queues"] == []
    workers = client.get("/v1/workers", headers=b_headers).get_json()["workers"]
    assert [(worker["id"], worker["jobs_in_flight"]) for worker in workers] == [("fleet-worker", 0)]
    owner = managed_key(store, A, Role.VIEWER)
    assert [q["queue"] for q in client.get("/v1/stats/throughput", headers=owner).get_json()["queues"]] == [QUEUE]
    assert {w["id"] for w in client.get("/v1/workers", headers=owner).get_json()["workers"]} == {
        "a-worker",
        "fleet-worker",
    }


def test_submits_are_the_tenants_and_cannot_name_another_tenants_job(client, store, tenant_a, b_headers):
    created = client.post("/v1/jobs", json={"type": "t", "payload": {}, "queue": QUEUE}, headers=b_headers)
    batch = client.post("/v1/jobs/batch", json={"jobs": [{"type": "t", "payload": {}}]}, headers=b_headers)
    workflow = client.post(
        "/v1/workflows", json={"jobs": [{"ref": "x", "type": "t", "payload": {}}]}, headers=b_headers
    )
    assert {
        store.get_job(created.get_json()["id"], tenant=B).tenant,
        store.get_job(batch.get_json()["jobs"][0]["id"], tenant=B).tenant,
    } == {B}
    assert store.get_workflow(workflow.get_json()["id"], tenant=B).workflow.id == workflow.get_json()["id"]
    foreign = client.post(
        "/v1/jobs", json={"type": "t", "payload": {}, "depends_on": [tenant_a.pending]}, headers=b_headers
    )
    ghost = str(uuid.uuid4())
    missing = client.post("/v1/jobs", json={"type": "t", "payload": {}, "depends_on": [ghost]}, headers=b_headers)
    error = assert_error(foreign, 400, "invalid_argument")
    assert error["message"].replace(tenant_a.pending, ghost) == missing.get_json()["error"]["message"]
    assert not store.get_job(tenant_a.pending, tenant=A).has_dependants


def test_a_unique_job_of_one_tenant_never_blocks_anothers(client, store, b_headers):
    body = {"type": "report", "payload": {}, "unique": {"key": "nightly"}}
    first = client.post("/v1/jobs", json=body, headers=managed_key(store, A, Role.PRODUCER))
    again = client.post("/v1/jobs", json=body, headers=managed_key(store, A, Role.PRODUCER))
    other = client.post("/v1/jobs", json=body, headers=b_headers)
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.get_json()["id"] == first.get_json()["id"] != other.get_json()["id"]


def test_an_idempotency_key_never_replays_another_tenants_job(client, store):
    """The same JWT subject with tokens of two tenants: two sets of keys."""
    body, key = {"type": "t", "payload": {}}, {"Idempotency-Key": "order-1"}
    first = client.post("/v1/jobs", json=body, headers={**key, "Authorization": _token("same", A)})
    other = client.post("/v1/jobs", json=body, headers={**key, "Authorization": _token("same", B)})
    replay = client.post("/v1/jobs", json=body, headers={**key, "Authorization": _token("same", A)})
    assert (first.status_code, other.status_code, replay.status_code) == (201, 201, 200)
    assert replay.get_json()["id"] == first.get_json()["id"] != other.get_json()["id"]
    assert store.get_job(other.get_json()["id"], tenant=B).status is JobStatus.PENDING


def _token(subject: str, tenant: str) -> str:
    return f"Bearer {hs256(sub=subject, role='producer', tenant=tenant)}"


def test_a_fleet_key_reads_and_changes_nothing_over_rest(client, store, tenant_a):
    """A key of every tenant ("*") is a worker's; one made with a reading role by mistake
    still sees no tenant's jobs."""
    key_spec = KeySpec.model_construct(name="fleet", role=Role.ADMIN, tenant=ALL_TENANTS, expires_in_seconds=None)
    headers = {"X-API-Key": store.create_api_key(key_spec, created_by="test").secret}
    for path in ("/v1/jobs", "/v1/queues", f"/v1/jobs/{tenant_a.pending}", "/v1/workers", "/v1/stats/throughput"):
        assert_error(client.get(path, headers=headers), 403, "permission_denied")
    assert_error(client.post(f"/v1/jobs/{tenant_a.pending}/cancel", headers=headers), 403, "permission_denied")
