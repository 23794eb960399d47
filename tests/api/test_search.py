"""GET /v1/jobs for the dashboard: scheduled apart from ready, created time ranges, a job
id, and a substring of the payload (with % and _ taken literally); on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.api.conftest import AUTH, assert_error
from tests.api.test_listing import list_all
from tests.factories import make_job


def ids(client, **params) -> set[str]:
    return {job["id"] for page in list_all(client, **params) for job in page}


def test_scheduled_jobs_are_told_apart_from_ready_ones(client, store):
    # Given a ready job and one delayed by an hour
    ready = make_job(store, queue="q")
    later = make_job(store, queue="q", delay_seconds=3600)
    # When pending jobs are listed, and each view of them
    listed = {job["id"]: job for page in list_all(client, queue="q", status="pending") for job in page}
    # Then both are pending, the delayed one flagged scheduled, and each view has its own
    assert {job_id: job["scheduled"] for job_id, job in listed.items()} == {ready.id: False, later.id: True}
    assert ids(client, queue="q", status="scheduled") == {later.id}
    assert ids(client, queue="q", status="ready") == {ready.id}


def test_a_created_range_includes_its_start_and_excludes_its_end(client, store):
    jobs = [make_job(store, queue="range") for _ in range(3)]
    start, end = jobs[1].created_at, jobs[2].created_at
    stamp = lambda moment: moment.isoformat().replace("+00:00", "Z")
    assert ids(client, queue="range", created_from=stamp(start), created_to=stamp(end)) == {jobs[1].id}
    assert ids(client, created_from=stamp(end + timedelta(seconds=1))) == set()


def test_a_job_is_found_by_its_id(client, store):
    wanted, _ = make_job(store), make_job(store)
    assert ids(client, id=wanted.id) == {wanted.id}
    assert ids(client, id=wanted.id, queue="elsewhere") == set()


def test_payload_search_is_a_case_insensitive_substring(client, store):
    # Given payloads that differ by a value, by case, and by the LIKE wildcards
    alice = make_job(store, payload={"email": "Alice@Example.com"})
    make_job(store, payload={"email": "bob@example.com"})
    percent = make_job(store, payload={"note": "100% done"})
    underscore = make_job(store, payload={"key": "a_b"})
    make_job(store, payload={"key": "axb"})
    # Then a search finds the value whatever its case, and % and _ match only themselves
    assert ids(client, payload_contains="alice@example") == {alice.id}
    assert ids(client, payload_contains="0% d") == {percent.id}
    assert ids(client, payload_contains="a_b") == {underscore.id}
    assert ids(client, payload_contains="%") == {percent.id}


def test_payload_search_finds_quotes_and_non_ascii_text(client, store):
    cafe = make_job(store, payload={"name": 'Café "Zoë"'})
    make_job(store, payload={"name": "Cafe Zoe"})
    assert ids(client, payload_contains="Café") == {cafe.id}
    assert ids(client, payload_contains='"Zoë"') == {cafe.id}


def test_search_combines_with_the_other_filters_and_pages(client, store):
    wanted = [make_job(store, queue="mail", payload={"to": f"user{n}@corp.example"}) for n in range(5)]
    make_job(store, queue="other", payload={"to": "user9@corp.example"})
    pages = list_all(client, queue="mail", payload_contains="corp.example", limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert {job["id"] for page in pages for job in page} == {job.id for job in wanted}


@pytest.mark.parametrize(
    "query",
    [
        {"status": "later"},
        {"created_from": "2026-12-01T10:00:00"},  # no offset: ambiguous
        {"created_from": "yesterday"},
        {"created_to": "0.5"},  # not Unix time
        {"created_to": "0001-01-01T00:00:00+01:00"},  # no UTC time
        {"id": "not-a-uuid"},
        {"payload_contains": ""},
        {"payload_contains": "x" * 201},
        {"payload_contains": "nul\x00"},
    ],
)
def test_bad_filters_are_a_400(client, query):
    assert_error(client.get("/v1/jobs", query_string=query, headers=AUTH), 400, "invalid_argument")
