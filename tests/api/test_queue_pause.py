"""POST /v1/queues/{queue}/pause and /resume, and what GET /v1/queues says of each queue."""

from __future__ import annotations

from tests.api.conftest import AUTH, assert_error, post_job


def test_pausing_a_queue_stops_its_leases_and_shows_in_the_queue_list(client, store):
    # Given a queue with a job
    post_job(client, {"type": "t", "payload": {}, "queue": "mail"})
    # When it is paused
    response = client.post("/v1/queues/mail/pause", headers=AUTH)
    # Then it says so, no lease takes its job, and GET /v1/queues shows it paused
    assert response.status_code == 200
    body = response.get_json()
    assert (body["queue"], body["is_paused"]) == ("mail", True) and body["paused_at"].endswith("Z")
    assert store.lease_jobs(["mail"], "worker-a", 1, 30) == []
    [summary] = client.get("/v1/queues", headers=AUTH).get_json()["summary"]
    assert summary["queue"] == "mail" and summary["is_paused"] is True
    assert summary["counts"] == {"pending": 1}


def test_resuming_a_queue_wakes_its_waiting_workers(client, store, notifier):
    client.post("/v1/queues/mail/pause", headers=AUTH)
    post_job(client, {"type": "t", "payload": {}, "queue": "mail"})
    notifier.published.clear()

    response = client.post("/v1/queues/mail/resume", headers=AUTH)

    assert response.get_json() == {
        "queue": "mail",
        "is_paused": False,
        "paused_at": None,
    }
    assert notifier.published == ["mail"]
    assert len(store.lease_jobs(["mail"], "worker-a", 1, 30)) == 1


def test_a_queue_without_jobs_can_be_paused_and_is_listed(client):
    assert client.post("/v1/queues/later/pause", headers=AUTH).status_code == 200
    assert client.post("/v1/queues/later/pause", headers=AUTH).status_code == 200  # idempotent
    body = client.get("/v1/queues", headers=AUTH).get_json()
    assert body["queues"] == []
    assert [(s["queue"], s["is_paused"], s["counts"]) for s in body["summary"]] == [("later", True, {})]


def test_an_invalid_queue_name_is_a_400(client):
    assert_error(
        client.post("/v1/queues/bad%20name/pause", headers=AUTH),
        400,
        "invalid_argument",
    )


def test_pause_needs_the_api_key(client):
    assert_error(client.post("/v1/queues/mail/pause"), 401, "unauthenticated")
