"""GET /v1/jobs/{id}/attempts and GET /v1/jobs/{id}?include=attempts_history."""

from __future__ import annotations

import uuid

from tests.api.conftest import AUTH, assert_error
from tests.factories import leased_job


def test_attempts_lists_each_ended_attempt_then_the_one_in_flight(client, store):
    # Given a job whose first attempt failed and whose second runs now
    job = leased_job(store, worker_id="w1", queue="q")
    store.nack(job.id, job.lease_id, "boom <b>")
    store.lease_jobs(["q"], "w2", 1, 30, now=store.get_job(job.id).run_at)
    # When its attempts are read
    response = client.get(f"/v1/jobs/{job.id}/attempts", headers=AUTH)
    # Then both come, oldest first
    assert response.status_code == 200
    first, running = response.get_json()["attempts"]
    assert (first["attempt"], first["worker_id"], first["outcome"], first["error"]) == (1, "w1", "failed", "boom <b>")
    assert first["finished_at"].endswith("Z") and first["lease_expires_at"] is None
    assert (running["attempt"], running["worker_id"], running["outcome"], running["finished_at"]) == (
        2,
        "w2",
        None,
        None,
    )
    assert running["lease_expires_at"].endswith("Z")


def test_the_single_get_adds_the_history_only_when_asked(client, store):
    job = leased_job(store, worker_id="w1")
    store.ack(job.id, job.lease_id)

    plain = client.get(f"/v1/jobs/{job.id}", headers=AUTH).get_json()
    full = client.get(f"/v1/jobs/{job.id}?include=attempts_history", headers=AUTH).get_json()

    assert "attempts_history" not in plain
    assert [a["outcome"] for a in full["attempts_history"]] == ["succeeded"]
    assert {k: v for k, v in full.items() if k != "attempts_history"} == plain


def test_attempts_of_an_unknown_job_is_a_404(client):
    assert_error(client.get(f"/v1/jobs/{uuid.uuid4()}/attempts", headers=AUTH), 404, "not_found")


def test_an_unknown_include_is_a_400(client, store):
    job = leased_job(store)
    assert_error(client.get(f"/v1/jobs/{job.id}?include=everything", headers=AUTH), 400, "invalid_argument")
