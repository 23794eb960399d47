"""The audit log in the store, on both backends: an entry is written in the transaction of
its action (so a refused action leaves none), read newest first with filters in keyset
pages, and pruned by age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quorra.audit import Action, Actor, AuditEntry
from quorra.errors import IllegalTransition, ScheduleNotFound
from quorra.jobs import JobStatus
from quorra.keys import KeySpec
from quorra.limits import Limits
from quorra.schedules import ScheduleSpec
from quorra.store import AuditFilter, JobFilter
from quorra.webhooks import WebhookSpec, new_secret
from tests.factories import dead_job, make_job, succeeded_job

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ALICE = Actor("key:alice-id", "alice", "default", "203.0.113.7", "req-1")


def entry(action: Action, target: str | None = None, actor: Actor = ALICE) -> AuditEntry:
    return AuditEntry(actor, action, target)


def only(store, **filters):
    return store.list_audit(AuditFilter(**filters)).records


def test_a_cancel_is_recorded_with_who_what_and_where(store):
    job = make_job(store)

    store.cancel(job.id, audit=entry(Action.JOB_CANCEL, job.id))

    [record] = only(store)
    assert (record.action, record.target, record.actor, record.actor_name) == (
        "job.cancel",
        job.id,
        "key:alice-id",
        "alice",
    )
    assert (record.tenant, record.remote_addr, record.request_id) == ("default", "203.0.113.7", "req-1")
    assert record.occurred_at is not None


def test_a_refused_action_leaves_no_entry(store):
    # Given a finished job, which cannot be cancelled
    job = succeeded_job(store)
    # When a cancel is refused
    with pytest.raises(IllegalTransition):
        store.cancel(job.id, audit=entry(Action.JOB_CANCEL, job.id))
    # Then its entry was rolled back with it
    assert only(store) == []


def test_a_schedule_delete_of_an_unknown_name_leaves_no_entry(store):
    with pytest.raises(ScheduleNotFound):
        store.delete_schedule("ghost", audit=entry(Action.SCHEDULE_DELETE, "ghost"))
    assert only(store) == []


def test_every_audited_store_verb_writes_its_entry(store):
    dead = dead_job(store, queue="payments")
    retried = dead_job(store, queue="other")
    spec = ScheduleSpec.parse({"name": "nightly", "cron": "0 3 * * *", "job": {"type": "report", "payload": {}}})

    store.retry(retried.id, audit=entry(Action.JOB_RETRY, retried.id))
    store.retry_dead("payments", audit=entry(Action.JOBS_RETRY_DEAD, "payments"))
    store.create_schedule(spec, audit=entry(Action.SCHEDULE_CREATE, "nightly"))
    store.update_schedule("nightly", {"timezone": "Europe/Paris"}, audit=entry(Action.SCHEDULE_UPDATE, "nightly"))
    store.set_schedule_paused("nightly", True, audit=entry(Action.SCHEDULE_PAUSE, "nightly"))
    store.set_schedule_paused("nightly", False, audit=entry(Action.SCHEDULE_RESUME, "nightly"))
    store.delete_schedule("nightly", audit=entry(Action.SCHEDULE_DELETE, "nightly"))
    created = store.create_api_key(
        KeySpec.parse({"name": "bot", "role": "worker"}), created_by=ALICE.subject, audit=entry(Action.KEY_CREATE)
    )
    store.revoke_api_key(created.key.id, audit=entry(Action.KEY_REVOKE, created.key.id))
    hook = store.create_webhook(
        WebhookSpec.parse({"url": "https://example.com/h", "events": ["job.dead"]}),
        new_secret(),
        audit=entry(Action.WEBHOOK_CREATE),
    )
    store.delete_webhook(hook.id, audit=entry(Action.WEBHOOK_DELETE, hook.id))
    dead_job(store, queue="bulk")
    store.retry_matching(JobFilter("bulk", JobStatus.DEAD), audit=entry(Action.JOBS_RETRY, "bulk"))
    gone = succeeded_job(store, queue="old")
    succeeded_job(store, queue="old")
    store.delete_job(gone.id, audit=entry(Action.JOB_DELETE, gone.id))
    store.delete_matching(JobFilter("old", JobStatus.SUCCEEDED), audit=entry(Action.JOBS_DELETE, "old"))
    store.set_queue_paused("bulk", True, audit=entry(Action.QUEUE_PAUSE, "bulk"))
    store.set_queue_paused("bulk", False, audit=entry(Action.QUEUE_RESUME, "bulk"))
    store.set_queue_limits("bulk", Limits(max_in_flight=3), audit=entry(Action.QUEUE_LIMITS, "bulk"))
    store.set_tenant_limits("acme", Limits(max_in_flight=9), audit=entry(Action.TENANT_LIMITS, "acme"))
    store.record_event(entry(Action.DASHBOARD_SIGNIN, ALICE.subject))

    records = list(reversed(only(store)))
    assert [r.action for r in records] == [
        "job.retry",
        "jobs.retry_dead",
        "schedule.create",
        "schedule.update",
        "schedule.pause",
        "schedule.resume",
        "schedule.delete",
        "key.create",
        "key.revoke",
        "webhook.create",
        "webhook.delete",
        "jobs.retry",
        "job.delete",
        "jobs.delete",
        "queue.pause",
        "queue.resume",
        "queue.limits",
        "tenant.limits",
        "dashboard.signin",
    ]
    assert {a.value for a in Action} == {r.action for r in records} | {"job.cancel"}  # every action is walked
    by_action = {r.action: r for r in records}
    assert by_action["jobs.retry_dead"].details == {"count": 1}
    assert by_action["key.create"].target == created.key.id
    assert by_action["key.create"].details["prefix"] == f"qk_{created.key.prefix}"
    assert by_action["key.revoke"].target == created.key.id
    assert by_action["webhook.create"].target == hook.id and hook.secret not in str(by_action["webhook.create"])
    assert store.get_job(dead.id).status.value == "pending"
    assert by_action["jobs.retry"].details == {"count": 1}
    assert by_action["job.delete"].details == {"queue": "old", "type": gone.type}
    assert by_action["jobs.delete"].details == {"count": 1}


def test_a_refused_delete_leaves_no_entry(store):
    job = make_job(store)
    with pytest.raises(IllegalTransition):
        store.delete_job(job.id, audit=entry(Action.JOB_DELETE, job.id))
    assert only(store) == []


def test_entries_are_listed_newest_first_in_keyset_pages(store):
    for minute in range(5):
        store.cancel(
            make_job(store).id, audit=entry(Action.JOB_CANCEL, f"job-{minute}"), now=T0 + timedelta(minutes=minute)
        )

    first = store.list_audit(limit=2)
    second = store.list_audit(limit=2, cursor=first.next_cursor)
    last = store.list_audit(limit=2, cursor=second.next_cursor)

    assert [r.target for r in first.records + second.records + last.records] == [f"job-{m}" for m in (4, 3, 2, 1, 0)]
    assert last.next_cursor is None


def test_entries_are_filtered_by_action_actor_target_and_time(store):
    bob = Actor("jwt:bob", "bob")
    store.cancel(make_job(store).id, audit=entry(Action.JOB_CANCEL, "a"), now=T0)
    store.retry_dead("q", audit=entry(Action.JOBS_RETRY_DEAD, "q", actor=bob), now=T0 + timedelta(hours=1))
    store.retry_dead("q", audit=entry(Action.JOBS_RETRY_DEAD, "q"), now=T0 + timedelta(hours=2))

    assert [r.target for r in only(store, action="job.cancel")] == ["a"]
    assert [r.occurred_at for r in only(store, actor="jwt:bob")] == [T0 + timedelta(hours=1)]
    assert len(only(store, target="q")) == 2
    window = only(store, since=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=2))
    assert [(r.actor, r.action) for r in window] == [("jwt:bob", "jobs.retry_dead")]


def test_old_entries_are_pruned_in_batches(store):
    for day in range(3):
        store.retry_dead("q", audit=entry(Action.JOBS_RETRY_DEAD, f"day-{day}"), now=T0 + timedelta(days=day))

    assert store.prune_audit(T0 + timedelta(days=2), limit=1) == 1
    assert store.prune_audit(T0 + timedelta(days=2), limit=10) == 1
    assert [r.target for r in only(store)] == ["day-2"]


def test_a_long_subject_is_cut_to_fit_rather_than_failing_the_action(store):
    long_actor = Actor("jwt:" + "s" * 1000, "n" * 1000)
    store.retry_dead("q", audit=entry(Action.JOBS_RETRY_DEAD, "q", actor=long_actor))
    [record] = only(store)
    assert len(record.actor) == 300 and len(record.actor_name) == 200


def test_each_tenant_reads_its_own_principals_entries_only(store):
    bob = Actor("key:bob-id", "bob", "acme")
    store.record_event(entry(Action.DASHBOARD_SIGNIN, "key:alice-id"))
    store.record_event(entry(Action.DASHBOARD_SIGNIN, "key:bob-id", actor=bob))

    assert [r.actor for r in only(store)] == ["key:alice-id"]
    assert [r.actor for r in store.list_audit(tenant="acme").records] == ["key:bob-id"]
    assert store.list_audit(AuditFilter(actor="key:alice-id"), tenant="acme").records == []
    assert store.list_audit(tenant="globex").records == []
