"""The job domain (quorra.jobs): validation of a submitted job and of a batch, the retry
policy, and the state machine's table. Pure Python, no database."""

from __future__ import annotations

import pytest

from quorra.errors import InvalidJobSpec
from quorra.jobs import (
    LIVE,
    MAX_BATCH_SIZE,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_PAYLOAD_DEPTH,
    STATUS_BITS,
    TERMINAL,
    TRANSITIONS,
    JobSpec,
    JobStatus,
    UniqueOptions,
    backoff_seconds,
    is_valid_idempotency_key,
    parse_batch,
    parse_job_id,
    period_start,
    status_after_failure,
)

S = JobStatus
VALID = {"type": "email_send", "payload": {"to": "user@example.com"}}


def problems(data, **kwargs) -> list[dict[str, str]]:
    """The details of the InvalidJobSpec that parsing `data` raises."""
    with pytest.raises(InvalidJobSpec) as caught:
        JobSpec.parse(data, **kwargs)
    return caught.value.details


def fields(data, **kwargs) -> list[str]:
    return [detail["field"] for detail in problems(data, **kwargs)]


def nested(levels: int) -> object:
    """{"a": {"a": ... 0}} with the 0 `levels` deep, built without recursion."""
    value: object = 0
    for _ in range(levels):
        value = {"a": value}
    return value


# -- JobSpec ---------------------------------------------------------------------------------


def test_job_spec_fills_in_the_defaults():
    job = JobSpec.parse(VALID)
    assert (job.queue, job.priority, job.delay_seconds, job.max_retries) == ("default", 0, 0, 3)


def test_job_spec_keeps_every_given_field():
    data = VALID | {"queue": "mail", "priority": -5, "delay_seconds": 60, "max_retries": 0, "timeout_seconds": 30}
    job = JobSpec.parse(data)
    assert job.model_dump(exclude={"idempotency_key", "unique", "depends_on", "on_parent_failure"}) == data


@pytest.mark.parametrize("data", [None, [], "job", 42])
def test_job_spec_must_be_an_object(data):
    with pytest.raises(InvalidJobSpec, match="JSON object"):
        JobSpec.parse(data)


def test_job_spec_needs_a_type():
    assert fields({"payload": {}}) == ["type"]


@pytest.mark.parametrize("job_type", ["", "   ", "has space", "semi;colon", "x" * 201, 7, None])
def test_job_spec_refuses_a_blank_malformed_or_non_text_type(job_type):
    assert fields(VALID | {"type": job_type}) == ["type"]


def test_job_spec_needs_a_payload():
    assert fields({"type": "t"}) == ["payload"]


@pytest.mark.parametrize("payload", [[], "text", 1, None, True])
def test_job_spec_payload_must_be_an_object(payload):
    assert fields(VALID | {"payload": payload}) == ["payload"]


@pytest.mark.parametrize("field", ["priority", "delay_seconds", "max_retries"])
@pytest.mark.parametrize("value", [True, False])
def test_job_spec_refuses_booleans_for_integers(field, value):
    # Python's True is an int; JSON's true is not a number
    assert fields(VALID | {field: value}) == [field]


@pytest.mark.parametrize("field", ["priority", "delay_seconds", "max_retries"])
@pytest.mark.parametrize("value", ["1", 1.5, -0.5, None, [1], float("inf")])
def test_job_spec_refuses_integers_in_another_type(field, value):
    assert fields(VALID | {field: value}) == [field]


@pytest.mark.parametrize("field", ["priority", "delay_seconds", "max_retries"])
def test_job_spec_takes_a_json_number_without_a_fraction_as_an_integer(field):
    # JSON has one number type and JSON Schema (our OpenAPI document) calls 396.0 an integer
    job = JobSpec.parse(VALID | {field: 10.0})

    assert getattr(job, field) == 10 and type(getattr(job, field)) is int


@pytest.mark.parametrize(
    ("field", "lowest", "highest"),
    [("priority", -1000, 1000), ("delay_seconds", 0, 366 * 86400), ("max_retries", 0, 100)],
)
def test_job_spec_accepts_integers_up_to_each_bound(field, lowest, highest):
    assert getattr(JobSpec.parse(VALID | {field: lowest}), field) == lowest
    assert getattr(JobSpec.parse(VALID | {field: highest}), field) == highest


@pytest.mark.parametrize(
    ("field", "lowest", "highest"),
    [("priority", -1000, 1000), ("delay_seconds", 0, 366 * 86400), ("max_retries", 0, 100)],
)
def test_job_spec_refuses_integers_beyond_each_bound(field, lowest, highest):
    assert fields(VALID | {field: lowest - 1}) == [field]
    assert fields(VALID | {field: highest + 1}) == [field]


