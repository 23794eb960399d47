"""The /v1/jobs and /v1/queues routes, happy paths, on both backends."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import url_for

from quorra.jobs import JobStatus
from tests.api.conftest import AUTH, assert_error, job_count, post_job
from tests.factories import dead_job, make_job

# The GoQuorra README's curl bodies, byte for byte: they are promises.
README_EMAIL_SEND = """{
    "type": "email_send",
    "payload": {
      "to": "user@example.com",
      "subject": "Welcome to GoQuorra!",
      "body": "Your job queue is ready."
    },
    "queue": "default",
    "priority": 10,
    "max_retries": 3
  }"""
README_REMINDER = """{
    "type": "reminder",
    "payload": {"message": "Time to review your dashboard!"},
    "delay_seconds": 60,
    "max_retries": 5
  }"""
JOB_FIELDS = {
    "id",
    "timeout_seconds",
    "type",
    "queue",
    "payload",
    "priority",
    "status",
    "scheduled",
    "attempts",
    "max_retries",
    "last_error",
    "result",
    "run_at",
    "leased_by",
    "leased_at",
    "lease_expires_at",
    "created_at",
    "updated_at",
    "finished_at",
    "workflow_id",
    "ref",
    "on_parent_failure",
    "pending_parents",
    "depends_on",
    "dependants",
}


def parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def post_raw(client, body: str):
    return client.post("/v1/jobs", data=body, headers={**AUTH, "Content-Type": "application/json"})


def test_create_job_answers_201_with_id_status_and_run_at(client, store):
    response = post_job(client, {"type": "email_send", "payload": {"to": "a@example.com"}})

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "status", "run_at", "outcome"}
    assert (body["status"], body["outcome"]) == ("pending", "created")
    job = store.get_job(body["id"])
    assert parse_time(body["run_at"]) == job.run_at
    assert response.headers["Location"] == f"/v1/jobs/{job.id}"


def test_the_location_of_a_job_is_its_url_under_the_mount_point(app, client):
    # Given the API mounted under a path prefix (SCRIPT_NAME, as a proxy sets it)
    # When a job is submitted
    response = post_job(client, {"type": "email_send", "payload": {}}, base_url="http://localhost/quorra")
    # Then its Location is the URL that Flask builds for GET /v1/jobs/{id} there
    job_id = response.get_json()["id"]
    with app.test_request_context(base_url="http://localhost/quorra"):
        assert response.headers["Location"] == url_for("jobs.get_job", job_id=job_id) == f"/quorra/v1/jobs/{job_id}"


def test_readme_email_send_example_is_accepted_as_written(client, store):
    response = post_raw(client, README_EMAIL_SEND)

    assert response.status_code == 201
    job = store.get_job(response.get_json()["id"])
    assert (job.type, job.queue, job.priority, job.max_retries) == ("email_send", "default", 10, 3)
    assert job.payload["subject"] == "Welcome to GoQuorra!"


def test_readme_delayed_reminder_example_runs_sixty_seconds_later(client):
    created = post_raw(client, README_REMINDER).get_json()

    job = client.get(f"/v1/jobs/{created['id']}", headers=AUTH).get_json()
    assert (job["type"], job["queue"], job["max_retries"], job["status"]) == ("reminder", "default", 5, "pending")
    assert parse_time(job["run_at"]) - parse_time(job["created_at"]) == timedelta(seconds=60)


def test_get_job_returns_every_field(client, store):
    job = make_job(store, queue="emails", priority=7, payload={"n": [1, 2]})

    response = client.get(f"/v1/jobs/{job.id}", headers=AUTH)

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == JOB_FIELDS
    assert body["id"] == job.id
    assert (body["type"], body["queue"], body["priority"], body["payload"]) == (
        "email_send",
        "emails",
        7,
        {"n": [1, 2]},
    )
    assert (body["status"], body["attempts"], body["max_retries"]) == ("pending", 0, 3)
    assert body["last_error"] is None and body["finished_at"] is None and body["leased_by"] is None
    assert parse_time(body["created_at"]) == job.created_at


def test_get_job_shows_lease_and_error_fields_of_a_dead_job(client, store):
    job = dead_job(store)

    body = client.get(f"/v1/jobs/{job.id}", headers=AUTH).get_json()

    assert (body["status"], body["attempts"], body["last_error"]) == ("dead", 1, "boom")
    assert body["leased_by"] == "worker-a"
    assert parse_time(body["finished_at"]) == job.finished_at


def test_get_job_accepts_an_uppercase_id(client, store):
    job = make_job(store)

    assert client.get(f"/v1/jobs/{job.id.upper()}", headers=AUTH).get_json()["id"] == job.id


def test_create_job_publishes_a_wake_up_for_its_queue(client, notifier):
    post_job(client, {"type": "email_send", "payload": {}, "queue": "emails"})

    assert notifier.published == ["emails"]


def test_a_failing_notifier_does_not_fail_the_enqueue(settings, store):
    from quorra.api import create_app
    from tests.api.conftest import RecordingNotifier

    class BrokenNotifier(RecordingNotifier):
        def publish(self, queue: str) -> None:
            raise ConnectionError("redis went away")

    client = create_app(settings, store=store, notifier=BrokenNotifier()).test_client()

    response = post_job(client, {"type": "email_send", "payload": {}})

    assert response.status_code == 201
    assert store.get_job(response.get_json()["id"]).status is JobStatus.PENDING


def test_batch_creates_every_job_in_order(client, store, notifier):
    jobs = [{"type": "resize", "payload": {"n": n}, "queue": q} for n, q in enumerate(["img", "img", "thumbs"])]

    response = client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=AUTH)

    assert response.status_code == 201
    created = response.get_json()["jobs"]
    assert [set(item) for item in created] == [{"id", "status", "run_at", "outcome"}] * 3
    assert [store.get_job(item["id"]).payload["n"] for item in created] == [0, 1, 2]
    assert sorted(notifier.published) == ["img", "thumbs"]


def test_batch_logs_one_info_line_and_each_job_at_debug(client, caplog):
    # Given a batch of three jobs on two queues, logged at DEBUG
    caplog.set_level(logging.DEBUG, logger="quorra.store")
    jobs = [{"type": "resize", "payload": {}, "queue": q} for q in ["img", "img", "thumbs"]]
    # When it is submitted
    created = client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=AUTH).get_json()["jobs"]
    # Then one INFO line tells the batch, and each job has its own line at DEBUG
    lines = [r for r in caplog.records if getattr(r, "event", "").endswith("enqueued")]
    [summary] = [r for r in lines if r.levelno == logging.INFO]
    assert (summary.event, summary.count, summary.queues) == ("jobs.enqueued", 3, ["img", "thumbs"])
    per_job = [r for r in lines if r.levelno == logging.DEBUG]
    assert [(r.event, r.job_id) for r in per_job] == [("job.enqueued", item["id"]) for item in created]


def test_single_submit_logs_its_job_at_info(client, caplog):
    caplog.set_level(logging.INFO, logger="quorra.store")
    job_id = post_job(client, {"type": "resize", "payload": {}}).get_json()["id"]
    [line] = [r for r in caplog.records if getattr(r, "event", "").endswith("enqueued")]
    assert (line.event, line.levelno, line.job_id) == ("job.enqueued", logging.INFO, job_id)


def test_batch_with_one_bad_job_creates_none_and_names_its_index(client, store):
    before = job_count(store)
    jobs = [
        {"type": "ok", "payload": {}},
        {"type": "ok", "payload": {}, "priority": "high"},
        {"type": "ok", "payload": {}},
    ]

    response = client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=AUTH)

    error = assert_error(response, 400, "invalid_argument")
    assert [detail["field"] for detail in error["details"]] == ["jobs[1].priority"]
    assert job_count(store) == before


def test_batch_of_more_than_a_thousand_jobs_is_refused(client, store):
    jobs = [{"type": "t", "payload": {}}] * 1001

    assert_error(client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=AUTH), 400, "invalid_argument")
    assert job_count(store) == 0


def test_batch_must_be_an_object_holding_only_jobs(client, store):
    for body in ([{"type": "t", "payload": {}}], {"jobs": []}, {"jobs": [], "extra": 1}, {"jobs": {"type": "t"}}):
        assert_error(client.post("/v1/jobs/batch", json=body, headers=AUTH), 400, "invalid_argument")
    assert job_count(store) == 0


def test_cancel_a_pending_job(client, store):
    job = make_job(store)

    response = client.post(f"/v1/jobs/{job.id}/cancel", headers=AUTH)

    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert store.get_job(job.id).status is JobStatus.CANCELLED


def test_cancelling_a_finished_job_is_a_conflict(client, store):
    job = dead_job(store)

    assert_error(client.post(f"/v1/jobs/{job.id}/cancel", headers=AUTH), 409, "conflict")
    assert store.get_job(job.id).status is JobStatus.DEAD


def test_retry_a_dead_job_puts_it_back_in_line_and_wakes_its_queue(client, store, notifier):
    job = dead_job(store, queue="payments")

    response = client.post(f"/v1/jobs/{job.id}/retry", headers=AUTH)

    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["attempts"], body["finished_at"]) == ("pending", 0, None)
    assert notifier.published == ["payments"]


def test_retrying_a_pending_job_is_a_conflict(client, store, notifier):
    job = make_job(store)

    assert_error(client.post(f"/v1/jobs/{job.id}/retry", headers=AUTH), 409, "conflict")
    assert notifier.published == []


def test_queues_counts_jobs_per_queue_and_status(client, store):
    for queue in ("default", "default", "email"):
        make_job(store, queue=queue)
    store.cancel(make_job(store, queue="email").id)

    response = client.get("/v1/queues", headers=AUTH)

    assert response.status_code == 200
    assert response.get_json()["queues"] == [
        {"queue": "default", "status": "pending", "count": 2},
        {"queue": "email", "status": "cancelled", "count": 1},
        {"queue": "email", "status": "pending", "count": 1},
    ]
