"""Idempotent submission and unique jobs over REST, on both backends: the Idempotency-Key
header's contract (201 first, 200 + Idempotent-Replayed on a retry, 409 for another job
under the same key, 400 for a malformed key), its scope per API key, the batch's keys, and
how a unique job's holder is answered."""

from __future__ import annotations

import pytest

from quorra.api import create_app
from quorra.config import Settings
from tests.api.conftest import AUTH, assert_error, job_count
from tests.conftest import TEST_API_KEY

JOB = {"type": "email_send", "payload": {"to": "a@example.com"}}
SECOND_API_KEY = "second-api-key"


def post(client, body, key: str | None = None, api_key: str = TEST_API_KEY, path: str = "/v1/jobs"):
    headers = {"X-API-Key": api_key} | ({"Idempotency-Key": key} if key is not None else {})
    return client.post(path, json=body, headers=headers)


def test_a_retry_with_the_same_key_answers_200_with_the_first_job(client, store):
    # Given a job created under an Idempotency-Key
    first = post(client, JOB, key="7d1b9a2e-retry")
    # When the same request is retried
    again = post(client, JOB, key="7d1b9a2e-retry")
    # Then the first is a 201, the retry a 200 replay with the same job, and one job exists
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert (first.get_json()["outcome"], again.get_json()["outcome"]) == ("created", "replayed")
    assert again.headers["Location"] == first.headers["Location"]
    assert job_count(store) == 1


def test_the_same_key_with_another_job_is_a_409_naming_the_key(client, store):
    post(client, JOB, key="order-17")
    response = post(client, JOB | {"priority": 5}, key="order-17")
    error = assert_error(response, 409, "conflict")
    assert "order-17" in error["message"]
    assert error["details"]["idempotency_key"] == "order-17"
    assert job_count(store) == 1


def test_keys_are_scoped_per_api_key(database_url, store, notifier):
    # Given two API keys
    settings = Settings(database_url=database_url, api_keys=(TEST_API_KEY, SECOND_API_KEY))
    client = create_app(settings, store=store, notifier=notifier).test_client()
    # When each sends the same job under the same Idempotency-Key
    first = post(client, JOB, key="k", api_key=TEST_API_KEY)
    second = post(client, JOB, key="k", api_key=SECOND_API_KEY)
    # Then each created a job of its own
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.get_json()["id"] != second.get_json()["id"]


@pytest.mark.parametrize("key", ["", "has space", "é", "x" * 256, "tab\there"])
def test_a_malformed_key_is_a_400(client, store, key):
    response = client.post("/v1/jobs", json=JOB, headers={**AUTH, "Idempotency-Key": key})
    error = assert_error(response, 400, "invalid_argument")
    assert error["details"][0]["field"] == "Idempotency-Key"
    assert job_count(store) == 0


def test_the_longest_key_is_accepted(client):
    assert post(client, JOB, key="k" * 255).status_code == 201


def test_a_single_job_takes_its_key_from_the_header_only(client, store):
    response = post(client, JOB | {"idempotency_key": "in-body"})
    error = assert_error(response, 400, "invalid_argument")
    assert error["details"][0]["field"] == "idempotency_key"
    assert job_count(store) == 0


# -- batches -----------------------------------------------------------------------------------


def test_a_batch_job_with_its_own_key_is_replayed_on_retry(client, store):
    # Given a batch of a job with a key of its own and a plain one
    body = {"jobs": [JOB | {"idempotency_key": "a"}, JOB]}
    first = post(client, body, path="/v1/jobs/batch")
    # When the batch is retried
    again = post(client, body, path="/v1/jobs/batch")
    # Then the keyed job is replayed, the plain one created again
    assert (first.status_code, again.status_code) == (201, 201)
    outcomes = [job["outcome"] for job in again.get_json()["jobs"]]
    assert outcomes == ["replayed", "created"]
    assert again.get_json()["jobs"][0]["id"] == first.get_json()["jobs"][0]["id"]
    assert "Idempotent-Replayed" not in again.headers


def test_a_batch_retried_under_one_header_key_is_replayed_whole(client, store):
    # Given a batch sent with an Idempotency-Key header
    body = {"jobs": [JOB, JOB | {"priority": 1}, JOB | {"idempotency_key": "own"}]}
    first = post(client, body, key="batch-9", path="/v1/jobs/batch")
    # When it is retried with the same header
    again = post(client, body, key="batch-9", path="/v1/jobs/batch")
    # Then every job is the same one as before: a 200 replay, and no new job
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [j["id"] for j in again.get_json()["jobs"]] == [j["id"] for j in first.get_json()["jobs"]]
    assert job_count(store) == 3


def test_a_batch_retried_with_a_changed_job_is_a_409_naming_its_key(client, store):
    post(client, {"jobs": [JOB, JOB]}, key="batch-9", path="/v1/jobs/batch")
    response = post(client, {"jobs": [JOB, JOB | {"priority": 2}]}, key="batch-9", path="/v1/jobs/batch")
    error = assert_error(response, 409, "conflict")
    assert error["details"]["idempotency_key"] == "batch-9:1"
    assert job_count(store) == 2


def test_a_batch_header_key_leaves_room_for_the_index(client):
    response = post(client, {"jobs": [JOB]}, key="k" * 251, path="/v1/jobs/batch")
    assert_error(response, 400, "invalid_argument")
    assert post(client, {"jobs": [JOB]}, key="k" * 250, path="/v1/jobs/batch").status_code == 201


# -- unique jobs ---------------------------------------------------------------------------------


def test_a_unique_job_answers_200_with_the_holder(client, store):
    # Given a unique job
    first = post(client, JOB | {"unique": {"key": "welcome:a@example.com"}})
    # When it is submitted again
    again = post(client, JOB | {"unique": {"key": "welcome:a@example.com"}})
    # Then the answer is the holder, as a 200 duplicate (no replay header)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() | {"outcome": "created"} == first.get_json()
    assert again.get_json()["outcome"] == "duplicate"
    assert "Idempotent-Replayed" not in again.headers
    assert job_count(store) == 1


@pytest.mark.parametrize(
    ("unique", "field"),
    [
        ({"states": ["pending"]}, "unique.states"),
        ({"states": ["pending", "leased", "processing", "failed", "failed"]}, "unique.states"),
        ({"states": ["pending", "leased", "processing", "failed", "finished"]}, "unique.states.4"),
        ({"period_seconds": 0}, "unique.period_seconds"),
        ({"key": ""}, "unique.key"),
        ({"key": "a\u0000b"}, "unique.key"),
        ({"keys": "x"}, "unique.keys"),
    ],
)
def test_invalid_unique_options_are_a_400_naming_the_field(client, store, unique, field):
    error = assert_error(post(client, JOB | {"unique": unique}), 400, "invalid_argument")
    assert field in [detail["field"] for detail in error["details"]]
    assert job_count(store) == 0
