"""GET /v1/jobs: filters and keyset pagination, on both backends."""

from __future__ import annotations

import pytest

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
