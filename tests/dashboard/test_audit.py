"""The dashboard and the audit log: each sign-in and each action is recorded under the
signed-in key; the audit page is for keys with audit:read (the admin role) only."""

from __future__ import annotations

from quorra.audit import Action, Actor, AuditEntry
from tests.dashboard.conftest import READONLY_KEY, post, sign_in, text
from tests.factories import dead_job, make_job, succeeded_job


def actions(store) -> list[tuple[str, str | None]]:
    return [(record.action, record.target) for record in reversed(store.list_audit().records)]


def test_a_sign_in_is_recorded_with_who_and_the_role(client, store):
    [record] = store.list_audit().records
    assert record.action == "dashboard.signin" and record.actor.startswith("env-key:")
    assert record.target == record.actor and record.details == {"role": "admin"}
    assert record.remote_addr == "127.0.0.1"


def test_a_refused_sign_in_records_nothing(anonymous, store):
    assert sign_in(anonymous, "not-a-key").status_code == 401
    assert store.list_audit().records == []


def test_every_action_of_the_dashboard_is_recorded_under_the_signed_in_key(client, store):
    cancelled, retried, deleted = make_job(store), dead_job(store, queue="mail"), succeeded_job(store)
    dead_job(store, queue="mail")
    dead_job(store, queue="old")
    for path, form in [
        (f"/jobs/{cancelled.id}/cancel", {}),
        (f"/jobs/{retried.id}/retry", {}),
        (f"/jobs/{deleted.id}/delete", {}),
        ("/dead/retry", {"queue": "mail"}),
        ("/dead/delete", {"queue": "old"}),
        ("/queues/mail/pause", {}),
        ("/queues/mail/resume", {}),
    ]:
        assert post(client, path, **form).status_code == 302, path
    assert actions(store) == [
        ("dashboard.signin", store.list_audit().records[-1].actor),
        ("job.cancel", cancelled.id),
        ("job.retry", retried.id),
        ("job.delete", deleted.id),
        ("jobs.retry", "mail"),
        ("jobs.delete", "old"),
        ("queue.pause", "mail"),
        ("queue.resume", "mail"),
    ]
    assert {record.actor for record in store.list_audit().records} == {store.list_audit().records[-1].actor}


def test_the_audit_page_lists_entries_escaped_and_filters_by_action(client, store):
    store.retry_dead("q", audit=AuditEntry(Actor("key:x", "<script>x</script>"), Action.JOBS_RETRY_DEAD, "q"))
    page = text(client.get("/audit"))
    assert "jobs.retry_dead" in page and "dashboard.signin" in page
    assert "<script>x" not in page and "&lt;script&gt;x" in page
    only = text(client.get("/audit?action=jobs.retry_dead"))
    assert "key:x" in only and "env-key:" not in only.split("<tbody>", 1)[-1]


def test_the_audit_page_refuses_unknown_parameters_and_actions(client):
    response = client.get("/audit?actoin=job.cancel")
    assert response.status_code == 400 and "actoin" in text(response)
    assert client.get("/audit?action=made.up").status_code == 400


def test_the_nav_links_the_audit_page_only_for_keys_that_may_read_it(client, anonymous):
    assert 'href="/audit"' in text(client.get("/"))
    assert sign_in(anonymous, READONLY_KEY).status_code == 302
    assert 'href="/audit"' not in text(anonymous.get("/"))
    refused = anonymous.get("/audit")
    assert refused.status_code == 403 and "audit:read" in text(refused)
