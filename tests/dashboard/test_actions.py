"""The dashboard's actions: each changes state through the manager, needs its CSRF token,
and sends the browser back to a page showing the outcome."""

from __future__ import annotations

import pytest

from quorra.limits import Limits, Rate
from quorra.store import AuditFilter
from tests.dashboard.conftest import READONLY_KEY, post, text
from tests.factories import dead_job, make_job, succeeded_job


def test_retry_puts_a_dead_job_back_in_line(client, store):
    job = dead_job(store)
    response = post(client, f"/jobs/{job.id}/retry")
    assert response.status_code == 302 and response.headers["Location"] == f"/jobs/{job.id}"
    assert store.get_job(job.id).status.value == "pending"
    assert "The job is back in line." in text(client.get(response.headers["Location"]))


def test_cancel_cancels_a_pending_job(client, store):
    job = make_job(store)
    assert post(client, f"/jobs/{job.id}/cancel").status_code == 302
    assert store.get_job(job.id).status.value == "cancelled"


def test_an_action_the_job_s_state_forbids_is_a_message_not_an_error(client, store):
    job = succeeded_job(store)
    response = client.post(
        f"/jobs/{job.id}/cancel",
        data={"csrf_token": _token(client)},
        headers={"Referer": f"http://localhost/jobs/{job.id}"},
    )
    assert response.status_code == 302 and response.headers["Location"] == f"/jobs/{job.id}"
    assert "cannot cancel a job that is succeeded" in text(client.get(f"/jobs/{job.id}"))


@pytest.mark.parametrize("verb", ["retry", "cancel"])
def test_an_action_without_the_csrf_token_is_refused(client, store, verb):
    job = dead_job(store) if verb == "retry" else make_job(store)
    before = store.get_job(job.id).status
    for data in ({}, {"csrf_token": "forged"}):
        response = client.post(f"/jobs/{job.id}/{verb}", data=data)
        assert response.status_code == 400
        assert "The form was refused" in text(response)
    assert store.get_job(job.id).status == before


def test_an_action_of_another_session_s_token_is_refused(app, client, store):
    stranger = app.test_client()
    from tests.conftest import TEST_API_KEY
    from tests.dashboard.conftest import sign_in

    sign_in(stranger, TEST_API_KEY)
    job = dead_job(store)
    response = client.post(f"/jobs/{job.id}/retry", data={"csrf_token": _token(stranger)})
    assert response.status_code == 400
    assert store.get_job(job.id).status.value == "dead"


def test_an_action_without_a_session_is_sent_to_sign_in(anonymous, store):
    job = dead_job(store)
    response = anonymous.post(f"/jobs/{job.id}/retry")
    assert response.status_code == 302 and response.headers["Location"] == "/signin"
    assert store.get_job(job.id).status.value == "dead"


def test_retry_all_puts_every_dead_job_of_the_queue_back(client, store):
    dead = [dead_job(store, queue="email") for _ in range(3)]
    elsewhere = dead_job(store, queue="images")
    response = post(client, "/dead/retry", queue="email")
    assert response.status_code == 302 and response.headers["Location"] == "/dead?queue=email"
    assert {store.get_job(job.id).status.value for job in dead} == {"pending"}
    assert store.get_job(elsewhere.id).status.value == "dead"
    assert "3 dead jobs of email back in line." in text(client.get(response.headers["Location"]))


def test_bulk_actions_need_a_queue(client, store):
    dead_job(store, queue="email")
    response = post(client, "/dead/retry")
    assert response.status_code == 302
    assert "choose a queue first" in text(client.get("/"))


def test_pause_and_resume_a_queue(client, store):
    make_job(store, queue="email")
    assert post(client, "/queues/email/pause").status_code == 302
    assert "email" in store.paused_queues()
    assert "Queue email is paused" in text(client.get("/queues"))
    assert post(client, "/queues/email/resume").status_code == 302
    assert "email" not in store.paused_queues()


def test_set_and_lift_a_queues_limits_from_the_queues_page(client, store):
    # Given a queue, on the queues page with its limits form
    make_job(store, queue="email")
    assert 'name="max_in_flight"' in text(client.get("/queues"))
    # When an operator sets its limits there
    form = {"queue": "email", "max_in_flight": "3", "rate_limit": "50", "rate_per": "minute"}
    response = post(client, "/queues/limits", **form)
    # Then they hold, the page says so and lists them, and the action is audited
    assert response.status_code == 302
    assert store.queue_limits() == {"email": Limits(3, Rate(50, 60))}
    page = text(client.get("/queues"))
    assert "Limits of queue email: 3 in flight, 50 started per minute." in page
    assert "≤ 3 in flight" in page and "50 / minute" in page
    actions = [record.action for record in store.list_audit(AuditFilter()).records]
    assert [action for action in actions if action != "dashboard.signin"] == ["queue.limits"]
    # And empty fields lift them
    post(client, "/queues/limits", queue="email", max_in_flight="", rate_limit="")
    assert store.queue_limits() == {}


