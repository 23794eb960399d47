"""GET /v1/audit: every operator action of the REST API leaves one entry (who, what, target,
where, request id), listed newest first with filters and a cursor; no route alters one."""

from __future__ import annotations

import pytest

from tests.api.conftest import AUTH, assert_error
from tests.factories import dead_job, make_job, succeeded_job

SCHEDULE = {"name": "nightly", "cron": "0 3 * * *", "job": {"type": "report", "payload": {}}}


def entries(client, query: str = "") -> list[dict]:
    response = client.get(f"/v1/audit{query}", headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["entries"]


def test_every_operator_action_of_the_api_is_audited(client, store):
    cancelled, retried = make_job(store), dead_job(store, queue="payments")
    dead_job(store, queue="payments")
    calls = [
        ("post", f"/v1/jobs/{cancelled.id}/cancel", None),
        ("post", f"/v1/jobs/{retried.id}/retry", None),
        ("post", "/v1/jobs/retry", {"queue": "payments"}),
        ("post", "/v1/schedules", SCHEDULE),
        ("patch", "/v1/schedules/nightly", {"cron": "0 4 * * *"}),
        ("post", "/v1/schedules/nightly/pause", None),
        ("post", "/v1/schedules/nightly/resume", None),
        ("delete", "/v1/schedules/nightly", None),
        ("post", "/v1/webhooks", {"url": "https://example.com/hooks", "events": ["job.dead"]}),
    ]
    for number, (method, path, body) in enumerate(calls):
        response = getattr(client, method)(path, json=body, headers={**AUTH, "X-Request-ID": f"r{number}"})
        assert response.status_code < 300, response.get_data(as_text=True)
    webhook_id = response.get_json()["id"]
    gone = succeeded_job(store, queue="old")
    succeeded_job(store, queue="old")
    more = [
        ("delete", f"/v1/webhooks/{webhook_id}", None),
        ("delete", f"/v1/jobs/{gone.id}", None),
        ("delete", "/v1/jobs", {"queue": "old", "status": "succeeded", "payload_contains": "example.com"}),
        ("post", "/v1/queues/payments/pause", None),
        ("post", "/v1/queues/payments/resume", None),
    ]
    for number, (method, path, body) in enumerate(more, start=len(calls)):
        response = getattr(client, method)(path, json=body, headers={**AUTH, "X-Request-ID": f"r{number}"})
        assert response.status_code < 300, response.get_data(as_text=True)

    logged = list(reversed(entries(client)))
    assert [(e["action"], e["target"], e["request_id"]) for e in logged] == [
        ("job.cancel", cancelled.id, "r0"),
        ("job.retry", retried.id, "r1"),
        ("jobs.retry", "payments", "r2"),
        ("schedule.create", "nightly", "r3"),
        ("schedule.update", "nightly", "r4"),
        ("schedule.pause", "nightly", "r5"),
        ("schedule.resume", "nightly", "r6"),
        ("schedule.delete", "nightly", "r7"),
        ("webhook.create", webhook_id, "r8"),
        ("webhook.delete", webhook_id, "r9"),
        ("job.delete", gone.id, "r10"),
        ("jobs.delete", "old", "r11"),
        ("queue.pause", "payments", "r12"),
        ("queue.resume", "payments", "r13"),
    ]
    assert {e["actor"] for e in logged} == {logged[0]["actor"]} and logged[0]["actor"].startswith("env-key:")
    assert {(e["tenant"], e["remote_addr"]) for e in logged} == {("default", "127.0.0.1")}
    assert logged[2]["details"] == {"status": "dead", "count": 1}
    assert logged[4]["details"] == {"fields": ["cron"]}
    assert logged[8]["details"] == {"url": "https://example.com/hooks"}  # never its secret
    assert logged[10]["details"] == {"queue": "old", "type": gone.type}
    assert logged[11]["details"] == {"status": "succeeded", "payload_contains": "example.com", "count": 1}


def test_reads_and_submissions_are_not_audited(client, store):
    job = client.post("/v1/jobs", json={"type": "t", "payload": {}}, headers=AUTH).get_json()
    client.get(f"/v1/jobs/{job['id']}", headers=AUTH)
    client.get("/v1/jobs", headers=AUTH)
    assert entries(client) == []


def test_a_refused_action_is_not_audited(client, store):
    job = make_job(store)
    client.post(f"/v1/jobs/{job.id}/cancel", headers=AUTH)
    assert_error(client.post(f"/v1/jobs/{job.id}/cancel", headers=AUTH), 409, "conflict")
    assert len(entries(client)) == 1


def test_entries_are_filtered_and_paged(client, store):
    for _ in range(3):
        client.post(f"/v1/jobs/{make_job(store).id}/cancel", headers=AUTH)
    client.post("/v1/jobs/retry", json={"queue": "q"}, headers=AUTH)

    assert [e["action"] for e in entries(client, "?action=jobs.retry")] == ["jobs.retry"]
    assert len(entries(client, "?action=job.cancel")) == 3
    first = client.get("/v1/audit?limit=2", headers=AUTH).get_json()
    second = client.get(f"/v1/audit?limit=2&cursor={first['next_cursor']}", headers=AUTH).get_json()
    assert second["next_cursor"] is None
    assert len({e["id"] for e in first["entries"] + second["entries"]}) == 4
    newest = first["entries"][0]["occurred_at"]
    assert entries(client, f"?since={newest}")[0]["occurred_at"] == newest
    assert entries(client, "?until=2000-01-01T00:00:00Z") == []
    assert entries(client, f"?since={newest}&until={newest}") == []  # an empty window, not an error
    actor = first["entries"][0]["actor"]
    assert len(entries(client, f"?actor={actor}")) == 4
    assert entries(client, "?target=q")[0]["action"] == "jobs.retry"


@pytest.mark.parametrize(
    "query",
    [
        "?action=job.explode",
        "?since=yesterday",
        "?since=2026-01-01T00:00:00",  # no timezone
        "?since=0001-01-01T00:00:00%2B01:00",  # before the first UTC moment
        "?until=1700000000",  # Unix time is not ISO 8601
        "?limit=0",
        "?cursor=forged",
        "?actor=",
        "?verbose=1",
    ],
)
def test_a_bad_query_is_a_400(client, query):
    assert_error(client.get(f"/v1/audit{query}", headers=AUTH), 400, "invalid_argument")


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_no_route_alters_or_deletes_audit_entries(client, store, method):
    client.post(f"/v1/jobs/{make_job(store).id}/cancel", headers=AUTH)
    entry_id = entries(client)[0]["id"]

    for path in ("/v1/audit", f"/v1/audit/{entry_id}"):
        response = getattr(client, method)(path, json={"action": "nothing"}, headers=AUTH)
        assert response.status_code in (404, 405)

    assert [e["id"] for e in entries(client)] == [entry_id]
