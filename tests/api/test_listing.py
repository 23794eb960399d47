"""GET /v1/jobs: filters and keyset pagination, on both backends."""

from __future__ import annotations

import base64
import json

import pytest

from quorra.api import create_app
from tests.api.conftest import AUTH, assert_error
from tests.factories import make_job


def list_all(client, **params) -> list[list[dict]]:
    """Follow next_cursor to the end; return the pages."""
    pages, cursor = [], None
    for _ in range(20):  # bounded: a cursor loop would otherwise hang the suite
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/jobs", query_string=query, headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        pages.append(body["jobs"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("pagination did not end")


@pytest.fixture
def jobs_in_two_queues(store):
    reports = [make_job(store, queue="reports", type="render" if n % 2 else "export") for n in range(7)]
    others = [make_job(store, queue="other") for _ in range(3)]
    for job in reports[:2]:
        store.cancel(job.id)
    return reports, others


def test_pages_through_a_filtered_queue_newest_first(client, jobs_in_two_queues):
    reports, _ = jobs_in_two_queues

    pages = list_all(client, queue="reports", limit=3)

    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [job for page in pages for job in page]
    assert {job["id"] for job in listed} == {job.id for job in reports}
    keys = [(job["created_at"], job["id"]) for job in listed]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)


def test_filters_by_status_and_type_together(client, jobs_in_two_queues):
    reports, _ = jobs_in_two_queues
    cancelled_exports = {job.id for job in reports[:2] if job.type == "export"}

    pages = list_all(client, queue="reports", status="cancelled", type="export", limit=1)

    assert {job["id"] for page in pages for job in page} == cancelled_exports
    assert all(job["status"] == "cancelled" for page in pages for job in page)


def test_without_filters_lists_every_job_on_one_page(client, jobs_in_two_queues):
    reports, others = jobs_in_two_queues

    [page] = list_all(client)

    assert len(page) == len(reports) + len(others)


BAD_QUERIES = [
    "limit=0",
    "limit=501",
    "limit=ten",
    "limit=",
    "status=asleep",
    "queue=bad%20name",
    "queue=",
    "type=a%00b",
    "cursor=not-a-cursor",
    "cursor=%00",
    "state=dead",
    "queue=a&queue=b",
]


def test_bad_query_parameters_are_a_400_naming_the_parameter(client):
    for query in BAD_QUERIES:
        error = assert_error(client.get(f"/v1/jobs?{query}", headers=AUTH), 400, "invalid_argument")

        named = [detail["field"] for detail in error["details"] or []]
        assert query.split("=")[0] in named or query.startswith("cursor"), (query, error)


# -- cursors: only the ones this deployment handed out ------------------------------------------

A_UUID = "6f1c2a9e-3b8d-4c1e-9a7f-2d5e8b0c4a13"