@pytest.mark.parametrize("queue", ["", "two words", "x" * 101, 3])
def test_job_spec_refuses_a_malformed_queue_name(queue):
    assert fields(VALID | {"queue": queue}) == ["queue"]


def test_job_spec_refuses_unknown_fields():
    assert problems(VALID | {"retries": 3}) == [{"field": "retries", "message": "unknown field"}]


def test_job_spec_reports_every_problem_at_once():
    assert sorted(fields({"payload": [], "priority": True, "colour": "red"})) == [
        "colour",
        "payload",
        "priority",
        "type",
    ]


@pytest.mark.parametrize("payload", [{"text": "a\x00b"}, {"key\x00": 1}, {"list": ["ok", ["deeper \x00"]]}])
def test_job_spec_refuses_nul_characters_anywhere_in_the_payload(payload):
    # PostgreSQL's jsonb cannot hold \u0000 while SQLite can: refused on both
    [detail] = problems(VALID | {"payload": payload})
    assert detail["field"] == "payload" and "NUL" in detail["message"]


def test_job_spec_accepts_a_payload_nested_to_the_depth_limit():
    assert JobSpec.parse(VALID | {"payload": nested(MAX_PAYLOAD_DEPTH)}).payload == nested(MAX_PAYLOAD_DEPTH)


@pytest.mark.parametrize("levels", [MAX_PAYLOAD_DEPTH + 1, 100_000])
def test_job_spec_refuses_a_payload_nested_deeper_than_the_limit(levels):
    # a bounded check, so even absurd depths are a clean refusal, never a RecursionError
    [detail] = problems(VALID | {"payload": nested(levels)})
    assert "nested deeper" in detail["message"]


def test_job_spec_counts_lists_towards_the_depth():
    deep_lists: object = 0
    for _ in range(MAX_PAYLOAD_DEPTH):
        deep_lists = [deep_lists]
    assert fields(VALID | {"payload": {"a": deep_lists}}) == ["payload"]


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_job_spec_refuses_non_finite_numbers(number):
    [detail] = problems(VALID | {"payload": {"x": [1.5, number]}})
    assert "finite" in detail["message"]


def test_job_spec_refuses_a_payload_above_the_size_limit():
    big = VALID | {"payload": {"blob": "x" * 2048}}
    assert fields(big, max_payload_bytes=1024) == ["payload"]
    assert JobSpec.parse(big, max_payload_bytes=4096).payload == big["payload"]


def test_job_spec_measures_the_payload_in_utf8_bytes():
    # 400 characters of two bytes each: 800 bytes plus the JSON around them
    payload = {"t": "é" * 400}
    assert fields(VALID | {"payload": payload}, max_payload_bytes=805) == ["payload"]
    assert JobSpec.parse(VALID | {"payload": payload}, max_payload_bytes=820).payload == payload


# -- parse_batch -----------------------------------------------------------------------------


def test_parse_batch_returns_every_job_in_order():
    specs = parse_batch({"jobs": [VALID | {"type": f"t{n}"} for n in range(3)]})
    assert [spec.type for spec in specs] == ["t0", "t1", "t2"]


@pytest.mark.parametrize("body", [[VALID], {"jobs": VALID}, {"jobs": [VALID], "extra": 1}, {}, None])
def test_parse_batch_needs_an_object_with_a_list_of_jobs(body):
    with pytest.raises(InvalidJobSpec, match="batch must be"):
        parse_batch(body)


@pytest.mark.parametrize("size", [0, MAX_BATCH_SIZE + 1])
def test_parse_batch_refuses_an_empty_or_oversized_batch(size):
    with pytest.raises(InvalidJobSpec, match=f"1 to {MAX_BATCH_SIZE}"):
        parse_batch({"jobs": [VALID] * size})


def test_parse_batch_accepts_the_largest_batch():
    assert len(parse_batch({"jobs": [VALID] * MAX_BATCH_SIZE})) == MAX_BATCH_SIZE


def test_parse_batch_names_each_bad_job_by_index_and_field():
    # Given a batch with a good job, a job with a bad priority and a job that is no object
    body = {"jobs": [VALID, VALID | {"priority": True}, "nope"]}
    # When it is parsed
    with pytest.raises(InvalidJobSpec) as caught:
        parse_batch(body)
    # Then no job is accepted and each problem names its job
    assert "no job was created" in caught.value.message
    assert [detail["field"] for detail in caught.value.details] == ["jobs[1].priority", "jobs[2]"]


# -- retry policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "seconds"), [(1, 2), (2, 4), (3, 8), (10, 1024), (11, 2048), (12, 3600), (13, 3600)]
)
def test_backoff_doubles_with_each_attempt_up_to_an_hour(attempts, seconds):
    assert backoff_seconds(attempts) == seconds


