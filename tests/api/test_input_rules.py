"""What the REST API refuses, and how: a 400 naming the field for input no backend could
store (unpaired surrogates, NUL), repeated JSON keys; 401 before 404/405 without a key;
an exact Allow header; and the dashboard's security headers."""

from __future__ import annotations

import base64

import pytest

from tests.api.conftest import AUTH, assert_error, job_count, post_job
from tests.conftest import TEST_API_KEY


def post_raw(client, path: str, text: str):
    return client.post(path, data=text.encode(), headers={**AUTH, "Content-Type": "application/json"})


# A JSON text may spell a lone surrogate as \ud800: json.loads gives a str no database can encode.
SURROGATE_BODIES = [
    ('{"type": "x", "payload": {"a": "\\ud800"}}', "payload.a"),
    ('{"type": "x", "payload": {"\\udfff": 1}}', "payload.\\udfff"),
    ('{"type": "x", "payload": {"a": [1, {"b": "ok \\ud83d"}]}}', "payload.a[1].b"),
]


@pytest.mark.parametrize(("body", "where"), SURROGATE_BODIES)
def test_an_unpaired_surrogate_in_a_payload_is_a_400_naming_where(client, store, body, where):
    error = assert_error(post_raw(client, "/v1/jobs", body), 400, "invalid_argument")

    [detail] = error["details"]
    assert detail["field"] == "payload"
    assert detail["message"].startswith(where + ":") and "surrogate" in detail["message"]
    assert job_count(store) == 0


def test_an_unpaired_surrogate_in_one_job_of_a_batch_is_a_400_and_creates_nothing(client, store):
    body = '{"jobs": [{"type": "x", "payload": {}}, {"type": "x", "payload": {"a": "\\ud800"}}]}'

    error = assert_error(post_raw(client, "/v1/jobs/batch", body), 400, "invalid_argument")

    assert [detail["field"] for detail in error["details"]] == ["jobs[1].payload"]
    assert job_count(store) == 0


def test_a_paired_surrogate_is_an_ordinary_character(client, store):
    response = post_raw(client, "/v1/jobs", '{"type": "x", "payload": {"smile": "\\ud83d\\ude00"}}')

    assert response.status_code == 201
    assert store.get_job(response.get_json()["id"]).payload == {"smile": "\U0001f600"}


def test_an_unpaired_surrogate_in_a_name_is_a_400(client, store):
    response = post_raw(client, "/v1/jobs", '{"type": "x\\ud800", "payload": {}, "queue": "q\\udc00"}')

    error = assert_error(response, 400, "invalid_argument")
    assert {detail["field"] for detail in error["details"]} == {"type", "queue"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"type": "a", "type": "b", "payload": {}}', "type"),
        ('{"type": "a", "payload": {"k": 1, "k": 2}}', "k"),
        ('{"jobs": [{"type": "a", "payload": {}}], "jobs": []}', "jobs"),
    ],
)
def test_a_repeated_json_key_is_a_400_naming_it(client, store, body, field):
    path = "/v1/jobs/batch" if body.startswith('{"jobs"') else "/v1/jobs"

    error = assert_error(post_raw(client, path, body), 400, "invalid_argument")

    assert error["details"] == [{"field": field, "message": "given more than once in the same object"}]
    assert job_count(store) == 0


def test_an_integer_field_takes_a_json_number_without_a_fraction(client, store):
    body = '{"type": "x", "payload": {}, "priority": 396.0, "max_retries": 2.0, "delay_seconds": 0.0}'

    response = post_raw(client, "/v1/jobs", body)

    assert response.status_code == 201, response.get_data(as_text=True)
    job = store.get_job(response.get_json()["id"])
    assert (job.priority, job.max_retries) == (396, 2)


def test_a_queue_name_with_a_trailing_newline_is_a_400(client):
    error = assert_error(post_job(client, {"type": "x", "payload": {}, "queue": "x\n"}), 400, "invalid_argument")

    assert [detail["field"] for detail in error["details"]] == ["queue"]


# -- routing: 401 first, and an exact Allow -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/v2/nothing"), ("get", "/v1/nothing"), ("delete", "/v1/jobs"), ("put", "/v1/jobs/batch"), ("get", "/x")],
)
def test_without_a_key_an_unknown_route_or_method_is_a_401(sqlite_client, method, path):
    assert_error(getattr(sqlite_client, method)(path), 401, "unauthenticated")


def test_with_a_key_an_unknown_route_is_a_404_and_a_wrong_method_a_405(sqlite_client):
    assert_error(sqlite_client.get("/v1/nothing", headers=AUTH), 404, "not_found")
    assert_error(sqlite_client.put("/v1/jobs", headers=AUTH), 405, "method_not_allowed")


def test_a_public_route_answers_a_wrong_method_with_a_405_without_a_key(sqlite_client):
    assert_error(sqlite_client.post("/healthz"), 405, "method_not_allowed")


def test_the_batch_route_allows_only_post(sqlite_client):
    response = sqlite_client.get("/v1/jobs/batch", headers=AUTH)

    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


# -- the dashboard ---------------------------------------------------------------------------------


@pytest.mark.parametrize("password", [TEST_API_KEY, "wrong"])
def test_the_dashboard_forbids_framing_sniffing_and_scripts(client, password):
    auth = {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}

    response = client.get("/", headers=auth)

    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy  # only our own files run
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
