"""DELETE /v1/jobs (a filter body), DELETE /v1/jobs/{id}, and POST /v1/jobs/retry with the
same filter."""

from __future__ import annotations

import uuid

import pytest

from tests.api.conftest import AUTH, assert_error
from tests.factories import cancelled_job, dead_job, leased_job, succeeded_job


def test_delete_by_filter_answers_the_count(client, store):
    for _ in range(3):
        dead_job(store, queue="dlq")
    succeeded_job(store, queue="dlq")
    response = client.delete("/v1/jobs", json={"queue": "dlq", "status": "dead"}, headers=AUTH)
    assert response.status_code == 200 and response.get_json() == {"deleted": 3}
    assert client.get("/v1/queues", headers=AUTH).get_json()["queues"] == [
        {"queue": "dlq", "status": "succeeded", "count": 1}
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"status": "dead"},  # no queue
        {"queue": "dlq"},  # no status
        {"queue": "dlq", "status": "pending"},  # not finished
        {"queue": "dlq", "status": "dead", "created_from": "yesterday"},
        {"queue": "dlq", "status": "dead", "created_to": 0},
        {"queue": "dlq", "status": "dead", "owner": "me"},
    ],
)
def test_a_bad_delete_filter_is_a_400(client, body):
    assert_error(client.delete("/v1/jobs", json=body, headers=AUTH), 400, "invalid_argument")


def test_retry_takes_the_same_filter(client, store):
    cancelled = cancelled_job(store, queue="r")
    dead_job(store, queue="r")
    response = client.post("/v1/jobs/retry", json={"queue": "r", "status": "cancelled"}, headers=AUTH)
    assert response.get_json() == {"retried": 1}
    assert store.get_job(cancelled.id).status.value == "pending"
    assert client.post("/v1/jobs/retry", json={"queue": "r"}, headers=AUTH).get_json() == {"retried": 1}


def test_bulk_filters_take_the_payload_search(client, store):
    ada = dead_job(store, queue="s", payload={"to": "Ada@example.com", "note": "100%"})
    bob = dead_job(store, queue="s", payload={"to": "bob@example.com", "note": "100 percent"})

    retried = client.post("/v1/jobs/retry", json={"queue": "s", "payload_contains": "ada@"}, headers=AUTH)
    deleted = client.delete("/v1/jobs", json={"queue": "s", "status": "dead", "payload_contains": "0%"}, headers=AUTH)

    assert retried.get_json() == {"retried": 1} and store.get_job(ada.id).status.value == "pending"
    assert deleted.get_json() == {"deleted": 0}  # % is literal: only ada's note has "0%", and ada is not dead
    assert store.get_job(bob.id).status.value == "dead"


def test_delete_one_finished_job(client, store):
    job = dead_job(store)
    response = client.delete(f"/v1/jobs/{job.id}", headers=AUTH)
    assert response.status_code == 204
    assert_error(client.get(f"/v1/jobs/{job.id}", headers=AUTH), 404, "not_found")


def test_deleting_a_leased_job_is_a_409_and_an_unknown_one_a_404(client, store):
    job = leased_job(store)
    assert_error(client.delete(f"/v1/jobs/{job.id}", headers=AUTH), 409, "conflict")
    assert_error(client.delete(f"/v1/jobs/{uuid.uuid4()}", headers=AUTH), 404, "not_found")
