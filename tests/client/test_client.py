"""quorra.client.Client against the real server, on both backends: every method and every
error class."""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from quorra.api.openapi import spec as openapi_spec
from quorra.client import (
    Client,
    Conflict,
    InvalidArgument,
    Job,
    JobStatus,
    NotFound,
    PayloadTooLarge,
    SubmittedJob,
    Unauthenticated,
    Unavailable,
    Unreachable,
)
from quorra.client.models import DEV_API_KEY
from quorra.config import DEV_API_KEY as SERVER_DEV_API_KEY
from quorra.jobs import JobStatus as ServerJobStatus
from tests.conftest import TEST_API_KEY, free_port
from tests.factories import dead_job, make_job


def test_enqueue_sends_every_option_and_answers_a_typed_job(client, served):
    submitted = client.enqueue("email_send", {"to": "a@b.c"}, queue="email", priority=10, max_retries=5)

    assert isinstance(submitted, SubmittedJob) and submitted.status is JobStatus.PENDING
    assert submitted.run_at.tzinfo is not None
    job = served.store.get_job(submitted.id)
    assert (job.type, job.payload, job.queue, job.priority, job.max_retries) == (
        "email_send",
        {"to": "a@b.c"},
        "email",
        10,
        5,
    )


def test_enqueue_with_a_delay_or_a_run_at_sets_the_jobs_run_at(client, served):
    delayed = client.enqueue("t", delay=timedelta(minutes=5))
    later = client.enqueue("t", run_at=datetime.now(UTC) + timedelta(hours=1))

    assert delayed.run_at - served.store.get_job(delayed.id).created_at >= timedelta(seconds=299)
    assert later.run_at - served.store.get_job(later.id).created_at >= timedelta(minutes=59)


def test_enqueue_refuses_both_delay_and_run_at_locally(client):
    with pytest.raises(ValueError):
        client.enqueue("t", delay=5, run_at=datetime.now(UTC))


def test_every_submit_carries_its_own_idempotency_key(client, served):
    client.enqueue("t")
    client.enqueue("t")

    first, second = served.idempotency_keys
    assert uuid.UUID(first).version == 4 and first != second


def test_a_submit_refused_with_503_is_retried_with_the_same_idempotency_key(client, served):
    served.refuse_submits(2)

    submitted = client.enqueue("t")

    assert served.store.get_job(submitted.id).type == "t"
    assert len(served.idempotency_keys) == 3 and len(set(served.idempotency_keys)) == 1


def test_a_submit_refused_more_often_than_the_retries_raises_unavailable(served):
    served.refuse_submits(10)
    with Client(served.url, TEST_API_KEY, retries=1) as client, pytest.raises(Unavailable) as caught:
        client.enqueue("t")
    assert caught.value.status == 503 and caught.value.retry_after == 0
    assert len(served.idempotency_keys) == 2


def test_enqueue_many_sends_batches_of_a_thousand_in_order(client, served):
    jobs = [{"type": "t", "payload": {"n": n}, "queue": "bulk"} for n in range(1001)]

    created = client.enqueue_many(jobs)

    assert len(created) == 1001 and len(served.idempotency_keys) == 2
    assert served.store.get_job(created[1000].id).payload == {"n": 1000}


def test_a_refused_batch_names_the_bad_job_and_keeps_what_earlier_batches_created(client, served):
    jobs = [{"type": "t"}] * 1000 + [{"type": "t", "priority": 5000}]

    with pytest.raises(InvalidArgument) as caught:
        client.enqueue_many(jobs)

    assert "jobs[0].priority" in caught.value.fields
    assert len(caught.value.created) == 1000


def test_get_answers_the_job_with_parsed_fields(client, served):
    job = make_job(served.store, queue="q1")

    got = client.get(job.id)

    assert isinstance(got, Job) and (got.id, got.queue, got.status, got.payload) == (
        job.id,
        "q1",
        JobStatus.PENDING,
        job.payload,
    )
    assert got.created_at == job.created_at and got.finished_at is None and not got.is_finished


def test_cancel_and_retry_answer_the_job_as_it_is_now(client, served):
    job = make_job(served.store)

    assert client.cancel(job.id).status is JobStatus.CANCELLED
    assert client.retry(job.id).status is JobStatus.PENDING


def test_list_follows_the_cursor_across_pages(client, served):
    ids = {make_job(served.store, queue="many").id for _ in range(7)}
    make_job(served.store, queue="other")

    listed = list(client.list(queue="many", page_size=3))

    assert {job.id for job in listed} == ids and all(job.payload is None for job in listed)
    assert len(list(client.list(queue="many", page_size=3, limit=4))) == 4
    assert [job.status for job in client.list(status="pending", type="email_send", include=["payload"], limit=1)]


def test_queues_and_health(client, served):
    dead_job(served.store, queue="dlq")

    assert [(c.queue, c.status, c.count) for c in client.queues()] == [("dlq", JobStatus.DEAD, 1)]
    assert client.health()["status"] == "ready"


def test_an_unknown_job_is_not_found(client):
    with pytest.raises(NotFound) as caught:
        client.get(str(uuid.uuid4()))
    assert caught.value.status == 404 and caught.value.code == "not_found" and caught.value.request_id


def test_a_forbidden_transition_is_a_conflict(client, served):
    with pytest.raises(Conflict):
        client.retry(make_job(served.store).id)


def test_an_invalid_job_is_an_invalid_argument_naming_each_field(client):
    with pytest.raises(InvalidArgument) as caught:
        client.enqueue("bad name", priority=5000)
    assert set(caught.value.fields) == {"type", "priority"}


def test_a_payload_over_the_limit_is_payload_too_large(client, served):
    limit = served.services.settings.max_payload_bytes
    with pytest.raises(PayloadTooLarge):
        client.enqueue("t", {"blob": "x" * (limit * 2)})


def test_a_wrong_key_is_unauthenticated(served):
    with Client(served.url, "wrong") as client, pytest.raises(Unauthenticated):
        client.get(str(uuid.uuid4()))


def test_a_server_that_is_not_there_is_unreachable_after_the_retries():
    with Client(f"http://127.0.0.1:{free_port()}", retries=1) as client, pytest.raises(Unreachable) as caught:
        client.queues()
    assert not caught.value.request_sent and "cannot reach" in caught.value.message


def test_from_env_reads_the_url_and_the_first_key(served):
    environ = {"QUORRA_URL": served.url, "QUORRA_API_KEY": f" ,{TEST_API_KEY},other"}
    with Client.from_env(environ) as client:
        assert client.queues() == []


def test_the_clients_job_fields_and_statuses_are_the_servers():
    documented = openapi_spec()["components"]["schemas"]["JobDetail"]["properties"]
    assert {field.name for field in fields(Job)} == set(documented)
    assert [s.value for s in JobStatus] == [s.value for s in ServerJobStatus]
    assert DEV_API_KEY == SERVER_DEV_API_KEY
