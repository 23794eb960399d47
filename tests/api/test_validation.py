"""Bad input gets a JSON error and changes nothing, on both backends."""

from __future__ import annotations

import io
import json

import pytest

from quorra.config import Settings
from tests.api.conftest import AUTH, assert_error, job_count, post_job
from tests.conftest import TEST_API_KEY

OK = {"type": "email_send", "payload": {"to": "a@example.com"}}
DEEP = {"type": "t", "payload": {"deep": json.loads("[" * 40 + "]" * 40)}}


INVALID_JOBS = [
    ({"payload": {}}, "type"),
    ({"type": "", "payload": {}}, "type"),
    ({"type": "   ", "payload": {}}, "type"),
    ({"type": "email send", "payload": {}}, "type"),
    ({"type": "t"}, "payload"),
    ({"type": "t", "payload": [1, 2]}, "payload"),
    ({"type": "t", "payload": "text"}, "payload"),
    ({"type": "t", "payload": None}, "payload"),
    ({**OK, "priority": "10"}, "priority"),
    ({**OK, "priority": True}, "priority"),
    ({**OK, "priority": 1.5}, "priority"),
    ({**OK, "priority": 1001}, "priority"),
    ({**OK, "priority": -1001}, "priority"),
    ({**OK, "max_retries": -1}, "max_retries"),
    ({**OK, "max_retries": 101}, "max_retries"),
    ({**OK, "delay_seconds": -1}, "delay_seconds"),
    ({**OK, "queue": 5}, "queue"),
    ({**OK, "queue": ""}, "queue"),
    ({**OK, "callback": "https://example.com"}, "callback"),
    ({"type": "t", "payload": {"text": "nul \u0000 inside"}}, "payload"),
    (DEEP, "payload"),
]


def test_an_invalid_job_is_a_400_naming_the_field(client, store):
    for body, field in INVALID_JOBS:
        error = assert_error(post_job(client, body), 400, "invalid_argument")

        assert field in [detail["field"] for detail in error["details"]], body
    assert job_count(store) == 0


def test_an_unknown_field_is_reported_as_such(client, store):
    error = assert_error(post_job(client, {**OK, "colour": "red"}), 400, "invalid_argument")

    assert error["details"] == [{"field": "colour", "message": "unknown field"}]


NOT_JSON_JOBS = [
    b'{"type": "t", "payload": ',
    b"",
    b"not json",
    b'{"type": "t", "payload": {}} trailing',
    b"\xff\xfe\x00garbage",
    b"[1, 2]",
    b'"just a string"',
    b'{"type": "t", "payload": {"n": ' + b"9" * 5000 + b"}}",
]


def test_a_body_that_is_not_a_json_job_is_a_400(client, store):
    for raw in NOT_JSON_JOBS:
        response = client.post("/v1/jobs", data=raw, headers={**AUTH, "Content-Type": "application/json"})

        assert_error(response, 400, "invalid_argument")
    assert job_count(store) == 0


def test_json_nested_deeper_than_the_parser_can_recurse_is_a_400_not_a_500(client, store):
    raw = '{"type": "t", "payload": ' + "[" * 100_000 + "]" * 100_000 + "}"

    response = client.post("/v1/jobs", data=raw, headers={**AUTH, "Content-Type": "application/json"})

    assert_error(response, 400, "invalid_argument")
    assert job_count(store) == 0


def test_a_body_that_is_not_declared_json_is_a_415(client, store):
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "application/xml"):
        headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}

        for path in ("/v1/jobs", "/v1/jobs/batch"):
            assert_error(client.post(path, data=json.dumps(OK), headers=headers), 415, "unsupported_media_type")
    assert job_count(store) == 0


def test_json_with_a_charset_is_accepted(client):
    response = client.post(
        "/v1/jobs", data=json.dumps(OK), headers={**AUTH, "Content-Type": "application/json; charset=utf-8"}
    )

    assert response.status_code == 201


@pytest.fixture
def small_client(database_url, store, notifier):
    from quorra.api import create_app

    settings = Settings(database_url=database_url, api_keys=(TEST_API_KEY,), max_payload_bytes=1024)
    return create_app(settings, store=store, notifier=notifier).test_client()


def body_of_size(size: int) -> bytes:
    prefix, suffix = b'{"type": "t", "payload": {"pad": "', b'"}}'
    return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix


def test_a_body_over_the_limit_is_a_413(small_client, store):
    response = small_client.post(
        "/v1/jobs", data=body_of_size(1025), headers={**AUTH, "Content-Type": "application/json"}
    )

    assert_error(response, 413, "payload_too_large")
    assert job_count(store) == 0


def test_a_body_exactly_at_the_limit_is_accepted(small_client, store):
    response = small_client.post(
        "/v1/jobs", data=body_of_size(1024), headers={**AUTH, "Content-Type": "application/json"}
    )

    assert response.status_code == 201
    assert job_count(store) == 1


def test_a_chunked_body_over_the_limit_is_a_413(small_client, store):
    for size in (1025, 5000):
        response = post_chunked(small_client, body_of_size(size))

        assert_error(response, 413, "payload_too_large")
    assert job_count(store) == 0


def test_a_chunked_body_at_the_limit_is_read_whole(small_client, store):
    response = post_chunked(small_client, body_of_size(1024))

    assert response.status_code == 201
    assert store.get_job(response.get_json()["id"]).payload["pad"].endswith("x")


def post_chunked(client, body: bytes):
    """As gunicorn hands over a chunked request: no Content-Length, a stream the server
    terminates. Only the bytes actually read can enforce the limit."""
    return client.post(
        "/v1/jobs",
        input_stream=io.BytesIO(body),
        headers={**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_batch_body_may_be_ten_times_the_limit_but_no_more(small_client, store):
    job = {"type": "t", "payload": {"pad": "x" * 900}}
    fits = json.dumps({"jobs": [job] * 10})
    too_big = json.dumps({"jobs": [job] * 12})
    headers = {**AUTH, "Content-Type": "application/json"}

    assert_error(small_client.post("/v1/jobs/batch", data=too_big, headers=headers), 413, "payload_too_large")
    assert job_count(store) == 0
    assert small_client.post("/v1/jobs/batch", data=fits, headers=headers).status_code == 201
    assert job_count(store) == 10


def test_a_batch_job_whose_payload_is_over_the_limit_is_refused(small_client, store):
    body = {"jobs": [{"type": "t", "payload": {}}, {"type": "t", "payload": {"pad": "x" * 2000}}]}

    error = assert_error(small_client.post("/v1/jobs/batch", json=body, headers=AUTH), 400, "invalid_argument")

    assert [detail["field"] for detail in error["details"]] == ["jobs[1].payload"]
    assert job_count(store) == 0


MALFORMED_IDS = ["not-a-uuid", "123", "' OR 1=1 --", "%00", "a" * 5000, "00000000-0000-0000-0000-000000000000"]


@pytest.mark.parametrize("action", ["", "/cancel", "/retry"])
def test_an_unknown_or_malformed_job_id_is_a_404(client, store, action):
    method = client.get if action == "" else client.post

    for job_id in MALFORMED_IDS:
        assert_error(method(f"/v1/jobs/{job_id}{action}", headers=AUTH), 404, "not_found")