@pytest.mark.parametrize(
    "form, message",
    [
        ({"queue": "email", "max_in_flight": "0"}, "max_in_flight: Input should be greater than or equal to 1"),
        ({"queue": "email", "max_in_flight": "two"}, "max_in_flight: Input should be a valid integer"),
        ({"queue": "email", "rate_limit": "5", "rate_per": "hour"}, "rate.per: Input should be &#39;second&#39;"),
        ({"queue": "bad name", "max_in_flight": "1"}, "invalid queue name"),
    ],
)
def test_invalid_limits_are_a_message_and_change_nothing(client, store, form, message):
    response = post(client, "/queues/limits", **form)
    assert response.status_code == 302
    assert message in text(client.get("/queues"))
    assert store.queue_limits() == {}


def test_a_bad_queue_name_is_a_message(client):
    response = post(client, "/queues/bad%20name/pause")
    assert response.status_code == 302
    assert "invalid queue name" in text(client.get("/"))


def _token(client) -> str:
    from tests.dashboard.conftest import csrf_token

    return csrf_token(client, "/")


# -- read-only keys -----------------------------------------------------------------------------


@pytest.fixture
def viewer(app):
    """Signed in with a key of QUORRA_READONLY_API_KEYS."""
    from tests.dashboard.conftest import sign_in

    client = app.test_client()
    assert sign_in(client, READONLY_KEY).status_code == 302
    return client


def test_a_read_only_user_sees_every_page_but_no_action(viewer, store):
    dead = dead_job(store, queue="email")
    pending = make_job(store, queue="images")
    pages = ["/", "/jobs", f"/jobs/{dead.id}", f"/jobs/{pending.id}", "/dead?queue=email", "/queues"]
    for path in pages:
        response = viewer.get(path)
        assert response.status_code == 200, path
        page = text(response)
        assert page.count('method="post"') == 1, path  # sign-out's, and no action's
    assert "viewer" in text(viewer.get("/"))


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/jobs/{dead}/retry", {}),
        ("/jobs/{pending}/cancel", {}),
        ("/jobs/{dead}/delete", {}),
        ("/dead/retry", {"queue": "email"}),
        ("/dead/delete", {"queue": "email"}),
        ("/queues/email/pause", {}),
        ("/queues/limits", {"queue": "email", "max_in_flight": "1"}),
    ],
)
def test_a_read_only_user_s_actions_are_refused_with_a_valid_csrf_token(viewer, store, path, form):
    dead = dead_job(store, queue="email")
    pending = make_job(store, queue="email")
    response = post(viewer, path.format(dead=dead.id, pending=pending.id), **form)
    assert response.status_code == 403
    assert "read-only" in text(response)
    assert store.get_job(dead.id).status.value == "dead"
    assert store.get_job(pending.id).status.value == "pending"
    assert store.paused_queues() == {}
    assert store.queue_limits() == {}


def test_delete_removes_a_finished_job_and_its_attempts(client, store):
    job = dead_job(store, queue="email")
    response = post(client, f"/jobs/{job.id}/delete")
    assert response.status_code == 302 and response.headers["Location"] == "/jobs?queue=email"
    assert f"Job {job.id} is deleted." in text(client.get(response.headers["Location"]))
    assert client.get(f"/jobs/{job.id}").status_code == 404


def test_a_job_still_waiting_is_not_deleted(client, store):
    job = make_job(store)
    response = client.post(
        f"/jobs/{job.id}/delete",
        data={"csrf_token": _token(client)},
        headers={"Referer": f"http://localhost/jobs/{job.id}"},
    )
    assert response.status_code == 302
    assert "cancel it first" in text(client.get(f"/jobs/{job.id}"))
    assert store.get_job(job.id).status.value == "pending"


def test_delete_all_removes_every_dead_job_of_the_queue_that_matches(client, store):
    dead = [dead_job(store, queue="email") for _ in range(2)]
    other_type = dead_job(store, queue="email", type="reminder")
    elsewhere = dead_job(store, queue="images")
    response = post(client, "/dead/delete", queue="email", type="email_send")
    assert response.status_code == 302 and response.headers["Location"] == "/dead?queue=email&type=email_send"
    assert "2 dead jobs of email deleted." in text(client.get(response.headers["Location"]))
    for job in dead:
        assert client.get(f"/jobs/{job.id}").status_code == 404
    assert store.get_job(other_type.id).status.value == "dead"
    assert store.get_job(elsewhere.id).status.value == "dead"


def test_retry_all_honours_the_time_range(client, store):
    old = dead_job(store, queue="email")
    later = old.created_at.strftime("%Y-%m-%dT%H:%M:%S")
    response = post(client, "/dead/retry", queue="email", until=later)
    assert response.status_code == 302
    assert "0 dead jobs of email back in line." in text(client.get(response.headers["Location"]))
    assert store.get_job(old.id).status.value == "dead"


def test_bulk_actions_honour_the_payload_search_and_refuse_a_job_id(client, store):
    ada = dead_job(store, queue="email", payload={"to": "ada@example.com"})
    bob = dead_job(store, queue="email", payload={"to": "bob@example.com"})
    assert "that matches this filter" in text(client.get("/dead?queue=email&q=ada"))

    response = post(client, "/dead/delete", queue="email", q="ADA")
    assert response.status_code == 302
    assert "1 dead job of email deleted." in text(client.get(response.headers["Location"]))
    assert client.get(f"/jobs/{ada.id}").status_code == 404
    assert store.get_job(bob.id).status.value == "dead"

    response = post(client, "/dead/retry", queue="email", q=bob.id)
    assert response.status_code == 302
    assert "act on it from its page" in text(client.get("/"))
    assert store.get_job(bob.id).status.value == "dead"
