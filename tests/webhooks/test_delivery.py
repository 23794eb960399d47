"""The deliverer against a real HTTP receiver, on both backends: signed as Standard Webhooks
prescribes (checked by hand, as a receiver without our library would, and with the
`standardwebhooks` package), retried with the job backoff after a 500, never sent to a
private address when that is refused, and dropped once its webhook is gone."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from urllib.parse import urlsplit

import pytest
import standardwebhooks

from quorra.delivery import AddressRefused, Deliverer, checked_address
from quorra.jobs import JobStatus
from quorra.manager import JobManager
from quorra.notify import PollingNotifier
from quorra.store import Store
from quorra.webhooks import WEBHOOK_QUEUE, WebhookSpec, new_secret
from tests.factories import leased_job
from tests.support.tenants import leased_job_of
from tests.webhooks.receiver import running_receiver

S = JobStatus
DEADLINE_SECONDS = 60.0  # generous: a retry is due 2 s after the failed attempt


@pytest.fixture
def receiver():
    with running_receiver() as receiver:
        yield receiver


def make_deliverer(settings, store: Store, **overrides) -> Deliverer:
    settings = settings.model_copy(update={"webhook_timeout_seconds": 10.0} | overrides)
    return Deliverer(settings, store, JobManager(store, PollingNotifier(1.0)), worker_id="deliverer-test")


def add_webhook(store: Store, url: str, **fields):
    body = {"url": url, "events": ["job.succeeded", "job.dead"]} | fields
    return store.create_webhook(WebhookSpec.parse(body), new_secret())


def succeed_a_job(store: Store, **overrides):
    job = leased_job(store, **overrides)
    return store.ack(job.id, job.lease_id, {"done": True})


def the_delivery(store: Store):
    [delivery] = store.list_jobs(queue=WEBHOOK_QUEUE).jobs
    return delivery


def deliver_until(deliverer: Deliverer, done, timeout: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the deliveries did not happen in time"
        if not deliverer.run_once():
            time.sleep(0.2)


def verify_by_hand(secret: str, headers: dict[str, str], body: bytes) -> None:
    """What a receiver does with nothing but hmac: HMAC-SHA256, keyed with the secret's
    base64-decoded bytes, of '<webhook-id>.<webhook-timestamp>.<body>', compared in constant
    time with each v1 signature of the header."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode()
    given = [part.split(",", 1)[1] for part in headers["webhook-signature"].split() if part.startswith("v1,")]
    assert any(hmac.compare_digest(expected, signature) for signature in given)
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 300


def test_a_delivery_is_signed_as_standard_webhooks_prescribes(settings, store, receiver):
    # Given a webhook and a job that succeeded
    webhook = add_webhook(store, receiver.url)
    job = succeed_a_job(store, payload={"to": "a@example.com"})

    # When the deliverer runs
    assert make_deliverer(settings, store).run_once() == 1

    # Then the receiver got one POST that verifies, by hand and with standardwebhooks
    [request] = receiver.wait_for(1)
    verify_by_hand(webhook.secret, request.headers, request.body)
    document = standardwebhooks.Webhook(webhook.secret).verify(request.body, request.headers)
    assert document == json.loads(request.body)
    assert (request.path, request.headers["content-type"]) == ("/hooks", "application/json")
    assert document["type"] == "job.succeeded"
    sent = document["data"]["job"]
    assert (sent["id"], sent["status"], sent["result"], sent["payload"]) == (
        job.id,
        "succeeded",
        {"done": True},
        {"to": "a@example.com"},
    )
    assert document["timestamp"] == sent["updated_at"] and sent["updated_at"].endswith("Z")
    # and the delivery, a job of its own, succeeded; its id is the message id
    delivery = the_delivery(store)
    assert request.headers["webhook-id"] == delivery.id
    assert (delivery.status, delivery.result) == (S.SUCCEEDED, {"status_code": 204})


