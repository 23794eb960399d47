"""The store contract for webhooks: the table, and the outbox (a delivery job per event and
matching webhook, written in the transaction of the change). SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from quorra.access import ALL_TENANTS
from quorra.jobs import Job, JobStatus
from quorra.schema import jobs
from quorra.store import Settlement, Store, WebhookNotFound
from quorra.store.base import to_job
from quorra.store.settling import Settling
from quorra.webhooks import DELIVER_TYPE, WEBHOOK_QUEUE, Delivery, WebhookSpec, new_secret
from quorra.workflows import parse_workflow
from tests.factories import dependant_of, leased_job, make_job
from tests.support.tenants import leased_job_of

S = JobStatus


def add_webhook(store: Store, **fields) -> str:
    body = {"url": "https://example.com/hooks", "events": ["job.succeeded"]} | fields
    return store.create_webhook(WebhookSpec.parse(body), new_secret()).id


def deliveries(store: Store) -> list[Job]:
    return store.list_jobs(queue=WEBHOOK_QUEUE, limit=500).jobs


def delivered(store: Store) -> list[tuple[str, str, str]]:
    """(webhook id, event, job id) of every delivery waiting, sorted."""
    found = []
    for job in deliveries(store):
        delivery = Delivery.from_payload(job.payload)
        found.append((delivery.webhook_id, delivery.event, delivery.job["id"]))
    return sorted(found)


# -- the table ---------------------------------------------------------------------------------


def test_a_webhook_is_kept_with_its_secret_and_filters(store):
    secret = new_secret()
    spec = WebhookSpec.parse(
        {"url": "http://x.test/h", "events": ["job.dead", "job.failed"], "queues": ["a"], "description": "pager"}
    )

    created = store.create_webhook(spec, secret)

    read = store.get_webhook(created.id)
    assert read == created
    assert read.secret == secret and read.queues == ("a",) and read.types is None
    assert [event.value for event in read.events] == ["job.dead", "job.failed"]
    assert [webhook.id for webhook in store.list_webhooks()] == [created.id]


def test_a_deleted_webhook_is_gone_and_an_unknown_one_is_not_found(store):
    webhook_id = add_webhook(store)

    store.delete_webhook(webhook_id)

    for unknown in (webhook_id, str(uuid.uuid4()), "not-an-id"):
        with pytest.raises(WebhookNotFound):
            store.get_webhook(unknown)
        with pytest.raises(WebhookNotFound):
            store.delete_webhook(unknown)
    assert store.list_webhooks() == []


# -- the outbox --------------------------------------------------------------------------------


def test_with_no_webhook_a_settle_writes_no_delivery(store):
    job = leased_job(store)

    store.ack(job.id, job.lease_id)

    assert deliveries(store) == []


def test_an_ack_enqueues_one_delivery_per_webhook_wanting_job_succeeded(store):
    # Given two webhooks for job.succeeded and one for job.dead only
    first, second = add_webhook(store), add_webhook(store)
    add_webhook(store, events=["job.dead"])
    job = leased_job(store, payload={"n": 1})

    # When the job is acked
    store.ack(job.id, job.lease_id, {"sent": True})

    # Then each of the two has a delivery of job.succeeded, with the job as it was settled
    assert delivered(store) == sorted([(first, "job.succeeded", job.id), (second, "job.succeeded", job.id)])
    delivery = deliveries(store)[0]
    assert (delivery.type, delivery.status, delivery.max_retries) == (DELIVER_TYPE, S.PENDING, 10)
    snapshot = Delivery.from_payload(delivery.payload).job
    assert snapshot["status"] == "succeeded" and snapshot["result"] == {"sent": True}
    assert snapshot["payload"] == {"n": 1} and snapshot["attempts"] == 1
    assert snapshot["finished_at"].endswith("Z") and "lease_id" not in snapshot


def test_each_event_status_is_announced_by_its_own_verb(store):
    hook = add_webhook(store, events=["job.succeeded", "job.failed", "job.dead", "job.cancelled"])
    acked, failed, reaped = (leased_job(store) for _ in range(3))
    dead = leased_job(store, max_retries=0)
    pending = make_job(store)

    store.settle_many(
        [
            Settlement(acked.id, acked.lease_id, True),
            Settlement(failed.id, failed.lease_id, False, error="boom"),
            Settlement(dead.id, dead.lease_id, False, error="boom"),
        ]
    )
    store.cancel(pending.id)
    [expired] = store.reap_expired_leases(now=store.database_now() + timedelta(hours=1))

    assert expired.id == reaped.id
    assert delivered(store) == sorted(
        [
            (hook, "job.succeeded", acked.id),
            (hook, "job.failed", failed.id),
            (hook, "job.dead", dead.id),
            (hook, "job.cancelled", pending.id),
            (hook, "job.failed", reaped.id),
        ]
    )


def test_filters_by_queue_and_type_choose_the_jobs(store):
    by_queue = add_webhook(store, queues=["billing", "mail"])
    by_type = add_webhook(store, types=["invoice"])
    both = add_webhook(store, queues=["billing"], types=["invoice"])
    invoice = leased_job(store, queue="billing", type="invoice")
    mail = leased_job(store, queue="mail", type="send")
    other = leased_job(store, queue="other", type="send")

    for job in (invoice, mail, other):
        store.ack(job.id, job.lease_id)

    assert delivered(store) == sorted(
        [
            (by_queue, "job.succeeded", invoice.id),
            (by_type, "job.succeeded", invoice.id),
            (both, "job.succeeded", invoice.id),
            (by_queue, "job.succeeded", mail.id),
        ]
    )


def test_a_stale_ack_announces_nothing(store):
    add_webhook(store)
    job = leased_job(store)
    store.cancel(job.id)  # not an event this webhook wants

    with pytest.raises(Exception, match="cancelled"):
        store.ack(job.id, job.lease_id)

    assert deliveries(store) == []


def test_a_settle_whose_transaction_fails_announces_nothing(store, monkeypatch):
    # Given a webhook, and a settle transaction that fails after its UPDATE (and outbox) ran
    add_webhook(store)
    job = leased_job(store)
    unknown = str(uuid.uuid4())

    def fail(*args, **kwargs):
        raise RuntimeError("the transaction fails after the settle")

    monkeypatch.setattr(Settling, "_statuses", fail)

    # When the batch (one ack and one unknown job, so the failing read runs) is settled
    with pytest.raises(RuntimeError):
        store.settle_many([Settlement(job.id, job.lease_id, True), Settlement(unknown, str(uuid.uuid4()), True)])

    # Then the ack rolled back, and its delivery with it
    assert store.get_job(job.id).status is S.LEASED
    assert deliveries(store) == []


def test_deliveries_announce_no_events_of_their_own(store):
    add_webhook(store, events=["job.succeeded", "job.dead"])
    job = leased_job(store)
    store.ack(job.id, job.lease_id)
    [delivery] = store.lease_jobs([WEBHOOK_QUEUE], "deliverer", 10, 30)

    store.ack(delivery.id, delivery.lease_id)

    assert [job.status for job in deliveries(store)] == [S.SUCCEEDED]


def test_a_webhooks_max_retries_is_its_deliveries(store):
    add_webhook(store, max_retries=2)
    job = leased_job(store)

    store.ack(job.id, job.lease_id)

    assert [delivery.max_retries for delivery in deliveries(store)] == [2]


# -- with dependencies and workflows -------------------------------------------------------------


def test_dependants_cancelled_by_a_dead_parent_are_announced(store):
    hook = add_webhook(store, events=["job.dead", "job.cancelled"])
    parent = leased_job(store, max_retries=0)
    child = dependant_of(store, parent)
    grandchild = dependant_of(store, child)

    store.nack(parent.id, parent.lease_id, "boom")

    assert delivered(store) == sorted(
        [(hook, "job.dead", parent.id), (hook, "job.cancelled", child.id), (hook, "job.cancelled", grandchild.id)]
    )


def test_a_completed_workflow_is_announced_once_to_the_webhooks_that_want_it(store):
    # Given a webhook for workflow.completed (its queue filter chooses jobs, not workflows)
    hook = add_webhook(store, events=["workflow.completed"], queues=["elsewhere"])
    add_webhook(store, events=["job.succeeded"], queues=["elsewhere"])
    queue = f"wf-{uuid.uuid4().hex[:8]}"
    step = {"type": "step", "payload": {}, "queue": queue, "max_retries": 0}
    body = {"name": "pair", "jobs": [step | {"ref": "a"}, step | {"ref": "b", "depends_on": ["a"]}]}
    workflow, _ = store.submit_workflow(parse_workflow(body))

    # When its jobs run in turn, the second failing for good
    while leased := store.lease_jobs([queue], "w", 10, 30):
        store.settle_many([Settlement(j.id, j.lease_id, j.ref == "a", error="boom") for j in leased])

    # Then one delivery carries the workflow, its outcome and its counts
    [delivery] = deliveries(store)
    sent = Delivery.from_payload(delivery.payload)
    assert (sent.webhook_id, sent.event, sent.subject) == (hook, "workflow.completed", "workflow")
    assert sent.document | {"created_at": None, "finished_at": None} == {
        "id": workflow.id,
        "name": "pair",
        "status": "failed",
        "created_at": None,
        "finished_at": None,
        "counts": {"succeeded": 1, "dead": 1},
    }
    assert sent.occurred_at == sent.document["finished_at"]
    assert json.loads(sent.body())["data"]["workflow"]["id"] == workflow.id


def test_a_webhook_created_elsewhere_is_seen_by_the_next_settle(store, database_url):
    # Given a store (a process) that settled without any webhook, so it settles without the outbox
    first = leased_job(store)
    store.ack(first.id, first.lease_id)
    # When another process creates a webhook, and this one settles again
    other = Store.from_url(database_url)
    try:
        hook = add_webhook(other)
    finally:
        other.close()
    job = leased_job(store)
    store.ack(job.id, job.lease_id)
    # Then the event of that settle is delivered, and only that one
    assert delivered(store) == [(hook, "job.succeeded", job.id)]


def test_a_batch_of_stale_leases_settles_nothing_with_or_without_webhooks(store):
    job = leased_job(store)
    store.cancel(job.id)
    stale = [Settlement(job.id, job.lease_id, True)]

    assert store.settle_many(stale)[0].job is None
    add_webhook(store)
    assert store.settle_many(stale)[0].job is None
    assert deliveries(store) == []


# -- tenants -----------------------------------------------------------------------------------


def test_a_webhook_hears_its_own_tenants_events_only(store):
    # Given a webhook of each of two tenants, for every job event, and none of the default tenant's
    acme = store.create_webhook(WebhookSpec.parse(EVERY_EVENT), new_secret(), tenant="acme")
    globex = store.create_webhook(WebhookSpec.parse(EVERY_EVENT), new_secret(), tenant="globex")
    mine, theirs, nobodys = (leased_job_of(store, t) for t in ("acme", "globex", "default"))

    # When a job of each tenant succeeds
    store.settle_many([Settlement(j.id, j.lease_id, True) for j in (mine, theirs, nobodys)], tenant=ALL_TENANTS)

    # Then each tenant's webhook has its own tenant's event, in a delivery of its tenant
    sent = [(d.tenant, Delivery.from_payload(d.payload)) for d in all_deliveries(store)]
    waiting = {(tenant, delivery.webhook_id, delivery.job["id"]) for tenant, delivery in sent}
    assert waiting == {("acme", acme.id, mine.id), ("globex", globex.id, theirs.id)}


def test_a_failed_workflow_is_announced_to_its_tenants_webhooks_only(store):
    store.create_webhook(WebhookSpec.parse({**EVERY_EVENT, "events": ["workflow.completed"]}), new_secret(), tenant="b")
    hook = add_webhook(store, events=["workflow.completed"])
    queue = f"wf-{uuid.uuid4().hex[:8]}"
    store.submit_workflow(parse_workflow({"jobs": [{"ref": "a", "type": "t", "payload": {}, "queue": queue}]}))

    [leased] = store.lease_jobs([queue], "w", 1, 30)
    store.ack(leased.id, leased.lease_id)

    [delivery] = all_deliveries(store)
    assert (delivery.tenant, Delivery.from_payload(delivery.payload).webhook_id) == ("default", hook)


def test_another_tenants_webhook_is_not_found_and_stays(store):
    created = store.create_webhook(WebhookSpec.parse(EVERY_EVENT), new_secret(), tenant="acme")

    with pytest.raises(WebhookNotFound):
        store.get_webhook(created.id)
    with pytest.raises(WebhookNotFound):
        store.delete_webhook(created.id, tenant="globex")
    assert store.list_webhooks(tenant="globex") == [] and store.list_webhooks() == []
    assert store.list_webhooks(tenant="acme") == [created]
    assert store.get_webhook(created.id, tenant="acme") == created


EVERY_EVENT = {
    "url": "https://example.com/hooks",
    "events": ["job.succeeded", "job.failed", "job.dead", "job.cancelled"],
}


def all_deliveries(store: Store) -> list[Job]:
    """The deliveries waiting, of every tenant (read as they are stored)."""
    with store.engine.connect() as conn:
        return [to_job(row) for row in conn.execute(select(jobs).where(jobs.c.queue == WEBHOOK_QUEUE))]
