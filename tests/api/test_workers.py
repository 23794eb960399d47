"""GET /v1/workers, and has_workers in GET /v1/queues."""

from __future__ import annotations

from quorra.store import WorkerSighting
from tests.api.conftest import AUTH, assert_error, post_job
from tests.factories import leased_job
from tests.store.support import later


def test_workers_lists_the_recent_ones_with_their_jobs_in_flight(client, store):
    # Given a worker seen now that holds a job, and one seen an hour ago
    store.record_workers([WorkerSighting("w1", host="box", pid=7, queues=("mail",), handlers=("send",))])
    store.record_workers([WorkerSighting("old", queues=("mail",))], now=later(store, -3600))
    leased_job(store, worker_id="w1", queue="mail")
    # When the workers of the last 5 minutes (the default) are listed
    body = client.get("/v1/workers", headers=AUTH).get_json()
    # Then the recent one comes, with what it told and its job
    [worker] = body["workers"]
    assert {k: worker[k] for k in ("id", "host", "pid", "queues", "handlers", "jobs_in_flight")} == {
        "id": "w1",
        "host": "box",
        "pid": 7,
        "queues": ["mail"],
        "handlers": ["send"],
        "jobs_in_flight": 1,
    }
    assert worker["last_seen_at"].endswith("Z") and body["seen_since"].endswith("Z")
    # and a longer window takes the old one too
    longer = client.get("/v1/workers?minutes=120", headers=AUTH).get_json()
    assert [w["id"] for w in longer["workers"]] == ["w1", "old"]


def test_a_bad_window_is_a_400(client):
    for minutes in ("0", "1441", "soon"):
        assert_error(client.get(f"/v1/workers?minutes={minutes}", headers=AUTH), 400, "invalid_argument")


def test_queues_say_whether_a_worker_leases_from_them(client, store):
    # Given jobs in two queues, only one of which a worker leases from
    post_job(client, {"type": "t", "payload": {}, "queue": "served"})
    post_job(client, {"type": "t", "payload": {}, "queue": "orphan"})
    store.record_workers([WorkerSighting("w1", queues=("served",))])
    # When the queues are listed
    summary = client.get("/v1/queues", headers=AUTH).get_json()["summary"]
    # Then the orphan queue is flagged
    assert {s["queue"]: s["has_workers"] for s in summary} == {"orphan": False, "served": True}
