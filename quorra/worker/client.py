"""The worker's side of the wire: a gRPC channel with the API key on every call, and the
retry rules (tenacity) for each verb.

- LeaseJobs: any transient failure is retried with jittered exponential backoff (capped
  at 5 s) for as long as the worker runs, so a worker outlives a server restart. A refusal
  that will not fix itself (bad API key, invalid request) raises ``InvalidConfig``.
- AckJob / NackJob: retried while the failure is transient and the lease may still be
  held (`valid_until`); FAILED_PRECONDITION or NOT_FOUND mean the lease is gone (expired,
  reclaimed, cancelled) and are not retried.
- SettleJobs: a batch of acks and nacks, retried as AckJob / NackJob while one of its
  leases may still be held.
- SettleAndLease: the lease loop's call when the server has it; retried as LeaseJobs (the
  settlements it carried go back to the completer, which retries them as SettleJobs). A long
  poll is a blocking call on a channel of its own, which `end_long_polls()` closes to end it.
- ExtendLease: one attempt; the heartbeat loop decides what to do next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from tenacity import Retrying, retry_if_exception, wait_exponential_jitter

from quorra.errors import InvalidConfig
from quorra.rpc import quorra_pb2 as pb2
from quorra.rpc import quorra_pb2_grpc as pb2_grpc

logger = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"
CALL_TIMEOUT_SECONDS = 10.0
LEASE_BACKOFF = wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.5)
SETTLE_BACKOFF = wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.2)
# gRPC's own reconnection backoff grows to 2 minutes by default: a restarted server would
# then wait that long for its workers. Keep it short.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
C = grpc.StatusCode
FATAL_LEASE_CODES = frozenset({C.UNAUTHENTICATED, C.PERMISSION_DENIED, C.INVALID_ARGUMENT, C.UNIMPLEMENTED})
RETRYABLE_SETTLE_CODES = frozenset({C.UNAVAILABLE, C.DEADLINE_EXCEEDED, C.RESOURCE_EXHAUSTED, C.ABORTED})
LEASE_GONE_CODES = frozenset({C.FAILED_PRECONDITION, C.NOT_FOUND})


def status_code(error: BaseException) -> grpc.StatusCode | None:
    return error.code() if isinstance(error, grpc.RpcError) and hasattr(error, "code") else None


def is_transient_lease_error(error: BaseException) -> bool:
    code = status_code(error)
    return code is not None and code not in FATAL_LEASE_CODES


def is_retryable_settle_error(error: BaseException) -> bool:
    return status_code(error) in RETRYABLE_SETTLE_CODES


class WorkerClient:
    def __init__(
        self,
        target: str,
        api_key: str,
        worker_id: str,
        *,
        call_timeout: float = CALL_TIMEOUT_SECONDS,
        info: pb2.WorkerInfo | None = None,
    ):
        self.target = target
        self.worker_id = worker_id
        self.info = info  # sent with each lease: the server shows it in GET /v1/workers
        self.call_timeout = call_timeout
        self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub = pb2_grpc.WorkerServiceStub(self.channel)
        # Long polls block their thread on a channel of their own: a blocking call has no
        # cancel(), but closing its channel ends it (CANCELLED), and the settles and
        # heartbeats on the other channel go on. (A future could be cancelled, but each one
        # starts a thread to poll the channel and hands its reply over from there.)
        self.lease_channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.lease_stub = pb2_grpc.WorkerServiceStub(self.lease_channel)
        self.metadata = ((API_KEY_HEADER, api_key),)

    def close(self) -> None:
        self.lease_channel.close()
        self.channel.close()

    def end_long_polls(self) -> None:
        """End the long poll in flight (CANCELLED) and refuse any later one (ValueError):
        once the worker stops, it leases nothing more."""
        self.lease_channel.close()

    def lease(self, queues: Sequence[str], max_jobs: int, ttl_seconds: int, wait_seconds: float):
        """Start a LeaseJobs call: iterate it for the jobs; `cancel()` ends it early."""
        request = self._lease_request(queues, max_jobs, ttl_seconds, wait_seconds)
        return self.stub.LeaseJobs(request, metadata=self.metadata, timeout=wait_seconds + self.call_timeout)

    def settle_and_lease(
        self,
        queues: Sequence[str],
        max_jobs: int,
        ttl_seconds: int,
        wait_seconds: float,
        settlements: list[pb2.Settlement],
    ) -> pb2.SettleAndLeaseResponse:
        """One SettleAndLease, blocking until its reply (settle results and jobs);
        UNIMPLEMENTED on an older server. A call that may wait goes on the lease channel,
        which end_long_polls() closes; one that asks for no wait (it carries settlements,
        whose answers must not be lost to a shutdown) goes on the main channel."""
        request = pb2.SettleAndLeaseRequest(
            lease=self._lease_request(queues, max_jobs, ttl_seconds, wait_seconds),
            settlements=settlements,
        )
        stub = self.lease_stub if wait_seconds > 0 else self.stub
        return stub.SettleAndLease(request, metadata=self.metadata, timeout=wait_seconds + self.call_timeout)

    def _lease_request(
        self, queues: Sequence[str], max_jobs: int, ttl_seconds: int, wait_seconds: float
    ) -> pb2.LeaseRequest:
        return pb2.LeaseRequest(
            worker_id=self.worker_id,
            queues=list(queues),
            max_jobs=max_jobs,
            lease_ttl_seconds=ttl_seconds,
            wait_seconds=wait_seconds,
            worker=self.info,
        )

    def lease_retrying(self, attempt: Callable[[], Any], stopping, on_retry: Callable[[BaseException], None]) -> Any:
        """Run `attempt` (one lease round) until it succeeds, the failure is fatal, or
        `stopping` is set; backoff sleeps wake when it is set."""
        retrying = Retrying(
            retry=retry_if_exception(is_transient_lease_error),
            wait=LEASE_BACKOFF,
            stop=lambda _state: stopping.is_set(),
            sleep=stopping.wait,
            before_sleep=lambda state: on_retry(state.outcome.exception()),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except grpc.RpcError as exc:
            if status_code(exc) in FATAL_LEASE_CODES:
                raise InvalidConfig(f"the server refused to lease jobs: {exc.code().name}: {exc.details()}") from exc
            raise

    def extend(self, job_id: str, lease_id: str, ttl_seconds: int) -> pb2.ExtendLeaseResponse:
        request = pb2.ExtendLeaseRequest(
            job_id=job_id, worker_id=self.worker_id, lease_id=lease_id, lease_ttl_seconds=ttl_seconds
        )
        return self.stub.ExtendLease(request, metadata=self.metadata, timeout=self.call_timeout)

    def ack(self, job_id: str, lease_id: str, result_json: str, valid_until: Callable[[], float]) -> pb2.AckResponse:
        request = pb2.JobAck(
            job_id=job_id, worker_id=self.worker_id, lease_id=lease_id, success=True, result_json=result_json
        )
        return self._settle(self.stub.AckJob, request, valid_until)

    def nack(self, job_id: str, lease_id: str, error: str, valid_until: Callable[[], float]) -> pb2.AckResponse:
        request = pb2.JobAck(
            job_id=job_id, worker_id=self.worker_id, lease_id=lease_id, success=False, error_message=error
        )
        return self._settle(self.stub.NackJob, request, valid_until)

    def settle_batch(self, settlements: list[pb2.Settlement], valid_until: Callable[[], float]) -> pb2.SettleResponse:
        """SettleJobs: one call for many outcomes, one result each (UNIMPLEMENTED on an older server)."""
        request = pb2.SettleRequest(worker_id=self.worker_id, settlements=settlements)
        return self._settle(self.stub.SettleJobs, request, valid_until)

    def _settle(self, rpc, request, valid_until: Callable[[], float]):
        retrying = Retrying(
            retry=retry_if_exception(is_retryable_settle_error),
            wait=SETTLE_BACKOFF,
            stop=lambda _state: time.monotonic() >= valid_until(),
            before_sleep=lambda state: _log_settle_retry(request, state),
            reraise=True,
        )
        return retrying(self._call_within, rpc, request, valid_until)

    def _call_within(self, rpc, request, valid_until: Callable[[], float]):
        timeout = max(0.5, min(self.call_timeout, valid_until() - time.monotonic()))
        return rpc(request, metadata=self.metadata, timeout=timeout)


def _log_settle_retry(request: pb2.JobAck | pb2.SettleRequest, state) -> None:
    error = state.outcome.exception()
    jobs = [s.job_id for s in request.settlements] if isinstance(request, pb2.SettleRequest) else [request.job_id]
    logger.warning(
        "settling failed; retrying while the lease lasts",
        extra={
            "event": "job.settle_retry",
            "job_id": jobs[0] if len(jobs) == 1 else None,
            "jobs": len(jobs),
            "worker_id": request.worker_id,
            "attempt_number": state.attempt_number,
            "code": status_code(error).name,
        },
    )
