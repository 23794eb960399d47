"""The dashboard's pages: what each shows, its live fragment, and job data always escaped."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import text
from tests.factories import dead_job, make_job, succeeded_job

XSS = "<script>alert(1)</script>"
FRAGMENT = {"X-Quorra-Fragment": "1"}


def test_the_overview_shows_each_queue_s_counts_and_oldest_waiting_job(client, store):
    make_job(store, queue="email")
    make_job(store, queue="email")
    dead_job(store, queue="images")
    page = text(client.get("/"))
    email = page[page.index('data-queue="email"') :].split("</tr>")[0]
    assert 'href="/jobs?queue=email&amp;status=pending">2</a>' in email
    images = page[page.index('data-queue="images"') :].split("</tr>")[0]
    assert 'href="/jobs?queue=images&amp;status=dead">1</a>' in images


def test_a_paused_queue_is_marked_on_the_overview(client, store):
    make_job(store, queue="email")
    store.set_queue_paused("email", True)
    row = text(client.get("/")).split('data-queue="email"')[1].split("</tr>")[0]
    assert "paused" in row


def test_the_live_fragment_is_the_live_part_alone(client, store):
    make_job(store, queue="email")
    response = client.get("/", headers=FRAGMENT)
    fragment = text(response)
    assert response.status_code == 200
    assert fragment.lstrip().startswith('<div id="live" data-live>') and "<html" not in fragment
    assert 'data-queue="email"' in fragment


def test_the_jobs_table_lists_newest_first_and_filters_by_queue_status_and_type(client, store):
    older = make_job(store, queue="email")
    newer = make_job(store, queue="email", type="reminder")
    elsewhere = dead_job(store, queue="images")
    page = text(client.get("/jobs"))
    assert page.index(newer.id) < page.index(older.id) and elsewhere.id in page
    page = text(client.get("/jobs?queue=email&type=reminder"))
    assert newer.id in page and older.id not in page and elsewhere.id not in page
    page = text(client.get("/jobs?status=dead"))
    assert elsewhere.id in page and newer.id not in page


def test_the_jobs_table_pages_by_keyset_and_keeps_the_filter_in_its_links(client, store, monkeypatch):
    monkeypatch.setattr("quorra.dashboard.pages.PAGE_SIZE", 2)
    jobs = [make_job(store, queue="email") for _ in range(3)]
    first = text(client.get("/jobs?queue=email"))
    assert jobs[2].id in first and jobs[1].id in first and jobs[0].id not in first
    link = first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    assert link.startswith("?queue=email&cursor=")
    second = text(client.get("/jobs" + link))
    assert jobs[0].id in second and jobs[1].id not in second and 'rel="next"' not in second


@pytest.mark.parametrize(
    "query",
    [
        "status=bogus",
        "queue=bad%20name",
        "cursor=forged",
        "since=yesterday",
        "since=0.5",
        "until=9999-12-31T23:59:59-14:00",
        "since=0001-01-01T00:00:00%2B01:00",
        "q=a%00b",
        "queue=a&queue=b",
        "colour=red",
    ],
)
def test_a_bad_filter_is_a_400_page_naming_it(client, query):
    response = client.get(f"/jobs?{query}")
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert '<p class="error-message">' in text(response)


def test_the_job_page_shows_payload_result_error_and_lease(client, store):
    job = succeeded_job(store, payload={"to": "ada@example.com", "nested": {"n": 1}})
    page = text(client.get(f"/jobs/{job.id}"))
    assert "&#34;to&#34;: &#34;ada@example.com&#34;" in page  # pretty-printed, escaped
    assert "&#34;nested&#34;: {\n    &#34;n&#34;: 1\n  }" in page
    assert "&#34;ok&#34;: true" in page  # the result
    dead = dead_job(store)
    page = text(client.get(f"/jobs/{dead.id}"))
    assert '<pre class="error-text">boom</pre>' in page
    assert "worker-a" in page  # the lease holder


def test_the_job_page_links_a_job_s_parents_and_dependants(client, store):
    parent = make_job(store)
    child = make_job(store, depends_on=[parent.id], on_parent_failure="run")

    parent_page = text(client.get(f"/jobs/{parent.id}"))
    child_page = text(client.get(f"/jobs/{child.id}"))
    plain_page = text(client.get(f"/jobs/{make_job(store).id}"))

    assert f'<a href="/jobs/{child.id}"><code>{child.id}</code></a>' in parent_page
    assert f'<a href="/jobs/{parent.id}"><code>{parent.id}</code></a>' in child_page
    assert "1 not yet succeeded; if one fails: run" in child_page
    assert "depends on" not in plain_page and "dependants" not in plain_page


def test_an_unknown_job_is_a_404_page(client):
    assert client.get("/jobs/6f1d3c2e-0000-4000-8000-000000000000").status_code == 404
    assert client.get("/jobs/not-an-id").status_code == 404


def test_markup_in_job_data_is_escaped_everywhere(client, store):
    job = make_job(store, queue="email", payload={"html": XSS})
    dead = dead_job(store, payload={"x": 1})
    store.retry(dead.id)
    [leased] = store.lease_jobs([dead.queue], "worker-<b>", 1, 30)
    store.nack(leased.id, leased.lease_id, XSS)
    for path in ("/", "/jobs", f"/jobs/{job.id}", f"/jobs/{dead.id}", "/dead", "/queues"):
        page = text(client.get(path))
        assert XSS not in page and "worker-<b>" not in page, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text(client.get(f"/jobs/{dead.id}"))


def test_payloads_and_results_can_be_hidden(dashboard_settings, store):
    from quorra.api import create_app
    from tests.conftest import TEST_API_KEY
    from tests.dashboard.conftest import sign_in

    app = create_app(dashboard_settings.model_copy(update={"dashboard_show_payloads": False}), store=store)
    client = app.test_client()
    sign_in(client, TEST_API_KEY)
    job = succeeded_job(store, payload={"card": "4111-1111"})
    page = text(client.get(f"/jobs/{job.id}"))
    assert "4111-1111" not in page and "&#34;ok&#34;" not in page
    assert "QUORRA_DASHBOARD_SHOW_PAYLOADS=false" in page


def test_the_queues_page_offers_pause_for_an_active_queue_and_resume_for_a_paused_one(client, store):
    make_job(store, queue="email")
    make_job(store, queue="images")
    store.set_queue_paused("images", True)
    page = text(client.get("/queues"))
    assert 'action="/queues/email/pause"' in page and 'action="/queues/images/resume"' in page


def test_the_dead_letter_view_lists_dead_jobs_per_queue(client, store):
    dead = dead_job(store, queue="email")
    other = dead_job(store, queue="images")
    make_job(store, queue="email")
    page = text(client.get("/dead?queue=email"))
    assert dead.id in page and other.id not in page
    assert 'action="/dead/retry"' in page and 'name="queue" value="email"' in page


def test_the_job_page_lists_every_attempt_with_its_worker_and_error(client, store):
    job = make_job(store, queue="email", max_retries=2)
    [first] = store.lease_jobs(["email"], "worker-one", 1, 30)
    store.nack(first.id, first.lease_id, "smtp timeout")
    store.retry(job.id)  # back in line now, not after the backoff
    [second] = store.lease_jobs(["email"], "worker-two", 1, 30)
    page = text(client.get(f"/jobs/{job.id}"))
    rows = page.split('<table class="attempts">')[1].split("</tbody>")[0].split("<tr>")[2:]
    assert len(rows) == 2
    assert "worker-one" in rows[0] and "smtp timeout" in rows[0] and "s-failed" in rows[0]
    assert "worker-two" in rows[1] and "running" in rows[1] and "lease until" in rows[1]
    assert second.leased_by == "worker-two"


def test_a_queue_with_ready_jobs_and_no_worker_is_flagged(client, store):
    from quorra.store import WorkerSighting

    make_job(store, queue="email")
    make_job(store, queue="images")
    store.record_workers([WorkerSighting("w-1", host="box-1", pid=42, queues=("images",), handlers=("resize",))])
    overview = text(client.get("/"))
    email = overview.split('data-queue="email"')[1].split("</tr>")[0]
    images = overview.split('data-queue="images"')[1].split("</tr>")[0]
    assert "no worker" in email and "no worker" not in images
    workers = text(client.get("/workers"))
    assert "Queues with waiting jobs and no worker" in workers
    assert 'href="/jobs?queue=email&amp;status=ready">email</a>' in workers


def test_the_workers_page_lists_each_worker_seen_lately(client, store):
    from quorra.store import WorkerSighting

    store.record_workers([WorkerSighting("w-<1>", host="box-1", pid=42, queues=("images",), handlers=("resize",))])
    job = make_job(store, queue="images")
    store.lease_jobs(["images"], "w-<1>", 1, 30)
    page = text(client.get("/workers"))
    row = page.split('data-worker="w-&lt;1&gt;"')[1].split("</tr>")[0]
    assert "box-1" in row and "pid 42" in row and "resize" in row and '<td class="n">1</td>' in row
    assert job.queue in row


def test_the_workers_page_says_when_no_worker_was_seen(client):
    assert "No worker seen in the last 5 minutes." in text(client.get("/workers"))


def test_scheduled_jobs_are_shown_and_filtered_apart_from_ready_ones(client, store):
    ready = make_job(store, queue="email")
    later = make_job(store, queue="email", delay_seconds=3600)
    page = text(client.get("/jobs"))
    assert f'data-job-id="{later.id}" data-status="scheduled"' in page
    assert f'data-job-id="{ready.id}" data-status="pending"' in page
    scheduled = text(client.get("/jobs?status=scheduled"))
    assert later.id in scheduled and ready.id not in scheduled
    due = text(client.get("/jobs?status=ready"))
    assert ready.id in due and later.id not in due


def test_the_search_finds_a_job_by_id_or_by_text_in_its_payload(client, store):
    ada = make_job(store, payload={"to": "ada@example.com"})
    bob = make_job(store, payload={"to": "bob@example.com"})
    found = text(client.get("/jobs?q=ADA@example"))
    assert ada.id in found and bob.id not in found
    found = text(client.get(f"/jobs?q={bob.id}"))
    assert bob.id in found and ada.id not in found
    assert "No job matches." in text(client.get("/jobs?q=nobody"))


def test_the_time_range_filters_by_creation_time_in_utc(client, store):
    job = make_job(store)
    created = job.created_at.strftime("%Y-%m-%dT%H:%M:%S")
    assert job.id in text(client.get(f"/jobs?since={created}"))
    assert job.id not in text(client.get(f"/jobs?until={created}"))
    assert job.id in text(client.get("/jobs?since=2000-01-01T00:00&until=2999-01-01T00:00"))


def test_the_overview_charts_the_attempts_of_the_last_hour(client, store):
    succeeded_job(store, queue="email")
    dead_job(store, queue="images")
    page = text(client.get("/"))
    assert '<span class="ok">1 succeeded</span> <span class="bad">1 failed</span>' in page
    assert page.count('<rect class="ok"') == 1 and page.count('<rect class="bad"') == 1


@pytest.mark.parametrize("path", ["/", "/queues"])
def test_the_queue_tables_page_fifty_queues_at_a_time(client, store, monkeypatch, path):
    monkeypatch.setattr("quorra.dashboard.pages.QUEUES_PER_PAGE", 2)
    for name in ("a", "b", "c"):
        make_job(store, queue=name)
    first = text(client.get(path))
    assert 'data-queue="a"' in first and 'data-queue="b"' in first and 'data-queue="c"' not in first
    assert 'href="?queue_page=2" rel="next"' in first
    second = text(client.get(f"{path}?queue_page=2"))
    assert 'data-queue="c"' in second and 'data-queue="a"' not in second
    for odd in ("0", "99", "x", "-1"):
        assert client.get(f"{path}?queue_page={odd}").status_code == 200
