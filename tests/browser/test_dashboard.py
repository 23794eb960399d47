"""The dashboard as a person uses it, in a real browser against a real deployment."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

from tests.api.test_server import AUTH
from tests.browser.conftest import PHONE, READONLY_KEY, screenshot, sign_in
from tests.worker.support import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def worker(deployment):
    return deployment.worker("--id", "browser-worker", "--queues", "default,email,bulk", "--max-jobs", "4")


def job_status(deployment, job_id: str) -> str:
    return deployment.job(job_id)["status"]


def wait_status(deployment, job_id: str, status: str) -> None:
    wait_until(lambda: job_status(deployment, job_id) == status, timeout=60, what=f"job {job_id} {status}")


def same_document(page) -> bool:
    return page.evaluate("window.quorraTestMarker === 'unchanged'")


def test_a_submitted_job_appears_and_succeeds_without_a_reload_and_can_be_found(page, deployment, worker):
    # Given an operator signed in on the jobs table
    sign_in(page, deployment.base_url, path="/jobs")
    page.evaluate("window.quorraTestMarker = 'unchanged'")
    # When a job is submitted over REST
    job_id = deployment.post(
        type="email_send", queue="email", payload={"to": "ada@example.com", "subject": "Welcome aboard"}
    ).json()["id"]
    # Then its row appears, and turns succeeded, in the same document
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-status", "succeeded")
    assert same_document(page)

    # When the operator filters by queue and status, then searches the payload
    other = deployment.post(type="email_send", queue="default", payload={"to": "bob@example.com"}).json()["id"]
    page.get_by_label("Queue").fill("email")
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(f"{deployment.base_url}/jobs?queue=email&status=succeeded")
    expect(row).to_be_visible()
    expect(page.locator(f'tr[data-job-id="{other}"]')).to_have_count(0)
    page.goto(f"{deployment.base_url}/jobs")
    page.get_by_label("Search").fill("ada@example")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)
    expect(row).to_be_visible()
    # and by the job's id
    page.get_by_label("Search").fill(other)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(f'tr[data-job-id="{other}"]')).to_be_visible()
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)

    # When they open the job: payload, result and its one attempt, by this worker
    page.goto(f"{deployment.base_url}/jobs?queue=email")
    row.get_by_role("link").click()
    expect(page.locator("pre.payload")).to_contain_text('"to": "ada@example.com"')
    expect(page.locator("pre.result")).to_contain_text('"logged": true')
    expect(page.locator("table.attempts tbody tr")).to_have_count(1)
    expect(page.locator("table.attempts")).to_contain_text("browser-worker")


def test_a_dead_job_is_retried_from_its_page(page, deployment, worker):
    # Given a job that failed its only attempt
    job_id = deployment.post(
        type="fail", queue="default", max_retries=0, payload={"message": "the mail server said no"}
    )
    job_id = job_id.json()["id"]
    sign_in(page, deployment.base_url, path=f"/jobs/{job_id}")
    expect(page.locator(".job-status .badge")).to_have_text("dead")
    expect(page.locator("pre.error-text").first).to_contain_text("JobFailed: the mail server said no")
    # When the operator retries it
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash.ok")).to_contain_text("back in line")
    # Then it runs again (and, failing again, is dead with two attempts on record)
    expect(page.locator("table.attempts tbody tr")).to_have_count(2)
    expect(page.locator(".job-status .badge")).to_have_text("dead")


def test_every_dead_job_of_a_queue_is_retried_at_once(page, deployment, worker):
    # Given two dead jobs in the queue "bulk"
    ids = [deployment.post(type="fail", queue="bulk", max_retries=0, payload={"n": n}).json()["id"] for n in range(2)]
    for job_id in ids:
        wait_status(deployment, job_id, "dead")
    # When the operator retries all of the queue's dead letters
    sign_in(page, deployment.base_url, path="/dead?queue=bulk")
    expect(page.locator("table.jobs tbody tr")).to_have_count(2)
    page.get_by_role("button", name="Retry all").click()
    # Then both were put back in line, in one go
    expect(page.locator(".flash.ok")).to_contain_text("2 dead jobs of bulk back in line")
    for job_id in ids:
        wait_until(
            lambda job_id=job_id: deployment.job(job_id)["attempts"] >= 1 and job_status(deployment, job_id) == "dead"
        )


def test_a_paused_queue_keeps_its_jobs_waiting_until_resumed(page, deployment, worker):
    # Given the operator pauses the queue "email"
    sign_in(page, deployment.base_url, path="/queues")
    email = page.locator('tr[data-queue="email"]')
    email.get_by_role("button", name="Pause").click()
    expect(email.locator(".badge")).to_have_text("paused")
    # When jobs arrive in "email" and in "default", which the same worker reads
    waiting = deployment.post(type="email_send", queue="email", payload={"to": "eve@example.com"}).json()["id"]
    served = deployment.post(type="email_send", queue="default", payload={"to": "dan@example.com"}).json()["id"]
    # Then the "default" job runs while the "email" job waits
    wait_status(deployment, served, "succeeded")
    assert job_status(deployment, waiting) == "pending"
    page.goto(f"{deployment.base_url}/jobs/{waiting}")
    expect(page.locator(".job-status .badge")).to_have_text("pending")
    # When the queue is resumed, the job runs
    page.goto(f"{deployment.base_url}/queues")
    email.get_by_role("button", name="Resume").click()
    expect(email.locator(".badge")).to_have_text("active")
    wait_status(deployment, waiting, "succeeded")


def test_the_overview_jobs_table_and_a_job_page_at_desktop_and_phone_width(page, deployment, worker):
    # Given some traffic: emails, a reminder for later, and a job that succeeds on its second attempt
    for n in range(3):
        deployment.post(type="email_send", queue="email", payload={"to": f"user{n}@example.com", "subject": "Hi"})
    deployment.post(type="reminder", queue="default", delay_seconds=3600, payload={"message": "stand-up in 1 h"})
    flaky = deployment.post(
        type="fail",
        queue="default",
        max_retries=3,
        payload={"message": "SMTP 451: try again later", "succeed_on_attempt": 2, "to": "ada@example.com"},
    ).json()["id"]
    deployment.post(type="email_send", queue="reports", payload={"report": "weekly"})  # no worker reads it
    wait_status(deployment, flaky, "succeeded")
    # Then the overview charts the last hour and flags the queue nobody serves
    sign_in(page, deployment.base_url)
    expect(page.locator('tr[data-queue="email"]')).to_be_visible()
    expect(page.locator('tr[data-queue="reports"]')).to_contain_text("no worker")
    expect(page.locator(".chart rect.ok").first).to_be_visible()
    screenshot(page, "overview")
    page.goto(f"{deployment.base_url}/jobs")
    expect(page.locator('[data-status="scheduled"]').first).to_be_visible()
    screenshot(page, "jobs")
    page.goto(f"{deployment.base_url}/jobs/{flaky}")
    expect(page.locator("table.attempts tbody tr")).to_have_count(2)
    expect(page.locator("pre.result")).to_contain_text('"succeeded_on_attempt": 2')
    screenshot(page, "job")
    page.goto(f"{deployment.base_url}/workers")
    expect(page.locator('tr[data-worker="browser-worker"]')).to_be_visible()
    screenshot(page, "workers")
    # And at phone width nothing scrolls sideways but the tables in their boxes
    page.set_viewport_size(PHONE)
    for path in ("/", "/jobs", f"/jobs/{flaky}"):
        page.goto(deployment.base_url + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
    screenshot(page, "job-phone")


@pytest.mark.parametrize("page", [{"scheme": "dark"}], indirect=True)
def test_dark_mode_follows_the_system(page, deployment, worker):
    sign_in(page, deployment.base_url)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 20, 25)"
    screenshot(page, "overview-dark")


def test_job_data_is_shown_as_text_never_run(page, deployment, worker):
    # Given a job whose payload and error hold markup
    job_id = deployment.post(type="fail", queue="default", max_retries=0, payload={"html": XSS, "message": XSS})
    job_id = job_id.json()["id"]
    wait_status(deployment, job_id, "dead")
    # When its page and the jobs table are opened
    sign_in(page, deployment.base_url, path=f"/jobs/{job_id}")
    # Then the markup reads as text, and no script of it ran (the page fixture fails on any dialog)
    expect(page.locator("pre.payload")).to_contain_text(XSS)
    expect(page.locator("pre.error-text").first).to_contain_text(XSS)
    page.goto(f"{deployment.base_url}/jobs?queue=default&status=dead")
    expect(page.locator(f'tr[data-job-id="{job_id}"] td.error')).to_contain_text(XSS)


def test_a_read_only_key_sees_no_action_and_a_forged_one_is_refused(page, deployment, worker):
    job_id = deployment.post(type="fail", queue="default", max_retries=0, payload={}).json()["id"]
    wait_status(deployment, job_id, "dead")
    sign_in(page, deployment.base_url, key=READONLY_KEY, path=f"/jobs/{job_id}")
    expect(page.locator(".job-status .badge")).to_have_text("dead")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    page.goto(f"{deployment.base_url}/queues")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    # A request the page could have sent, with the session's own CSRF token: still refused
    token = page.locator('form.who input[name="csrf_token"]').get_attribute("value")
    answer = page.request.post(f"{deployment.base_url}/jobs/{job_id}/retry", form={"csrf_token": token})
    assert answer.status == 403
    assert job_status(deployment, job_id) == "dead"


def test_signing_out_ends_the_session(page, deployment):
    sign_in(page, deployment.base_url)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    page.goto(f"{deployment.base_url}/jobs")
    expect(page.get_by_label("API key")).to_be_visible()
    assert requests.get(f"{deployment.base_url}/v1/queues", headers=AUTH, timeout=10).status_code == 200


def test_an_opened_traceback_stays_open_while_the_page_refreshes(page, deployment, worker):
    job_id = deployment.post(type="fail", queue="default", max_retries=0, payload={"message": "boom"}).json()["id"]
    wait_status(deployment, job_id, "dead")
    sign_in(page, deployment.base_url, path=f"/jobs/{job_id}")
    page.locator("table.attempts summary").first.click()
    stamp = page.locator(".as-of time").get_attribute("datetime")
    expect(page.locator(".as-of time")).not_to_have_attribute("datetime", stamp)  # refreshed since
    assert page.locator("table.attempts details").first.evaluate("element => element.open")
