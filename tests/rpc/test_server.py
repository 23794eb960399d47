"""The server around the verbs: API keys, health, reflection, overload, undelivered leases,
metrics and graceful shutdown."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from quorra.config import Settings
from quorra.jobs import JobStatus
from quorra.notify import PollingNotifier
from quorra.rpc import quorra_pb2 as pb2
from quorra.rpc.server import create_server
from quorra.rpc.servicer import SERVICE_NAME, max_waiting_leases
from quorra.store import Store
from tests import factories
from tests.conftest import TEST_API_KEY, free_port
from tests.rpc.support import (
    AUTH,
    ack,
    lease,
    refusal,
    rpc_settings,
    running_server,
    stub_on,
)

C = grpc.StatusCode
LEASE = "/quorra.v1.WorkerService/LeaseJobs"


def _requests(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("quorra_grpc_requests_total", {"method": method, "code": code}) or 0.0


@pytest.mark.parametrize("metadata", [(), (("x-api-key", "wrong-key"),), (("x-api-key", ""),)])
def test_every_worker_call_needs_a_valid_api_key(stub, metadata):
    calls = [
        (stub.LeaseJobs, pb2.LeaseRequest(worker_id="w", queue="q")),
        (stub.AckJob, pb2.JobAck(job_id="x", lease_id="y")),
        (stub.NackJob, pb2.JobAck(job_id="x", lease_id="y")),
        (stub.ExtendLease, pb2.ExtendLeaseRequest(job_id="x", lease_id="y")),
    ]
    for call, request in calls:
        error = refusal(call, request, metadata=metadata, timeout=10)
        assert error.code() is C.UNAUTHENTICATED
        assert "x-api-key" in error.details()


def test_any_configured_key_is_accepted(store, settings, notifier):
    two_keys = rpc_settings(settings, api_keys=("first-key", "second-key"))
    with running_server(two_keys, store, notifier) as (_, port), stub_on(port) as stub:
        for key in two_keys.api_keys:
            assert (
                list(stub.LeaseJobs(pb2.LeaseRequest(worker_id="w", queue="q"), metadata=(("x-api-key", key),))) == []
            )


def test_a_readonly_key_may_not_lease_and_a_bearer_key_is_no_key(store, settings, notifier):
    keys = rpc_settings(settings, api_keys=("admin-key",), readonly_api_keys=("viewer-key",))
    with running_server(keys, store, notifier) as (_, port), stub_on(port) as stub:
        lease = pb2.LeaseRequest(worker_id="w", queue="q")
        denied = refusal(stub.LeaseJobs, lease, metadata=(("x-api-key", "viewer-key"),), timeout=10)
        bearer = refusal(stub.LeaseJobs, lease, metadata=(("authorization", "Bearer admin-key"),), timeout=10)

    assert denied.code() is C.PERMISSION_DENIED and "jobs:work" in denied.details()
    assert bearer.code() is C.UNAUTHENTICATED


def test_health_answers_without_a_key_and_reflection_lists_the_services(server):
    _, port = server
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        worker = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=AUTH, timeout=10
        )

    assert overall.status == worker.status == health_pb2.HealthCheckResponse.SERVING
    names = {service.name for service in answer.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


def _unreachable_postgres(_tmp_path) -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"


def _file_that_is_not_a_database(tmp_path) -> str:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database" * 100)
    return f"sqlite:///{garbage}"


@pytest.mark.parametrize("broken_database", [_unreachable_postgres, _file_that_is_not_a_database])
def test_health_is_not_serving_while_the_database_does_not_answer(tmp_path, broken_database):
    url = broken_database(tmp_path)
    broken = Store.from_url(url)
    settings = rpc_settings(Settings(database_url=url, api_keys=(TEST_API_KEY,)))
    with (
        running_server(settings, broken, PollingNotifier(1.0)) as (_, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    broken.close()

    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_too_many_long_polls_are_refused_while_acks_are_still_served(settings, store, notifier):
    # Given a 4-thread server whose long polls may hold 2 threads
    small = rpc_settings(settings, grpc_threads=4, lease_wait_max_seconds=30)
    assert max_waiting_leases(4) == 2
    with running_server(small, store, notifier) as (server, port), stub_on(port) as stub:
        polls = [
            stub.LeaseJobs(
                pb2.LeaseRequest(worker_id=f"w{n}", queue="idle", wait_seconds=30), metadata=AUTH, timeout=40
            )
            for n in range(2)
        ]
        _wait_until(lambda: server.servicer.waiting == 2)

        # When a third worker long-polls, and a worker acks
        refused = refusal(lease, stub, "idle", wait=30)
        unknown = pb2.JobAck(job_id=str(uuid.uuid4()), lease_id=str(uuid.uuid4()))
        answered = refusal(stub.AckJob, unknown, metadata=AUTH, timeout=10)

        # Then the poll is refused at once and the ack is still answered
        assert refused.code() is C.RESOURCE_EXHAUSTED
        assert answered.code() is C.NOT_FOUND
        for poll in polls:
            poll.cancel()


class PausingStore(Store):
    """The real store, stopping after a lease that found jobs until the test says go: the
    moment between the UPDATE and the send."""

    def __init__(self, engine):
        super().__init__(engine)
        self.leased, self.proceed = threading.Event(), threading.Event()

    def lease_jobs(self, *args, **kwargs):
        jobs = super().lease_jobs(*args, **kwargs)
        if jobs:
            self.leased.set()
            self.proceed.wait(10)
        return jobs


def test_a_lease_committed_but_not_delivered_is_handed_back_at_once(settings, store, notifier):
    # Given a worker whose call is cancelled after its jobs were leased, before they are sent
    jobs = [factories.make_job(store, queue="send") for _ in range(2)]
    released_before = (
        REGISTRY.get_sample_value("quorra_leases_released_total", {"tenant": "default", "queue": "send"}) or 0.0
    )
    pausing = PausingStore(store.engine)
    with running_server(rpc_settings(settings), pausing, notifier) as (_, port), stub_on(port) as stub:
        call = stub.LeaseJobs(pb2.LeaseRequest(worker_id="w", queue="send", max_jobs=2), metadata=AUTH, timeout=10)
        assert pausing.leased.wait(10)
        call.cancel()
        time.sleep(0.3)  # the cancellation reaches the server
        pausing.proceed.set()

        # Then both leases are handed back: ready again, their attempt not counted
        _wait_until(lambda: all(store.get_job(job.id).status is JobStatus.PENDING for job in jobs))
    assert [(j.attempts, j.lease_id) for j in map(store.get_job, (job.id for job in jobs))] == [(0, None)] * 2
    assert (
        REGISTRY.get_sample_value("quorra_leases_released_total", {"tenant": "default", "queue": "send"})
        == released_before + 2
    )


def test_a_lease_whose_send_fails_is_handed_back(settings, store, notifier):
    # Given a server that cannot send messages over 2,000 bytes, and three ready jobs, the
    # second too big to send
    small = factories.make_job(store, queue="send", priority=3)
    big = factories.make_job(store, queue="send", priority=2, payload={"blob": "x" * 5000})
    last = factories.make_job(store, queue="send", priority=1)
    server, port = create_server(
        rpc_settings(settings), store, notifier, "127.0.0.1:0", grpc_options=[("grpc.max_send_message_length", 2000)]
    )
    server.start()
    try:
        # When a worker leases all three: the first is sent, the second's send fails
        received = []
        with stub_on(port) as stub:
            call = stub.LeaseJobs(pb2.LeaseRequest(worker_id="w", queue="send", max_jobs=3), metadata=AUTH, timeout=10)
            with pytest.raises(grpc.RpcError):
                received.extend(call)
        # Then the job after the failed send is handed back at once (the failed one itself
        # only when gRPC reports the failure before the next send; else at lease expiry)
        _wait_until(lambda: store.get_job(last.id).status is JobStatus.PENDING)
    finally:
        server.stop(0)

    assert [job.id for job in received] == [small.id]
    assert store.get_job(small.id).status is JobStatus.LEASED
    assert store.get_job(big.id).status in (JobStatus.LEASED, JobStatus.PENDING)
    assert store.get_job(last.id).attempts == 0


def test_a_cancelled_long_poll_leases_nothing(settings, store, notifier):
    with (
        running_server(rpc_settings(settings, lease_wait_max_seconds=30), store, notifier) as (_, port),
        stub_on(port) as stub,
    ):
        call = stub.LeaseJobs(pb2.LeaseRequest(worker_id="w", queue="gone", wait_seconds=30), metadata=AUTH, timeout=40)
        time.sleep(0.3)
        call.cancel()
        time.sleep(0.2)
        job = factories.make_job(store, queue="gone")
        notifier.publish("gone")
        time.sleep(0.5)

        assert store.get_job(job.id).status is JobStatus.PENDING
        assert not REGISTRY.get_sample_value(
            "quorra_jobs_leased_total", {"tenant": "default", "queue": "gone", "type": "email_send"}
        )


def test_calls_are_counted_by_method_and_code(stub, store):
    ok_before, refused_before = _requests(LEASE, "OK"), _requests(LEASE, "UNAUTHENTICATED")

    lease(stub, "counted")
    refusal(stub.LeaseJobs, pb2.LeaseRequest(worker_id="w", queue="q"), timeout=10)

    assert _requests(LEASE, "OK") == ok_before + 1
    assert _requests(LEASE, "UNAUTHENTICATED") == refused_before + 1
    assert REGISTRY.get_sample_value("quorra_grpc_request_duration_seconds_count", {"method": LEASE}) >= 2


def test_stopping_ends_long_polls_at_once_and_refuses_new_calls(settings, store):
    server_settings = rpc_settings(settings, lease_wait_max_seconds=120)
    with running_server(server_settings, store, PollingNotifier(600)) as (server, port), stub_on(port) as stub:
        poll = stub.LeaseJobs(
            pb2.LeaseRequest(worker_id="w", queue="idle", wait_seconds=120), metadata=AUTH, timeout=150
        )
        time.sleep(0.3)
        started = time.monotonic()
        stopper = threading.Thread(target=server.stop, args=(120,))
        stopper.start()

        assert list(poll) == []  # the poll ended cleanly, with nothing leased
        stopper.join(120)
        assert time.monotonic() - started < 60  # half the 120 s grace (and wait): it did not wait them out
        assert refusal(lease, stub, "idle").code() is C.UNAVAILABLE


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_health_watches_and_long_polls_leave_room_for_acks(settings, store, notifier):
    # Given an 8-thread server that allows 4 health watches, and a job a worker holds
    small = rpc_settings(settings, grpc_threads=8, grpc_health_watches=4, lease_wait_max_seconds=30)
    factories.make_job(store, queue="held")
    with (
        running_server(small, store, notifier) as (server, port),
        stub_on(port) as stub,
        grpc.insecure_channel(f"127.0.0.1:{port}") as keyless,
    ):
        [job] = lease(stub, "held")

        # When 64 health watches are opened without a key, and every long poll allowed waits
        health = health_pb2_grpc.HealthStub(keyless)
        watches, first_answers = [], []
        for _ in range(64):
            watches.append(health.Watch(health_pb2.HealthCheckRequest(), timeout=60))
            first_answers.append(_first_answer(watches[-1]))
        polls = [
            stub.LeaseJobs(
                pb2.LeaseRequest(worker_id=f"w{n}", queue="idle", wait_seconds=30), metadata=AUTH, timeout=40
            )
            for n in range(max_waiting_leases(8))
        ]
        _wait_until(lambda: server.servicer.waiting == max_waiting_leases(8))

        # Then the ack is still served, and so are health checks
        settled = ack(stub, job)
        checked = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        for call in [*watches, *polls]:
            call.cancel()

    assert settled.status == "succeeded"
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    # the watches beyond the bound were refused at once, the others answered
    assert first_answers.count(C.RESOURCE_EXHAUSTED) == 60
    assert first_answers.count(health_pb2.HealthCheckResponse.SERVING) == 4


def test_open_health_watches_hold_no_thread(settings, store, notifier):
    with running_server(rpc_settings(settings, grpc_threads=4, grpc_health_watches=50), store, notifier) as (
        server,
        port,
    ):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watches, answers = [], []
            for _ in range(20):
                watches.append(health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest()))
                answers.append(_first_answer(watches[-1]))
            running = server.gate.running
            for watch in watches:
                watch.cancel()
        _wait_until(lambda: server.gate.watches.taken == 0)

    assert answers == [health_pb2.HealthCheckResponse.SERVING] * 20
    assert running == 0


def _first_answer(watch):
    try:
        return next(watch).status
    except grpc.RpcError as exc:
        return exc.code()
