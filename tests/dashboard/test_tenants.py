"""The dashboard within a tenant: a session signed in with tenant B's key sees none of tenant
A's jobs, queues, schedules' jobs or audit entries, and none of its actions reaches them
(another tenant's job is a 404 page, a queue name is B's own queue). The header names a
tenant other than the default."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quorra.jobs import JobStatus
from quorra.schedules import ScheduleSpec, plan_tick
from tests.dashboard.conftest import post, sign_in, text
from tests.support.tenants import job_of, key_of, leased_job_of

SECRET_QUEUE = "acme-payroll"  # a name only tenant acme uses


@pytest.fixture
def globex(app, store):
    """A browser signed in with an admin key of tenant globex."""
    client = app.test_client()
    assert sign_in(client, key_of(store, "globex")["X-API-Key"]).status_code == 302
    return client


@pytest.fixture
def acme_jobs(store):
    """Tenant acme's jobs: one waiting, one dead, one fired by its schedule."""
    dead = leased_job_of(store, "acme", queue=SECRET_QUEUE, max_retries=0)
    store.nack(dead.id, dead.lease_id, "boom", tenant="acme")
    waiting = job_of(store, "acme", queue=SECRET_QUEUE, payload={"salary": 1})
    spec = ScheduleSpec.parse({"name": "nightly", "interval_seconds": 60, "job": {"type": "t", "queue": SECRET_QUEUE}})
    created_at = datetime(2026, 1, 1, tzinfo=UTC)
    schedule = store.create_schedule(spec, tenant="acme", now=created_at)
    fire_at = schedule.next_run_at
    fired = store.fire_tick(schedule, plan_tick(schedule, fire_at, 10), now=fire_at).job
    return {"waiting": waiting, "dead": dead, "fired": fired}


def test_the_header_names_a_tenant_other_than_the_default(globex, client):
    assert "tenant globex" in text(globex.get("/"))
    assert "tenant default" not in text(client.get("/")) and 'class="tenant"' not in text(client.get("/"))


def test_another_tenants_jobs_and_queues_are_on_no_page(globex, acme_jobs):
    for path in ("/", "/jobs", "/dead", "/queues", "/workers"):
        page = globex.get(path)
        assert page.status_code == 200, path
        assert SECRET_QUEUE not in text(page), path
        assert not any(job.id in text(page) for job in acme_jobs.values()), path
    for path in (
        f"/jobs?queue={SECRET_QUEUE}",
        f"/dead?queue={SECRET_QUEUE}",
        f"/jobs?queue={SECRET_QUEUE}&status=dead",
    ):
        page = globex.get(path)  # the filter names the queue: globex's own, which is empty
        assert page.status_code == 200, path
        assert not any(job.id in text(page) for job in acme_jobs.values()), path
    for job in acme_jobs.values():
        assert globex.get(f"/jobs/{job.id}").status_code == 404
        found = globex.get(f"/jobs?q={job.id}")  # the search box shows the id; no row links the job
        assert found.status_code == 200 and f"/jobs/{job.id}" not in text(found)


def test_another_tenants_jobs_cannot_be_acted_on(globex, store, acme_jobs):
    waiting, dead = acme_jobs["waiting"], acme_jobs["dead"]

    post(globex, f"/jobs/{waiting.id}/cancel")
    post(globex, f"/jobs/{dead.id}/retry")
    post(globex, f"/jobs/{dead.id}/delete")
    post(globex, "/dead/retry", queue=SECRET_QUEUE)
    post(globex, "/dead/delete", queue=SECRET_QUEUE)
    post(globex, f"/queues/{SECRET_QUEUE}/pause")

    assert store.get_job(waiting.id, tenant="acme").status is JobStatus.PENDING
    assert store.get_job(dead.id, tenant="acme").status is JobStatus.DEAD
    assert store.paused_queues(tenant="acme") == {}
    # the pause made globex's own queue of that name paused, nobody else's
    assert list(store.paused_queues(tenant="globex")) == [SECRET_QUEUE]


def test_another_tenants_audit_entries_are_not_shown(globex, client, store, acme_jobs):
    acme_admin = key_of(store, "acme")
    acme = globex.application.test_client()
    sign_in(acme, acme_admin["X-API-Key"])
    post(acme, f"/jobs/{acme_jobs['waiting'].id}/cancel")

    page = text(globex.get("/audit"))

    assert acme_jobs["waiting"].id not in page and "acme admin" not in page
    assert acme_jobs["waiting"].id in text(acme.get("/audit"))
    assert acme_jobs["waiting"].id not in text(client.get("/audit"))
