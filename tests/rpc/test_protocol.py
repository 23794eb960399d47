"""The worker protocol through raw generated stubs: lease, extend, ack, nack, and every
refusal a worker can meet. Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import grpc
import pytest

from quorra.config import Settings
from quorra.jobs import JobStatus
from quorra.notify import PollingNotifier
from quorra.rpc import quorra_pb2 as pb2
from quorra.store import Store
from tests import factories
from tests.conftest import TEST_API_KEY, free_port
from tests.rpc.support import (
    AUTH,
    ack,
    extend,
    lease,
    nack,
    refusal,
    rpc_settings,
    running_server,
    stub_on,
)
from tests.worker.support import wait_until

C = grpc.StatusCode


def test_lease_extend_ack_with_a_raw_stub(stub, store):
    # Given a pending job
    job = factories.make_job(store, queue="raw", payload={"to": "a@example.com", "n": 1}, priority=3)

    # When a raw stub leases it, extends its lease, then acks it with a result
    [leased] = lease(stub, "raw", ttl=30)
    extended = extend(stub, leased, ttl=60)
    processing = store.get_job(job.id)
    reply = ack(stub, leased, result_json='{"sent": true}')

    # Then the job travelled leased -> processing -> succeeded, with every field on the wire
    assert (leased.id, leased.type, leased.queue, leased.priority) == (job.id, "email_send", "raw", 3)
    assert json.loads(leased.payload) == {"to": "a@example.com", "n": 1}
    assert (leased.attempts, leased.max_retries) == (1, 3)
    assert leased.created_at.ToDatetime().replace(microsecond=0) == job.created_at.replace(microsecond=0, tzinfo=None)
    assert leased.lease_expires_at.seconds > leased.created_at.seconds
    assert extended.status == "processing" and processing.status is JobStatus.PROCESSING
    assert extended.lease_expires_at.seconds >= leased.lease_expires_at.seconds + 29
    assert (reply.job_id, reply.status, reply.attempts) == (job.id, "succeeded", 1)
    done = store.get_job(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.result == {"sent": True}


def test_ack_with_a_wrong_lease_id_is_refused(stub, store):
    factories.make_job(store, queue="raw")
    [leased] = lease(stub, "raw")

    error = refusal(ack, stub, leased, lease_id=str(uuid.uuid4()))

    assert error.code() is C.FAILED_PRECONDITION
    assert "lease" in error.details()
    assert store.get_job(leased.id).status is JobStatus.LEASED


def test_a_second_ack_is_refused(stub, store):
    factories.make_job(store, queue="raw")
    [leased] = lease(stub, "raw")
    ack(stub, leased)

    error = refusal(ack, stub, leased)

    assert error.code() is C.FAILED_PRECONDITION
    assert "succeeded" in error.details()


def test_an_ack_after_the_lease_expired_is_refused(stub, store):
    factories.make_job(store, queue="raw")
    [leased] = lease(stub, "raw", ttl=1)
    time.sleep(1.2)  # the lease's own TTL: over the wire, there is no `now` to pass

    ack_error = refusal(ack, stub, leased)
    extend_error = refusal(extend, stub, leased)

    assert ack_error.code() is C.FAILED_PRECONDITION
    assert extend_error.code() is C.FAILED_PRECONDITION
    assert "expired" in ack_error.details()


def test_acking_an_unknown_job_is_not_found(stub):
    unknown = pb2.Job(id=str(uuid.uuid4()), lease_id=str(uuid.uuid4()))

    for call in (ack, nack, extend):
        error = refusal(call, stub, unknown)
        assert error.code() is C.NOT_FOUND, call.__name__
        assert unknown.id in error.details()


def test_nack_schedules_a_retry_after_the_backoff(stub, store):
    job = factories.make_job(store, queue="raw", max_retries=1)
    [leased] = lease(stub, "raw")

    reply = nack(stub, leased, "ValueError: boom")

    failed = store.get_job(job.id)
    assert (reply.status, reply.attempts) == ("failed", 1)
    assert failed.run_at - failed.updated_at == timedelta(seconds=2)
    assert reply.run_at.ToDatetime().replace(microsecond=0) == failed.run_at.replace(microsecond=0, tzinfo=None)
    assert failed.last_error == "ValueError: boom"


def test_nack_of_the_last_attempt_moves_the_job_to_the_dead_letter_queue(stub, store):
    job = factories.make_job(store, queue="raw", max_retries=0)
    [leased] = lease(stub, "raw")

    reply = nack(stub, leased, "still failing")

    assert (reply.status, reply.attempts) == ("dead", 1)
    assert not reply.HasField("run_at")
    assert store.get_job(job.id).status is JobStatus.DEAD


def test_lease_takes_several_queues_best_first_up_to_max_jobs(stub, store):
    low = factories.make_job(store, queue="q1", priority=1)
    high = factories.make_job(store, queue="q2", priority=9)
    middle = factories.make_job(store, queue="q1", priority=5)
    factories.make_job(store, queue="elsewhere", priority=100)

    jobs = lease(stub, "q1", max_jobs=2, queues=["q2"])
    rest = lease(stub, "q1", max_jobs=10, queues=["q2", "q1"])

    assert [j.id for j in jobs] == [high.id, middle.id]
    assert [j.id for j in rest] == [low.id]
    assert len({j.lease_id for j in jobs + rest}) == 3


def test_a_long_poll_ends_empty_when_nothing_comes(stub):
    call = stub.LeaseJobs(pb2.LeaseRequest(worker_id="w", queue="idle", wait_seconds=0.3), metadata=AUTH, timeout=10)

    assert list(call) == []
    assert call.code() is C.OK


def test_a_long_poll_is_woken_by_a_publish(server_settings, store):
    # A notifier that would re-check only every 60 s: the job can only come by a wake-up
    notifier = PollingNotifier(interval=60)
    patient = server_settings.model_copy(update={"lease_wait_max_seconds": 10})
    with running_server(patient, store, notifier) as (_, port), stub_on(port) as stub:
        call = stub.LeaseJobs(pb2.LeaseRequest(worker_id="w", queue="wake", wait_seconds=10), metadata=AUTH, timeout=20)
        time.sleep(0.3)  # the call is waiting by now
        job = factories.make_job(store, queue="wake")
        notifier.publish("wake")

        assert [j.id for j in call] == [job.id]


def test_one_publish_for_more_jobs_than_a_long_poll_takes_wakes_the_next_one(server_settings, store):
    # Given two long polls for one job each, waiting on a queue, with no re-check to save them
    notifier = PollingNotifier(interval=120)
    patient = server_settings.model_copy(update={"lease_wait_max_seconds": 60})
    with running_server(patient, store, notifier) as (_, port), stub_on(port) as stub:
        request = pb2.LeaseRequest(worker_id="w", queue="wake", max_jobs=1, wait_seconds=60)
        calls = [stub.LeaseJobs(request, metadata=AUTH, timeout=90) for _ in range(2)]
        wait_until(lambda: notifier.hub.consumers_waiting("wake") == 2, what="both long polls waiting")

        # When two jobs come with one publish (a publish wakes one waiting long poll)
        jobs = [factories.make_job(store, queue="wake") for _ in range(2)]
        started = time.monotonic()
        notifier.publish("wake")

        # Then the one woken took a full batch and passed the wake-up on: each got a job,
        # long before the end of the other's wait (60 s), when it would lease once more anyway
        received = [[j.id for j in call] for call in calls]
    assert sorted(received) == sorted([[job.id] for job in jobs])
    assert time.monotonic() - started < 30


def test_the_wait_is_capped_by_the_server(server_settings, store, notifier):
    capped = server_settings.model_copy(update={"lease_wait_max_seconds": 0.2})
    with running_server(capped, store, notifier) as (_, port), stub_on(port) as stub:
        started = time.monotonic()
        jobs = lease(stub, "idle", wait=60)

    assert jobs == []
    assert time.monotonic() - started < 30  # half the 60 s asked for: only the cap ends it this soon


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"worker_id": ""}, "worker_id"),
        ({"queue": ""}, "queue"),
        ({"queue": "bad name"}, "queue"),
        ({"max_jobs": -1}, "max_jobs"),
        ({"max_jobs": 1001}, "max_jobs"),
        ({"lease_ttl_seconds": -5}, "lease_ttl_seconds"),
        ({"lease_ttl_seconds": 86401}, "lease_ttl_seconds"),
        ({"wait_seconds": -1.0}, "wait_seconds"),
        ({"wait_seconds": float("nan")}, "wait_seconds"),
    ],
)
def test_invalid_lease_requests_are_invalid_argument(stub, fields, problem):
    request = pb2.LeaseRequest(**({"worker_id": "w", "queue": "q"} | fields))

    error = refusal(stub.LeaseJobs, request, metadata=AUTH, timeout=10)

    assert error.code() is C.INVALID_ARGUMENT
    assert problem in error.details()


@pytest.mark.parametrize("result_json", ["{not json", '{"a": NaN}', "[" * 100 + "]" * 100, '"\\u0000"'])
def test_an_ack_with_an_unstorable_result_is_invalid_argument(stub, store, result_json):
    factories.make_job(store, queue="raw")
    [leased] = lease(stub, "raw")

    error = refusal(ack, stub, leased, result_json=result_json)

    assert error.code() is C.INVALID_ARGUMENT
    assert store.get_job(leased.id).status is JobStatus.LEASED  # still held: the worker may ack again


def test_an_extend_with_an_invalid_ttl_is_invalid_argument(stub, store):
    factories.make_job(store, queue="raw")
    [leased] = lease(stub, "raw")

    error = refusal(extend, stub, leased, ttl=-1)

    assert error.code() is C.INVALID_ARGUMENT


def test_a_database_outage_answers_unavailable():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    settings = rpc_settings(Settings(database_url=url, api_keys=(TEST_API_KEY,)))
    unreachable = Store.from_url(url)
    with running_server(settings, unreachable, PollingNotifier(1.0)) as (_, port), stub_on(port) as stub:
        error = refusal(lease, stub, "raw")
    unreachable.close()

    assert error.code() is C.UNAVAILABLE
