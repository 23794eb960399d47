"""/v1/schedules over the real app on both backends: create, list, read, change, pause,
resume, delete; bad input is a 4xx naming the field; a job's timeout_seconds round-trips."""

from __future__ import annotations

from quorra.config import Settings
from tests.api.conftest import AUTH, assert_error, post_job

NIGHTLY = {
    "name": "nightly-report",
    "cron": "0 3 * * *",
    "timezone": "Europe/Paris",
    "job": {"type": "report_build", "queue": "reports", "payload": {"kind": "daily"}, "timeout_seconds": 600},
}


def create(client, body=NIGHTLY):
    return client.post("/v1/schedules", json=body, headers=AUTH)


def test_a_created_schedule_is_listed_with_its_next_run(client):
    created = create(client)

    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.headers["Location"].endswith("/v1/schedules/nightly-report")
    body = created.get_json()
    assert body["job"] == {
        "type": "report_build",
        "payload": {"kind": "daily"},
        "queue": "reports",
        "priority": 0,
        "max_retries": 3,
        "timeout_seconds": 600,
    }
    assert (body["missed_ticks"], body["is_paused"], body["last_run_at"], body["last_job_status"]) == (
        "skip",
        False,
        None,
        None,
    )
    assert body["next_run_at"].endswith(("T01:00:00Z", "T02:00:00Z"))  # 03:00 in Paris
    listed = client.get("/v1/schedules", headers=AUTH).get_json()["schedules"]
    assert listed == [body]
    assert client.get("/v1/schedules/nightly-report", headers=AUTH).get_json() == body


def test_a_schedule_name_is_unique(client):
    create(client)

    assert_error(create(client), 409, "conflict")


def test_patch_changes_fields_and_merges_the_job_template(client):
    create(client)

    changed = client.patch(
        "/v1/schedules/nightly-report", json={"interval_seconds": 3600, "job": {"priority": 5}}, headers=AUTH
    )

    body = changed.get_json()
    assert changed.status_code == 200, body
    assert (body["cron"], body["interval_seconds"], body["job"]["priority"], body["job"]["queue"]) == (
        None,
        3600,
        5,
        "reports",
    )


def test_pause_and_resume(client):
    create(client)

    paused = client.post("/v1/schedules/nightly-report/pause", headers=AUTH).get_json()
    resumed = client.post("/v1/schedules/nightly-report/resume", headers=AUTH).get_json()

    assert (paused["is_paused"], resumed["is_paused"]) == (True, False)


def test_delete_then_404(client):
    create(client)

    assert client.delete("/v1/schedules/nightly-report", headers=AUTH).status_code == 204
    assert_error(client.get("/v1/schedules/nightly-report", headers=AUTH), 404, "not_found")
    assert_error(client.delete("/v1/schedules/nightly-report", headers=AUTH), 404, "not_found")
    assert_error(client.post("/v1/schedules/nope/pause", headers=AUTH), 404, "not_found")


def test_invalid_schedules_are_a_400_naming_the_field(client):
    bad_cron = create(client, NIGHTLY | {"cron": "0 25 * * *"})
    both = create(client, NIGHTLY | {"interval_seconds": 60})
    bad_zone = create(client, NIGHTLY | {"timezone": "Nowhere/Special"})
    bad_job = create(client, NIGHTLY | {"job": {"type": "x", "delay_seconds": 5}})
    rename = (create(client), client.patch("/v1/schedules/nightly-report", json={"name": "b"}, headers=AUTH))[1]

    assert {d["field"] for d in assert_error(bad_cron, 400, "invalid_argument")["details"]} == {"cron"}
    assert_error(both, 400, "invalid_argument")
    assert {d["field"] for d in assert_error(bad_zone, 400, "invalid_argument")["details"]} == {"timezone"}
    assert {d["field"] for d in assert_error(bad_job, 400, "invalid_argument")["details"]} == {"job.delay_seconds"}
    assert_error(rename, 400, "invalid_argument")


def test_schedules_require_the_api_key(client):
    assert_error(client.get("/v1/schedules"), 401, "unauthenticated")


def test_a_job_timeout_is_stored_and_shown(client):
    created = post_job(client, {"type": "t", "payload": {}, "timeout_seconds": 90})

    job = client.get(f"/v1/jobs/{created.get_json()['id']}", headers=AUTH).get_json()

    assert job["timeout_seconds"] == 90
    assert_error(post_job(client, {"type": "t", "payload": {}, "timeout_seconds": 0}), 400, "invalid_argument")


def test_quorra_default_job_timeout_applies_to_jobs_that_name_none(settings, store, notifier):
    from quorra.api import create_app

    app = create_app(settings.model_copy(update={"default_job_timeout_seconds": 300}), store=store, notifier=notifier)
    client = app.test_client()

    default = post_job(client, {"type": "t", "payload": {}}).get_json()["id"]
    own = post_job(client, {"type": "t", "payload": {}, "timeout_seconds": 5}).get_json()["id"]

    assert [store.get_job(job_id).timeout_seconds for job_id in (default, own)] == [300, 5]
    assert Settings.from_env({"QUORRA_DEFAULT_JOB_TIMEOUT": "5m"}).default_job_timeout_seconds == 300
