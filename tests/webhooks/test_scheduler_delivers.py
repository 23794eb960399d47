"""`quorra scheduler` delivers webhooks (as under `make run` and in the deployments): a real
scheduler process, a real receiver, both backends."""

from __future__ import annotations

import json

from quorra.webhooks import WebhookSpec, new_secret
from tests.factories import leased_job
from tests.scheduler.processes import SchedulerProcess
from tests.webhooks.receiver import running_receiver


def test_the_scheduler_process_delivers_job_events(database_url, store):
    with running_receiver() as receiver:
        # Given a webhook and a running scheduler
        spec = WebhookSpec.parse({"url": receiver.url, "events": ["job.succeeded"]})
        store.create_webhook(spec, new_secret())
        scheduler = SchedulerProcess(database_url, QUORRA_WEBHOOK_POLL_INTERVAL="0.2s")
        try:
            scheduler.wait_for("deliverer.started")

            # When a job succeeds
            job = leased_job(store)
            store.ack(job.id, job.lease_id)

            # Then the scheduler's deliverer posts its event, and logs it
            [request] = receiver.wait_for(1)
            scheduler.wait_for("webhook.delivered", status_code=204)
        finally:
            assert scheduler.stop() == 0
    assert json.loads(request.body)["data"]["job"]["id"] == job.id


def test_no_deliverer_runs_when_its_concurrency_is_zero(database_url):
    scheduler = SchedulerProcess(database_url, QUORRA_WEBHOOK_CONCURRENCY="0")
    try:
        scheduler.wait_for("scheduler.started")
    finally:
        assert scheduler.stop() == 0
    assert scheduler.events("deliverer.started") == []