def unsigned(value) -> str:
    """A cursor as the server once made them: base64url of JSON, no signature."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


FORGED = [
    unsigned(["0001-01-01T00:00:00+01:00", A_UUID]),  # once an OverflowError: a 500
    unsigned("9999-12-31T23:59:59-01:00"),
    unsigned(["9999-12-31T23:59:59-01:00", A_UUID]),
    unsigned(["2030-01-01T00:00:00+00:00", A_UUID]),  # well formed, made up: once a 200
    unsigned(["2030-01-01T00:00:00+00:00", A_UUID]) + ".AAAAAAAAAAAAAAAAAAAAAA",
    "garbage!",
    "x.y.z",
    "é.é",
]


@pytest.mark.parametrize("cursor", FORGED)
def test_a_cursor_this_server_did_not_hand_out_is_a_400(client, cursor):
    response = client.get("/v1/jobs", query_string={"cursor": cursor}, headers=AUTH)

    error = assert_error(response, 400, "invalid_argument")
    assert error["details"][0]["field"] == "cursor"


def first_cursor(client, store) -> str:
    for _ in range(3):
        make_job(store)
    body = client.get("/v1/jobs?limit=1", headers=AUTH).get_json()
    assert body["next_cursor"]
    return body["next_cursor"]


def test_a_tampered_cursor_is_a_400(client, store):
    cursor = first_cursor(client, store)
    body, mac = cursor.split(".")
    position = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    position[0] = "2999-01-01T00:00:00+00:00"

    response = client.get("/v1/jobs", query_string={"cursor": f"{unsigned(position)}.{mac}"}, headers=AUTH)

    assert_error(response, 400, "invalid_argument")


def other_app(settings, store, notifier, **changes):
    return create_app(settings.model_copy(update=changes), store=store, notifier=notifier).test_client()


def test_every_web_process_with_the_same_api_keys_accepts_the_cursors_of_the_others(client, settings, store, notifier):
    cursor = first_cursor(client, store)

    response = other_app(settings, store, notifier).get("/v1/jobs", query_string={"cursor": cursor}, headers=AUTH)

    assert response.status_code == 200 and len(response.get_json()["jobs"]) == 2


def test_a_cursor_signed_with_another_deployments_secret_is_a_400(client, settings, store, notifier):
    cursor = first_cursor(client, store)
    elsewhere = other_app(settings, store, notifier, secret_keys=("another-deployment-secret",))

    assert_error(elsewhere.get("/v1/jobs", query_string={"cursor": cursor}, headers=AUTH), 400, "invalid_argument")


def test_a_rotated_secret_still_accepts_cursors_of_the_old_one(settings, store, notifier):
    old = other_app(settings, store, notifier, secret_keys=("the-old-secret-key",))
    rotated = other_app(settings, store, notifier, secret_keys=("the-new-secret-key", "the-old-secret-key"))
    retired = other_app(settings, store, notifier, secret_keys=("the-new-secret-key",))
    cursor = first_cursor(old, store)

    assert rotated.get("/v1/jobs", query_string={"cursor": cursor}, headers=AUTH).status_code == 200
    assert retired.get("/v1/jobs", query_string={"cursor": cursor}, headers=AUTH).status_code == 400


# -- bodies and the page's byte budget ----------------------------------------------------------


def test_the_list_leaves_payload_and_result_out_unless_included(client, store):
    make_job(store, payload={"to": "a@example.com"})

    [plain] = client.get("/v1/jobs", headers=AUTH).get_json()["jobs"]
    [full] = client.get("/v1/jobs?include=payload,result", headers=AUTH).get_json()["jobs"]
    [payload_only] = client.get("/v1/jobs?include=payload", headers=AUTH).get_json()["jobs"]

    assert "payload" not in plain and "result" not in plain and plain["status"] == "pending"
    assert full["payload"] == {"to": "a@example.com"} and full["result"] is None
    assert "payload" in payload_only and "result" not in payload_only
    # (a job read alone also lists the ids of its parents and dependants)
    links = {"depends_on", "dependants"}
    assert set(full) | links == set(client.get(f"/v1/jobs/{full['id']}", headers=AUTH).get_json())


@pytest.mark.parametrize("include", ["", "payload,payload", "lease_id", "payload,"])
def test_include_names_payload_or_result_once_each(client, include):
    error = assert_error(client.get(f"/v1/jobs?include={include}", headers=AUTH), 400, "invalid_argument")

    assert error["details"][0]["field"].startswith("include")


def test_a_page_with_bodies_stops_at_the_byte_budget_and_next_cursor_continues(settings, store, notifier):
    made = {make_job(store, payload={"blob": "x" * 40_000, "n": n}).id for n in range(6)}
    client = other_app(settings, store, notifier, list_max_bytes=100_000)

    pages = list_all(client, include="payload", limit=500)

    assert [len(page) for page in pages] == [2, 2, 2]
    assert {job["id"] for page in pages for job in page} == made
    assert all(len(job["payload"]["blob"]) == 40_000 for page in pages for job in page)
