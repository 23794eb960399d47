"""The routes the dashboard acts through need their permission: a read-only key reads
queues, workers and attempts, and is refused pause, resume and deletes."""

from __future__ import annotations

import pytest

from quorra.api import create_app
from quorra.config import Settings
from tests.api.conftest import assert_error

ADMIN, VIEWER = {"X-API-Key": "admin-key"}, {"X-API-Key": "viewer-key"}


@pytest.fixture
def roles_client(database_url, store, notifier):
    settings = Settings(database_url=database_url, api_keys=("admin-key",), readonly_api_keys=("viewer-key",))
    return create_app(settings, store=store, notifier=notifier).test_client()


def test_a_viewer_reads_queues_workers_and_attempts(roles_client):
    job = roles_client.post("/v1/jobs", json={"type": "t", "payload": {}}, headers=ADMIN).get_json()
    for path in ("/v1/queues", "/v1/workers", f"/v1/jobs/{job['id']}/attempts", "/v1/stats/throughput"):
        assert roles_client.get(path, headers=VIEWER).status_code == 200, path


def test_a_viewer_cannot_pause_resume_or_delete(roles_client, store):
    job = roles_client.post("/v1/jobs", json={"type": "t", "payload": {}}, headers=ADMIN).get_json()
    store.cancel(job["id"])
    refused = [
        roles_client.post("/v1/queues/default/pause", headers=VIEWER),
        roles_client.post("/v1/queues/default/resume", headers=VIEWER),
        roles_client.delete(f"/v1/jobs/{job['id']}", headers=VIEWER),
        roles_client.delete("/v1/jobs", json={"queue": "default", "status": "cancelled"}, headers=VIEWER),
        roles_client.post("/v1/jobs/retry", json={"queue": "default", "status": "cancelled"}, headers=VIEWER),
    ]
    for response in refused:
        assert_error(response, 403, "permission_denied")
    assert store.paused_queues() == {} and store.get_job(job["id"]).status.value == "cancelled"