def test_a_tampered_body_does_not_verify(settings, store, receiver):
    webhook = add_webhook(store, receiver.url)
    succeed_a_job(store)
    make_deliverer(settings, store).run_once()
    [request] = receiver.wait_for(1)

    tampered = request.body.replace(b"succeeded", b"cancelled")

    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(webhook.secret).verify(tampered, request.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(request.body, request.headers)


def test_a_delivery_answered_500_is_retried_after_its_backoff_and_then_succeeds(settings, store, receiver):
    # Given a receiver that answers 500 once, then 204
    add_webhook(store, receiver.url)
    succeed_a_job(store)
    receiver.statuses.append(500)
    deliverer = make_deliverer(settings, store)

    # When the deliverer runs: the first attempt fails and is retried after the backoff
    assert deliverer.run_once() == 1
    failed = the_delivery(store)
    assert failed.status is S.FAILED and "answered 500: nope :(" in failed.last_error
    deliver_until(deliverer, lambda: len(receiver.requests) == 2)

    # Then the second attempt, the same message (webhook-id) signed anew, succeeded
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == failed.id
    assert first.body == second.body
    delivery = the_delivery(store)
    assert (delivery.status, delivery.attempts) == (S.SUCCEEDED, 2)


def test_a_delivery_out_of_retries_is_dead(settings, store, receiver):
    add_webhook(store, receiver.url, max_retries=0)
    succeed_a_job(store)
    receiver.statuses.append(503)

    make_deliverer(settings, store).run_once()

    delivery = the_delivery(store)
    assert delivery.status is S.DEAD and "answered 503" in delivery.last_error


def test_an_unreachable_receiver_is_a_failed_attempt(settings, store):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    add_webhook(store, f"http://127.0.0.1:{port}/hooks")
    succeed_a_job(store)

    make_deliverer(settings, store).run_once()

    delivery = the_delivery(store)
    assert delivery.status is S.FAILED and delivery.last_error.startswith(f"POST http://127.0.0.1:{port}/hooks failed")


def test_a_private_address_is_refused_when_not_allowed(settings, store, receiver):
    # Given QUORRA_WEBHOOK_ALLOW_PRIVATE=false and a webhook on a loopback address
    add_webhook(store, receiver.url)
    succeed_a_job(store)

    # When the deliverer runs
    make_deliverer(settings, store, webhook_allow_private=False).run_once()

    # Then nothing was sent, and the attempt failed saying why
    assert receiver.requests == []
    delivery = the_delivery(store)
    assert delivery.status is S.FAILED and "a private address" in delivery.last_error


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8080/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_every_kind_of_private_address_is_refused(url):
    with pytest.raises(AddressRefused, match="private address"):
        checked_address(urlsplit(url), allow_private=False)


def test_a_global_address_is_allowed_and_private_ones_are_when_allowed():
    assert checked_address(urlsplit("https://93.184.215.14/"), allow_private=False) == "93.184.215.14"
    assert checked_address(urlsplit("http://10.1.2.3/"), allow_private=True) == "10.1.2.3"


def test_the_connection_goes_to_the_address_checked_with_the_urls_host_header(settings, store, receiver, monkeypatch):
    # Given a name that resolves to the receiver's address (a stand-in for DNS)
    port = urlsplit(receiver.url).port
    real = socket.getaddrinfo
    looked_up = []

    def resolve(host, *args, **kwargs):
        looked_up.append(host)
        return real("127.0.0.1" if host == "hooks.example.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    add_webhook(store, f"http://hooks.example.test:{port}/in?x=1")
    succeed_a_job(store)

    make_deliverer(settings, store).run_once()

    # Then the name was resolved once, the address connected to, and the Host is the URL's
    [request] = receiver.wait_for(1)
    assert looked_up.count("hooks.example.test") == 1
    assert request.headers["host"] == f"hooks.example.test:{port}"
    assert request.path == "/in?x=1"


def test_deliveries_of_a_deleted_webhook_are_dropped(settings, store, receiver):
    webhook = add_webhook(store, receiver.url)
    succeed_a_job(store)
    store.delete_webhook(webhook.id)

    make_deliverer(settings, store).run_once()

    assert receiver.requests == []
    delivery = the_delivery(store)
    assert (delivery.status, delivery.result) == (S.SUCCEEDED, {"skipped": "the webhook was deleted"})


def test_a_dead_job_is_delivered_only_to_the_webhooks_of_its_queue(settings, store, receiver):
    add_webhook(store, receiver.url, events=["job.dead"], queues=["billing"])
    for queue in ("billing", "mail"):
        job = leased_job(store, queue=queue, max_retries=0)
        store.nack(job.id, job.lease_id, "boom")

    make_deliverer(settings, store).run_once()

    [request] = receiver.wait_for(1)
    sent = json.loads(request.body)
    assert (sent["type"], sent["data"]["job"]["queue"], sent["data"]["job"]["last_error"]) == (
        "job.dead",
        "billing",
        "boom",
    )


def test_a_tenants_webhook_never_gets_another_tenants_job_events(settings, store):
    # Given a webhook of each of two tenants, each posting to its own receiver
    with running_receiver() as acme_receiver, running_receiver() as globex_receiver:
        spec = WebhookSpec.parse({"url": acme_receiver.url, "events": ["job.succeeded", "job.dead"]})
        store.create_webhook(spec, new_secret(), tenant="acme")
        spec = WebhookSpec.parse({"url": globex_receiver.url, "events": ["job.succeeded", "job.dead"]})
        store.create_webhook(spec, new_secret(), tenant="globex")
        # When a job of each tenant finishes (and one of the default tenant, which has no webhook)
        finished = {}
        for tenant in ("acme", "globex", "default"):
            job = leased_job_of(store, tenant)
            finished[tenant] = store.ack(job.id, job.lease_id, tenant=tenant).id
        # and one deliverer delivers everything waiting, of every tenant
        deliverer = make_deliverer(settings, store)
        deliver_until(deliverer, lambda: len(acme_receiver.requests) + len(globex_receiver.requests) == 2)
        while deliverer.run_once():
            pass

        # Then each receiver got its own tenant's event only
        for receiver, tenant in ((acme_receiver, "acme"), (globex_receiver, "globex")):
            [request] = receiver.requests
            assert json.loads(request.body)["data"]["job"]["id"] == finished[tenant]
            assert json.loads(request.body)["data"]["job"]["tenant"] == tenant