def test_backoff_of_an_absurd_attempt_count_is_an_hour_computed_at_once():
    assert backoff_seconds(10**12) == 3600


@pytest.mark.parametrize(("attempts", "max_retries"), [(1, 3), (3, 3), (1, 1), (100, 100)])
def test_a_failed_attempt_within_the_retries_is_retried(attempts, max_retries):
    assert status_after_failure(attempts, max_retries) is S.FAILED


@pytest.mark.parametrize(("attempts", "max_retries"), [(4, 3), (1, 0), (101, 100)])
def test_a_failed_attempt_beyond_the_retries_is_dead(attempts, max_retries):
    assert status_after_failure(attempts, max_retries) is S.DEAD


# -- the state machine -----------------------------------------------------------------------


def test_transitions_cover_every_status_and_lead_only_to_statuses():
    assert set(TRANSITIONS) == set(JobStatus)
    assert all(targets <= set(JobStatus) for targets in TRANSITIONS.values())


def test_terminal_statuses_lead_nowhere_but_back_in_line():
    # (a retry; a cancelled dependant goes back to waiting for its parents)
    assert all(TRANSITIONS[status] <= {S.PENDING, S.BLOCKED} for status in TERMINAL)
    assert TRANSITIONS[S.DEAD] == {S.PENDING}
    assert TRANSITIONS[S.SUCCEEDED] == frozenset()


# -- job ids ---------------------------------------------------------------------------------


def test_parse_job_id_gives_the_canonical_spelling():
    assert parse_job_id("550E8400-E29B-41D4-A716-446655440000") == "550e8400-e29b-41d4-a716-446655440000"
    assert parse_job_id("550e8400e29b41d4a716446655440000") == "550e8400-e29b-41d4-a716-446655440000"


@pytest.mark.parametrize("text", ["", "nope", "550e8400-e29b-41d4-a716-44665544000", None, 42])
def test_parse_job_id_of_anything_else_is_none(text):
    assert parse_job_id(text) is None


# -- idempotency keys and unique options --------------------------------------------------------


def test_a_fingerprint_ignores_spelling_and_the_idempotency_key():
    short = JobSpec.parse(VALID | {"payload": {"a": 1, "b": [1, 2]}})
    spelled_out = JobSpec.parse(
        VALID | {"payload": {"b": [1, 2], "a": 1}, "queue": "default", "priority": 0, "idempotency_key": "k"}
    )
    assert short.fingerprint() == spelled_out.fingerprint()
    assert short.fingerprint() != JobSpec.parse(VALID | {"payload": {"a": 2, "b": [1, 2]}}).fingerprint()


def test_the_default_unique_key_is_the_type_queue_and_payload():
    def key(**fields):
        return JobSpec.parse(VALID | {"unique": {}} | fields).unique_key()

    assert key() == key(priority=5, max_retries=0)
    assert len({key(), key(queue="other"), key(type="other"), key(payload={"x": 1})}) == 4
    assert JobSpec.parse(VALID).unique_key() is None


def test_a_given_unique_key_ignores_queue_and_payload_and_a_period_adds_its_start():
    def key(period_start=None, **fields):
        return JobSpec.parse(VALID | fields).unique_key(period_start)

    assert key(unique={"key": "k"}) == key(unique={"key": "k"}, queue="other", payload={"x": 1})
    hourly = {"key": "k", "period_seconds": 3600}
    assert key(7200, unique=hourly) != key(10800, unique=hourly)
    assert period_start(7200 + 3599.9, 3600) == 7200


def test_unique_states_default_to_the_live_states():
    assert set(UniqueOptions().states) == LIVE
    # blocked goes with pending: a job waiting for its parents holds the slot
    expected = sum(STATUS_BITS[s] for s in LIVE) + STATUS_BITS[JobStatus.SUCCEEDED] + STATUS_BITS[JobStatus.BLOCKED]
    assert UniqueOptions(states=[*LIVE, JobStatus.SUCCEEDED]).mask == expected


@pytest.mark.parametrize("key", ["k", "!~", "x" * MAX_IDEMPOTENCY_KEY_CHARS])
def test_valid_idempotency_keys(key):
    assert is_valid_idempotency_key(key)
    assert JobSpec.parse(VALID | {"idempotency_key": key}).idempotency_key == key


@pytest.mark.parametrize("key", ["", " ", "a b", "é", "x\n", "x" * (MAX_IDEMPOTENCY_KEY_CHARS + 1), 5, None])
def test_invalid_idempotency_keys(key):
    assert not is_valid_idempotency_key(key)
    if key is not None:
        with pytest.raises(InvalidJobSpec):
            JobSpec.parse(VALID | {"idempotency_key": key})
