"""Schemathesis hooks for the conformance run (loaded through SCHEMATHESIS_HOOKS).

A list cursor is an opaque token: any string is well formed, but only one the server signed
is valid, which no JSON Schema can say. So a generated cursor is sent only if it verifies
with the test server's keys (in practice: the next_cursor the stateful phase carries over);
made-up ones are dropped here, and tests/api/test_listing.py proves they are a 400. Waits
(GET /v1/jobs/{id}?wait=) over a second are dropped too: each could hold its answer a minute."""

from __future__ import annotations

import schemathesis

from quorra.api.cursor import CursorCodec
from quorra.config import Settings
from quorra.durations import parse_duration
from quorra.errors import InvalidArgument
from quorra.schedules import check_cron
from quorra.webhooks import check_http_url
from tests.conftest import TEST_API_KEY

_CODEC = CursorCodec(Settings(api_keys=(TEST_API_KEY,)).cursor_keys)


def _is_ours(cursor: object) -> bool:
    try:
        _CODEC.decode(str(cursor))
    except InvalidArgument:
        return False
    return True


@schemathesis.hook
def filter_case(context, case):
    # filter_case, not filter_query: it applies to the coverage phase too
    query = case.query or {}
    return ("cursor" not in query or _is_ours(query["cursor"])) and not _waits_long(query.get("wait"))


def _waits_long(wait: object) -> bool:
    """A long poll on a job that does not finish answers when its wait ends: keep the run
    short (tests/client/ covers long waits)."""
    try:
        return float(parse_duration(str(wait))) > 1 if wait is not None else False
    except ValueError:
        return False


# A cron expression that matches the documented pattern may still name no real time (31 2:
# February 31, or a reversed range 5-3), which no JSON Schema pattern can say. A positive
# case gets a valid expression instead; tests/schedules/test_timing.py proves those are a 400.
@schemathesis.hook
def map_case(context, case):
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("cron"), str) and _is_positive(case) and not _valid_cron(body):
        case.body = {**body, "cron": "*/5 * * * *"}
    if isinstance(body, dict) and _is_positive(case):
        case.body = _known_parents(case.path, case.body)
    return _with_valid_webhook_url(case)


# A job may depend only on jobs that exist, and a workflow's refs must be unique, name jobs
# of the workflow and form no cycle, which no JSON Schema can say. A positive case depends
# on nothing and names its jobs j0, j1, ...; tests/api/test_workflows.py proves the rest is a 400.
def _known_parents(path: str, body: dict) -> dict:
    if path == "/v1/jobs":
        return _without_parents(body)
    jobs = body.get("jobs")
    if not isinstance(jobs, list):
        return body
    if path == "/v1/workflows":
        jobs = [{**job, "ref": f"j{n}"} if isinstance(job, dict) else job for n, job in enumerate(jobs)]
    return {**body, "jobs": [_without_parents(job) for job in jobs]}


def _without_parents(job: object) -> object:
    return {**job, "depends_on": []} if isinstance(job, dict) and "depends_on" in job else job


def _is_positive(case) -> bool:
    meta = getattr(case, "meta", None)
    return meta is None or not meta.generation.mode.is_negative


def _valid_cron(body: dict) -> bool:
    try:
        check_cron(body["cron"])
    except ValueError:
        return False
    return True


# A URL that matches the documented pattern may still be no URL (a bad port, a space after
# the host), which no JSON Schema pattern can say. A positive case gets a valid one instead;
# tests/api/test_webhooks.py proves those are a 400.
def _with_valid_webhook_url(case):
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("url"), str) and _is_positive(case) and not _valid_url(body):
        case.body = {**body, "url": "https://example.com/hooks"}
    return case


def _valid_url(body: dict) -> bool:
    try:
        check_http_url(body["url"])
    except ValueError:
        return False
    return True
