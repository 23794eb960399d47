"""What the gRPC server waits for at shutdown: the leases it delivered that no worker has
settled yet.

Workers and the server usually get SIGTERM together (Ctrl-C under honcho, a rolling
deploy). A worker then lets its running jobs finish within its own grace period and acks
them, or nacks those still running: the server must still answer those settles, so it
drains first (new leases refused, long polls ended, everything else served) until every
lease it handed out is settled, has expired, or the grace period is over. An idle server
stops at once.

The ledger learns from the calls themselves (``LedgerInterceptor``): each job sent by
LeaseJobs or SettleAndLease, each ExtendLease answer, and each ack, nack or SettleJobs /
SettleAndLease result that ends a lease (settled, stale or unknown: either way nothing is
left to settle).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from quorra.rpc import quorra_pb2 as pb2
from quorra.rpc.interceptors import Behavior, wrap_handler
from quorra.rpc.servicer import SERVICE_NAME

# An ack or nack refused with these codes left no lease to settle.
_LEASE_GONE = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
_RESULT_ENDS_LEASE = (pb2.SettleResult.SETTLED, pb2.SettleResult.STALE_LEASE, pb2.SettleResult.NOT_FOUND)
_PRUNE_FLOOR = 1024


class LeaseLedger:
    """job id -> when its lease expires (epoch seconds), for the leases this server delivered."""

    def __init__(self, clock=time.time):
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._changed = threading.Condition()
        self._prune_at = _PRUNE_FLOOR

    def delivered(self, job_id: str, expires_at: float) -> None:
        with self._changed:
            self._expiry[job_id] = expires_at
            if len(self._expiry) >= self._prune_at:  # leases settled elsewhere or abandoned
                self._drop_expired()
                self._prune_at = max(_PRUNE_FLOOR, 2 * len(self._expiry))

    def extended(self, job_id: str, expires_at: float) -> None:
        with self._changed:
            if job_id in self._expiry:
                self._expiry[job_id] = expires_at

    def ended(self, job_id: str) -> None:
        with self._changed:
            self._expiry.pop(job_id, None)
            self._changed.notify_all()

    def outstanding(self) -> int:
        """Leases delivered here, not settled and not expired."""
        with self._changed:
            self._drop_expired()
            return len(self._expiry)

    def wait_settled(self, deadline: float) -> bool:
        """Block until nothing is outstanding or `deadline` (time.monotonic) passes."""
        with self._changed:
            while True:
                self._drop_expired()
                remaining = deadline - time.monotonic()
                if not self._expiry or remaining <= 0:
                    return not self._expiry
                next_expiry = min(self._expiry.values()) - self._clock()
                self._changed.wait(max(0.01, min(remaining, next_expiry)))

    def _drop_expired(self) -> None:
        now = self._clock()
        for job_id in [job_id for job_id, expires_at in self._expiry.items() if expires_at <= now]:
            del self._expiry[job_id]


class LedgerInterceptor(grpc.ServerInterceptor):
    """Keeps a LeaseLedger up to date from the worker service's calls and answers."""

    def __init__(self, ledger: LeaseLedger):
        self.ledger = ledger
        self._recorders = {
            f"/{SERVICE_NAME}/LeaseJobs": self._lease_jobs,
            f"/{SERVICE_NAME}/AckJob": self._settle_one,
            f"/{SERVICE_NAME}/NackJob": self._settle_one,
            f"/{SERVICE_NAME}/ExtendLease": self._extend,
            f"/{SERVICE_NAME}/SettleJobs": self._settle_many,
            f"/{SERVICE_NAME}/SettleAndLease": self._settle_and_lease,
        }

    def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = continuation(details)
        recorder = self._recorders.get(details.method)
        if handler is None or recorder is None:
            return handler
        return wrap_handler(handler, lambda behavior, _streaming: recorder(behavior))

    def _lease_jobs(self, behavior: Behavior) -> Behavior:
        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            for job in behavior(request, context):
                self.ledger.delivered(job.id, _epoch_seconds(job.lease_expires_at))
                yield job

        return stream

    def _settle_one(self, behavior: Behavior) -> Behavior:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            with self._ended_when_gone(request.job_id, context):
                reply = behavior(request, context)
            self.ledger.ended(request.job_id)
            return reply

        return unary

    def _extend(self, behavior: Behavior) -> Behavior:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            with self._ended_when_gone(request.job_id, context):
                reply = behavior(request, context)
            self.ledger.extended(request.job_id, _epoch_seconds(reply.lease_expires_at))
            return reply

        return unary

    def _settle_many(self, behavior: Behavior) -> Behavior:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            reply = behavior(request, context)
            self._record_results(reply)
            return reply

        return unary

    def _settle_and_lease(self, behavior: Behavior) -> Behavior:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            reply = behavior(request, context)
            self._record_results(reply)
            for job in reply.jobs:
                self.ledger.delivered(job.id, _epoch_seconds(job.lease_expires_at))
            return reply

        return unary

    def _record_results(self, reply: Any) -> None:
        for result in getattr(reply, "results", ()):
            if result.outcome in _RESULT_ENDS_LEASE:
                self.ledger.ended(result.job_id)

    @contextmanager
    def _ended_when_gone(self, job_id: str, context: grpc.ServicerContext) -> Iterator[None]:
        """On an error: if the call was refused because the lease is gone, forget the lease."""
        try:
            yield
        except BaseException:
            if context.code() in _LEASE_GONE:
                self.ledger.ended(job_id)
            raise


def _epoch_seconds(timestamp: Any) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9
