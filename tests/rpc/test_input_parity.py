"""The input rules of quorra.jobs hold on the gRPC edge as on REST: the same names, the same
storable JSON, refused as INVALID_ARGUMENT before anything is stored."""

from __future__ import annotations

import grpc
import pytest

from quorra.errors import InvalidJobSpec
from quorra.jobs import JobSpec, JobStatus
from quorra.rpc import quorra_pb2 as pb2
from tests import factories
from tests.rpc.support import AUTH, ack, lease

C = grpc.StatusCode
UNPAIRED_SURROGATES = [
    '"\\ud800"',
    '{"a": ["\\udfff"]}',
    '{"\\ud800": 1}',
    '{"ok": "\\ud83d\\ude00", "bad": "\\ud83d"}',
]


def refusal(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.mark.parametrize("result_json", UNPAIRED_SURROGATES)
def test_an_ack_whose_result_holds_an_unpaired_surrogate_is_invalid_argument_and_the_lease_stays_usable(
    stub, store, result_json
):
    factories.make_job(store, queue="parity", max_retries=1)
    [leased] = lease(stub, "parity")

    error = refusal(ack, stub, leased, result_json=result_json)

    assert error.code() is C.INVALID_ARGUMENT, error.details()
    assert "surrogate" in error.details() and "result_json" in error.details()
    assert store.get_job(leased.id).status is JobStatus.LEASED
    nack = pb2.JobAck(job_id=leased.id, worker_id="raw-stub", lease_id=leased.lease_id, error_message="bad result")
    settled = stub.NackJob(nack, metadata=AUTH, timeout=10)
    assert settled.status == JobStatus.FAILED.value


def test_a_paired_surrogate_in_a_result_is_an_ordinary_character(stub, store):
    factories.make_job(store, queue="parity")
    [leased] = lease(stub, "parity")

    ack(stub, leased, result_json='{"smile": "\\ud83d\\ude00"}')

    assert store.get_job(leased.id).result == {"smile": "\U0001f600"}


@pytest.mark.parametrize("queue", ["x\n", "default\n", "x\r", " x"])
def test_a_queue_name_the_rest_api_refuses_is_refused_by_lease_jobs_too(stub, queue):
    with pytest.raises(InvalidJobSpec):
        JobSpec.parse({"type": "t", "payload": {}, "queue": queue})
    request = pb2.LeaseRequest(worker_id="w", queue=queue, wait_seconds=0)

    error = refusal(lambda: list(stub.LeaseJobs(request, metadata=AUTH, timeout=10)))

    assert error.code() is C.INVALID_ARGUMENT
    assert "queue" in error.details()
