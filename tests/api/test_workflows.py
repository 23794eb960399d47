"""Dependencies over REST: depends_on on POST /v1/jobs (single and batch), parents and
dependants on GET /v1/jobs/{id}, and POST/GET /v1/workflows, on both backends."""

from __future__ import annotations

import uuid

from quorra.api import create_app
from quorra.config import Settings
from quorra.store import Settlement
from tests.api.conftest import AUTH, assert_error, job_count, post_job
from tests.factories import dead_job, make_job


def _step(ref: str, *depends_on: str, **fields) -> dict:
    return {"ref": ref, "type": "step", "payload": {"ref": ref}, "depends_on": list(depends_on), **fields}


def _post_workflow(client, body):
    return client.post("/v1/workflows", json=body, headers=AUTH)


def test_a_job_with_depends_on_is_created_blocked_and_shows_its_links(client, store, notifier):
    parent = make_job(store, queue="parents")
    response = post_job(client, {"type": "report", "payload": {}, "queue": "reports", "depends_on": [parent.id]})
    assert response.status_code == 201
    assert response.get_json()["status"] == "blocked"
    child_id = response.get_json()["id"]
    assert "reports" not in notifier.published  # nothing to lease yet: no wake-up
    child = client.get(f"/v1/jobs/{child_id}", headers=AUTH).get_json()
    assert (child["depends_on"], child["dependants"], child["pending_parents"], child["on_parent_failure"]) == (
        [parent.id],
        [],
        1,
        "cancel",
    )
    assert client.get(f"/v1/jobs/{parent.id}", headers=AUTH).get_json()["dependants"] == [child_id]


def test_a_batch_may_depend_on_existing_jobs(client, store):
    parent = make_job(store)
    jobs = [
        {"type": "t", "payload": {}, "depends_on": [parent.id], "on_parent_failure": "run"},
        {"type": "t", "payload": {}},
    ]
    response = client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=AUTH)
    assert response.status_code == 201
    assert [job["status"] for job in response.get_json()["jobs"]] == ["blocked", "pending"]


def test_depending_on_an_unknown_job_is_a_400_naming_it(client, store):
    unknown = str(uuid.uuid4())
    response = post_job(client, {"type": "t", "payload": {}, "depends_on": [unknown]})
    error = assert_error(response, 400, "invalid_argument")
    assert unknown in error["message"]
    assert error["details"] == [{"field": "depends_on", "message": f"no job has the id {unknown}"}]
    assert job_count(store) == 0


def test_depends_on_that_is_not_a_job_id_is_a_400(client):
    error = assert_error(
        post_job(client, {"type": "t", "payload": {}, "depends_on": ["x", 3]}), 400, "invalid_argument"
    )
    assert [detail["field"] for detail in error["details"]] == ["depends_on.0", "depends_on.1"]


def test_a_dead_parent_cancels_the_job_at_submit_naming_it(client, store):
    parent = dead_job(store)
    body = post_job(client, {"type": "t", "payload": {}, "depends_on": [parent.id]}).get_json()
    job = client.get(f"/v1/jobs/{body['id']}", headers=AUTH).get_json()
    assert (job["status"], job["last_error"]) == ("cancelled", f"parent {parent.id} is dead")


def test_a_workflow_is_created_with_its_job_ids_by_ref(client, store, notifier):
    existing = make_job(store, queue="existing")
    body = {
        "name": "etl",
        "jobs": [
            _step("load", "transform", queue="etl"),
            _step("transform", "extract", existing.id, queue="etl"),
            _step("extract", queue="etl"),
        ],
    }
    response = _post_workflow(client, body)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert (created["name"], created["status"]) == ("etl", "running")
    assert {ref: job["status"] for ref, job in created["jobs"].items()} == {
        "extract": "pending",
        "transform": "blocked",
        "load": "blocked",
    }
    assert response.headers["Location"] == f"/v1/workflows/{created['id']}"
    assert "etl" in notifier.published
    transform = client.get(f"/v1/jobs/{created['jobs']['transform']['id']}", headers=AUTH).get_json()
    assert sorted(transform["depends_on"]) == sorted([created["jobs"]["extract"]["id"], existing.id])
    assert (transform["workflow_id"], transform["ref"]) == (created["id"], "transform")
    # And GET shows the whole
    whole = client.get(f"/v1/workflows/{created['id']}", headers=AUTH).get_json()
    assert (whole["status"], whole["counts"]) == ("running", {"pending": 1, "blocked": 2})
    assert sorted(job["ref"] for job in whole["jobs"]) == ["extract", "load", "transform"]


def test_a_workflow_reports_its_completion(client, store):
    created = _post_workflow(client, {"jobs": [_step("a", queue="wf"), _step("b", "a", queue="wf")]}).get_json()
    while leased := store.lease_jobs(["wf"], "w", 10, 30):
        store.settle_many([Settlement(job.id, job.lease_id, True, {"done": job.ref}) for job in leased])
    whole = client.get(f"/v1/workflows/{created['id']}", headers=AUTH).get_json()
    assert (whole["status"], whole["counts"]) == ("succeeded", {"succeeded": 2})
    assert whole["finished_at"] is not None


def test_a_cycle_is_a_400_naming_its_refs_and_creates_nothing(client, store):
    response = _post_workflow(client, {"jobs": [_step("a", "b"), _step("b", "a"), _step("c")]})
    error = assert_error(response, 400, "invalid_argument")
    assert "cycle" in error["message"] and "a" in error["message"] and "b" in error["message"]
    assert error["details"][0]["refs"] == ["a", "b"]
    assert job_count(store) == 0


def test_an_unknown_ref_is_a_400_naming_it(client, store):
    error = assert_error(_post_workflow(client, {"jobs": [_step("a", "ghost")]}), 400, "invalid_argument")
    assert "ghost" in error["details"][0]["message"]
    assert job_count(store) == 0


def test_an_unknown_existing_parent_in_a_workflow_creates_nothing(client, store):
    missing = str(uuid.uuid4())
    error = assert_error(_post_workflow(client, {"jobs": [_step("a"), _step("b", missing)]}), 400, "invalid_argument")
    assert missing in error["message"]
    assert job_count(store) == 0


def test_an_unknown_workflow_is_a_404(client):
    assert_error(client.get(f"/v1/workflows/{uuid.uuid4()}", headers=AUTH), 404, "not_found")


def test_workflows_need_an_api_key(client):
    assert client.post("/v1/workflows", json={"jobs": [_step("a")]}).status_code == 401


def test_a_readonly_key_reads_a_workflow_but_cannot_submit_one(database_url, store, notifier):
    settings = Settings(database_url=database_url, api_keys=("admin-key",), readonly_api_keys=("viewer-key",))
    client = create_app(settings, store=store, notifier=notifier).test_client()
    body = {"jobs": [_step("a")]}
    created = client.post("/v1/workflows", json=body, headers={"X-API-Key": "admin-key"}).get_json()
    viewer = {"X-API-Key": "viewer-key"}
    assert client.get(f"/v1/workflows/{created['id']}", headers=viewer).status_code == 200
    assert_error(client.post("/v1/workflows", json=body, headers=viewer), 403, "permission_denied")
