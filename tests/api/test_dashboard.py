"""The dashboard at `/`: Basic auth with an API key as password; queue counts and recent jobs."""

from __future__ import annotations

import base64

from tests.conftest import TEST_API_KEY
from tests.factories import dead_job, make_job


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def test_dashboard_asks_for_credentials(client):
    response = client.get("/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_dashboard_refuses_a_wrong_key(client):
    assert client.get("/", headers=basic("wrong")).status_code == 401


def test_dashboard_shows_queue_counts_and_recent_jobs_without_payloads(client, store):
    pending = make_job(store, queue="email", payload={"secret": "hunter2"})
    dead = dead_job(store)
    response = client.get("/", headers=basic(TEST_API_KEY))
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert pending.id in page and dead.id in page
    assert "hunter2" not in page
    assert '<meta http-equiv="refresh" content="5">' in page
    email_row = page[page.index("<td>email</td>") :].split("</tr>")[0]
    assert '<td class="n pending">1</td>' in email_row


def test_dashboard_filters_recent_jobs_by_status(client, store):
    pending = make_job(store)
    dead = dead_job(store)
    page = client.get("/?status=dead", headers=basic(TEST_API_KEY)).get_data(as_text=True)
    assert dead.id in page and pending.id not in page


def test_the_audit_page_refuses_unknown_query_parameters(client):
    response = client.get("/audit?actoin=job.cancel", auth=("ops", TEST_API_KEY))
    assert response.status_code == 400 and "actoin" in response.get_data(as_text=True)
    assert client.get("/audit?action=made.up", auth=("ops", TEST_API_KEY)).status_code == 200  # shows all
