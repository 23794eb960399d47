"""The gRPC edge, walked with a credential of each role (a managed key as `x-api-key`, a JWT
as `authorization: Bearer`): every WorkerService method needs jobs:work, so the worker and
admin roles get past the check and every other role gets PERMISSION_DENIED naming it; a bad
token is UNAUTHENTICATED with its reason. The table fails when the service gains a method."""

from __future__ import annotations

import time

import grpc
import pytest

from quorra.access import ROLE_PERMISSIONS, Permission, Role
from quorra.keys import KeySpec
from quorra.rpc import quorra_pb2 as pb2
from quorra.rpc.servicer import SERVICE_NAME
from tests.rpc.support import rpc_settings, running_server
from tests.support.tokens import AUDIENCE, ISSUER, JWT_SECRET, hs256

# method -> (request, streams its answer)
METHODS = {
    "LeaseJobs": (pb2.LeaseRequest(worker_id="w", queue="q", max_jobs=1), True),
    "AckJob": (pb2.JobAck(job_id="j", worker_id="w", lease_id="l", success=True), False),
    "NackJob": (pb2.JobAck(job_id="j", worker_id="w", lease_id="l"), False),
    "ExtendLease": (pb2.ExtendLeaseRequest(job_id="j", worker_id="w", lease_id="l"), False),
    "SettleJobs": (pb2.SettleRequest(worker_id="w"), False),
    "SettleAndLease": (pb2.SettleAndLeaseRequest(lease=pb2.LeaseRequest(worker_id="w", queue="q")), False),
}


@pytest.fixture
def server(settings, store):
    jwt_settings = rpc_settings(settings).model_copy(
        update={"jwt_secret": JWT_SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "jwt_leeway_seconds": 0}
    )
    with running_server(jwt_settings, store) as (_server, port):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield channel
        channel.close()


def call(channel: grpc.Channel, method: str, metadata) -> tuple[grpc.StatusCode, str]:
    request, streams = METHODS[method]
    path = f"/{SERVICE_NAME}/{method}"
    kind = channel.unary_stream if streams else channel.unary_unary
    stub = kind(path, request_serializer=type(request).SerializeToString, response_deserializer=lambda b: b)
    try:
        answer = stub(request, metadata=metadata, timeout=10)
        if streams:
            list(answer)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_the_table_names_every_method_of_the_service():
    assert set(METHODS) == set(pb2.DESCRIPTOR.services_by_name["WorkerService"].methods_by_name)


@pytest.mark.parametrize("role", list(Role))
def test_each_role_may_call_the_worker_service_only_with_jobs_work(server, store, role):
    key = store.create_api_key(KeySpec(name=f"{role} key", role=role), created_by="test").secret
    credentials = {
        "managed key": (("x-api-key", key),),
        "jwt": (("authorization", f"Bearer {hs256(sub='svc', role=role.value)}"),),
    }
    for kind, metadata in credentials.items():
        for method in METHODS:
            code, details = call(server, method, metadata)
            where = f"{kind} of {role}: {method} -> {code} {details}"
            if Permission.JOBS_WORK in ROLE_PERMISSIONS[role]:
                assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), where
            else:
                assert code is grpc.StatusCode.PERMISSION_DENIED, where
                assert "jobs:work" in details, where


BAD_TOKENS = {
    "expired": lambda: hs256(role="worker", exp=int(time.time()) - 60),
    "audience": lambda: hs256(role="worker", aud="another-api"),
    "signature": lambda: hs256(role="worker", secret="a-different-secret-but-long-enough!!"),
}


@pytest.mark.parametrize("reason", list(BAD_TOKENS))
def test_a_bad_token_is_unauthenticated_with_its_reason(server, reason):
    code, details = call(server, "SettleJobs", (("authorization", f"Bearer {BAD_TOKENS[reason]()}"),))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert reason in details


def test_a_revoked_key_is_refused_within_the_cache_period(settings, store):
    quick = rpc_settings(settings).model_copy(update={"key_cache_ttl_seconds": 0.2})
    created = store.create_api_key(KeySpec(name="w", role=Role.WORKER), created_by="test")
    metadata = (("x-api-key", created.secret),)
    with running_server(quick, store) as (_server, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        unauthenticated = grpc.StatusCode.UNAUTHENTICATED
        assert call(channel, "SettleJobs", metadata)[0] is not unauthenticated  # (INVALID_ARGUMENT: no settlements)
        store.revoke_api_key(created.key.id)  # as another process would
        deadline = time.monotonic() + 30
        while call(channel, "SettleJobs", metadata)[0] is not unauthenticated:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.05)
