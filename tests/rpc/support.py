"""A real gRPC server on a free port, and raw generated stubs to talk to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from quorra.config import Settings
from quorra.notify import Notifier, make_notifier
from quorra.rpc import quorra_pb2 as pb2
from quorra.rpc import quorra_pb2_grpc as pb2_grpc
from quorra.rpc.server import RpcServer, create_server
from quorra.store import Store
from tests.conftest import TEST_API_KEY

AUTH = (("x-api-key", TEST_API_KEY),)


def rpc_settings(settings: Settings, **overrides) -> Settings:
    """Small waits and intervals so that tests stay quick."""
    fields = {"poll_interval_seconds": 0.05, "lease_wait_max_seconds": 5.0, "grpc_threads": 8} | overrides
    return settings.model_copy(update=fields)


@contextmanager
def running_server(
    settings: Settings, store: Store, notifier: Notifier | None = None, address: str = "127.0.0.1:0"
) -> Iterator[tuple[RpcServer, int]]:
    server, port = create_server(settings, store, notifier or make_notifier(settings), address)
    server.start()
    try:
        yield server, port
    finally:
        server.stop(0)


@contextmanager
def stub_on(port: int) -> Iterator[pb2_grpc.WorkerServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb2_grpc.WorkerServiceStub(channel)
    finally:
        channel.close()


def lease(stub, queue: str, *, max_jobs: int = 1, ttl: int = 30, wait: float = 0.0, **fields) -> list[pb2.Job]:
    request = pb2.LeaseRequest(
        worker_id="raw-stub", queue=queue, max_jobs=max_jobs, lease_ttl_seconds=ttl, wait_seconds=wait, **fields
    )
    return list(stub.LeaseJobs(request, metadata=AUTH, timeout=wait + 10))


def ack(stub, job: pb2.Job, *, lease_id: str | None = None, result_json: str = "") -> pb2.AckResponse:
    request = pb2.JobAck(
        job_id=job.id, worker_id="raw-stub", lease_id=lease_id or job.lease_id, success=True, result_json=result_json
    )
    return stub.AckJob(request, metadata=AUTH, timeout=10)


def nack(stub, job: pb2.Job, error: str = "boom") -> pb2.AckResponse:
    request = pb2.JobAck(job_id=job.id, worker_id="raw-stub", lease_id=job.lease_id, error_message=error)
    return stub.NackJob(request, metadata=AUTH, timeout=10)


def extend(stub, job: pb2.Job, ttl: int = 30, *, lease_id: str | None = None) -> pb2.ExtendLeaseResponse:
    request = pb2.ExtendLeaseRequest(
        job_id=job.id, worker_id="raw-stub", lease_id=lease_id or job.lease_id, lease_ttl_seconds=ttl
    )
    return stub.ExtendLease(request, metadata=AUTH, timeout=10)


def refusal(call, *args, **kwargs) -> grpc.RpcError:
    """The RpcError that `call` raises (fails the test if it does not)."""
    try:
        result = call(*args, **kwargs)
        if hasattr(result, "__iter__") and not isinstance(result, (str, bytes)):
            list(result)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{call} was not refused")
