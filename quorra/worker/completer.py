"""The completer: settles finished jobs in batches (River's batch completer is the model).

A job thread hands its outcome over and goes back to work; one completer thread sends
the outcomes gathered so far in one `SettleJobs` call, at most `interval` seconds after
the first of them arrived or as soon as `batch_size` are waiting. When the lease loop asks
for more jobs first, it takes the outcomes waiting (`take`) and settles them in the same
round trip (SettleAndLease); if that call fails it hands them back (`give_back`). Meanwhile the
heartbeats go on: a job's lease is let go only once its settle is answered, so a slow or
failed flush never lets a finished job's lease lapse while it is retried.

- A flush that fails for lack of a server is retried (client.settle_batch) while one of
  its leases may still be held; the outcomes that arrive meanwhile wait for the next one.
- Each settlement has its own answer: SETTLED, STALE_LEASE / NOT_FOUND (the lease is
  gone: a warning, as for a refused ack), INVALID (an ack whose result the server will not
  store is sent again without it).
- A server without SettleJobs (UNIMPLEMENTED: an older Quorra, GoQuorra) is settled one
  job at a time with AckJob/NackJob from then on, by the job thread itself as before.
- `close` flushes everything before the worker exits.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from quorra.rpc import quorra_pb2 as pb2
from quorra.worker.client import LEASE_GONE_CODES, WorkerClient, status_code
from quorra.worker.heartbeat import Heartbeats, Lease

logger = logging.getLogger(__name__)

R = pb2.SettleResult
LEASE_GONE_OUTCOMES = frozenset({R.STALE_LEASE, R.NOT_FOUND})


@dataclass(frozen=True)
class Outcome:
    """What to report for one attempt: an ack with a result, or a nack with an error."""

    succeeded: bool
    result_json: str = ""
    error: str = ""


@dataclass(frozen=True)
class Pending:
    lease: Lease
    outcome: Outcome

    def settlement(self) -> pb2.Settlement:
        job, outcome = self.lease.job, self.outcome
        return pb2.Settlement(
            job_id=job.id,
            lease_id=job.lease_id,
            success=outcome.succeeded,
            result_json=outcome.result_json,
            error_message=outcome.error,
        )


class Completer:
    def __init__(
        self,
        client: WorkerClient,
        heartbeats: Heartbeats,
        *,
        interval: float,
        batch_size: int,
        on_drained: Any = None,
    ):
        self.client = client
        self.heartbeats = heartbeats
        self.interval = interval
        self.batch_size = batch_size
        self.batched = True  # False once the server said it has no SettleJobs
        self._on_drained = on_drained or (lambda: None)
        self._pending: list[Pending] = []
        self._in_flight = 0
        self._carried = 0  # taken by the lease loop to go with its next SettleAndLease
        self._condition = threading.Condition()
        self._closing = False
        self._deadline = float("inf")  # at close: give up retrying after this (monotonic)
        self._thread = threading.Thread(target=self._run, name="quorra-completer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def backlog(self) -> int:
        """Outcomes handed over whose settle is not answered yet."""
        with self._condition:
            return len(self._pending) + self._in_flight + self._carried

    # -- carried by the lease loop (SettleAndLease) ----------------------------------------------

    def take(self, limit: int) -> list[Pending]:
        """The outcomes waiting now (up to `limit`), for the lease loop to settle with its
        next lease; answer them with `answered`, or hand them back with `give_back`."""
        with self._condition:
            if not self.batched or self._closing:
                return []
            taken, self._pending = self._pending[:limit], self._pending[limit:]
            self._carried += len(taken)
            return taken

    def answered(self, taken: list[Pending], results) -> None:
        """The carrying call's results, one per taken outcome, in order."""
        if len(results) != len(taken):
            logger.error("settle reply does not match the request", extra={"event": "job.settle_mismatch"})
            self.give_back(taken)
            return
        with self._condition:
            self._carried -= len(taken)
        for pending, result in zip(taken, results, strict=True):
            self._answered(pending, result)

    def give_back(self, taken: list[Pending]) -> None:
        """The carrying call failed: the completer settles these itself (with its retries)."""
        with self._condition:
            self._carried -= len(taken)
            self._pending[:0] = taken
            if taken:
                self._condition.notify_all()

    def settle(self, lease: Lease, outcome: Outcome) -> bool:
        """Hand over a finished job's outcome; returns at once (except against a server
        without SettleJobs, where it settles the job itself first). The first outcome of a
        lease wins: False when one was handed over already (the job was nacked at the end
        of the grace and its handler has only now returned)."""
        with self._condition:
            if lease.settling:
                return False
            lease.settling = True
        if self.batched:
            self._enqueue(Pending(lease, outcome))
        else:
            self._settle_one(Pending(lease, outcome))
        return True

    def _enqueue(self, pending: Pending) -> None:
        with self._condition:
            self._pending.append(pending)
            # The completer thread waits for the first outcome, then for a full batch (or
            # its interval): only those two wake it, not every outcome in between.
            if len(self._pending) in (1, self.batch_size):
                self._condition.notify_all()

    def close(self, deadline: float) -> None:
        """Flush everything handed over (retrying no later than `deadline`), then stop."""
        with self._condition:
            self._closing = True
            self._deadline = deadline
            self._condition.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()) + 1)

    # -- the completer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._flush(batch)
            except Exception:  # a bug must not stop settling for good
                logger.exception("settle flush failed", extra={"event": "worker.completer_failed"})
                self._release(batch)
            finally:
                with self._condition:
                    self._in_flight = 0
                self._on_drained()

    def _next_batch(self) -> list[Pending] | None:
        """Wait for a first outcome, then up to `interval` for more (or a full batch)."""
        with self._condition:
            while not self._pending:  # the lease loop may take them all meanwhile (take)
                self._condition.wait_for(lambda: self._pending or self._closing)
                if not self._pending:
                    return None
                flush_at = time.monotonic() + self.interval
                while len(self._pending) < self.batch_size and not self._closing:
                    left = flush_at - time.monotonic()
                    if left <= 0:
                        break
                    self._condition.wait(left)
            batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size :]
            self._in_flight = len(batch)
            return batch

    def _flush(self, batch: list[Pending]) -> None:
        if not self.batched:
            for pending in batch:
                self._settle_one(pending)
            return
        try:
            reply = self.client.settle_batch([p.settlement() for p in batch], self._valid_until(batch))
        except grpc.RpcError as exc:
            self._flush_failed(batch, exc)
            return
        if len(reply.results) != len(batch):
            logger.error("settle reply does not match the request", extra={"event": "job.settle_mismatch"})
            for pending in batch:
                self._settle_one(pending)
            return
        for pending, result in zip(batch, reply.results, strict=True):
            self._answered(pending, result)

    def _valid_until(self, batch: list[Pending]):
        """Retry while one of the batch's leases may still be held, and never past close's deadline."""
        return lambda: min(self._deadline, max(p.lease.valid_until for p in batch))

    def _flush_failed(self, batch: list[Pending], error: grpc.RpcError) -> None:
        code = status_code(error)
        if code is grpc.StatusCode.UNIMPLEMENTED:
            self.batched = False
            logger.info(
                "the server has no SettleJobs; settling one job at a time",
                extra={"event": "worker.settle_unbatched", "worker_id": self.client.worker_id},
            )
        if code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT):
            for pending in batch:  # one at a time: a malformed one cannot fail the others
                self._settle_one(pending)
            return
        for pending in batch:
            self._failed(pending, error)

    def _answered(self, pending: Pending, result: pb2.SettleResult) -> None:
        fields = {"worker_id": self.client.worker_id, **pending.lease.job.log_fields()}
        if result.outcome == R.SETTLED:
            logger.info("job settled", extra={"event": "job.settled", "status": result.status, **fields})
        elif result.outcome in LEASE_GONE_OUTCOMES:
            logger.warning(
                "settle refused: the lease is no longer held",
                extra={
                    "event": "job.settle_refused",
                    "code": R.Outcome.Name(result.outcome),
                    "error": result.error,
                    **fields,
                },
            )
        elif result.outcome == R.INVALID and pending.outcome.result_json:
            logger.warning(
                "the server refused the result; acking without it",
                extra={"event": "job.result_refused", "error": result.error, **fields},
            )
            self._enqueue(Pending(pending.lease, Outcome(True)))
            return  # the lease stays tracked until that ack is answered
        else:
            logger.error(
                "settle refused; the job will run again once its lease expires",
                extra={
                    "event": "job.settle_failed",
                    "code": R.Outcome.Name(result.outcome),
                    "error": result.error,
                    **fields,
                },
            )
        self.heartbeats.untrack(pending.lease.job.id)
        if result.outcome == R.SETTLED:
            _settled(pending, status=result.status)
        else:
            _settled(pending, error=f"{R.Outcome.Name(result.outcome)}: {result.error}")

    # -- one job at a time (AckJob / NackJob) ---------------------------------------------------

    def _settle_one(self, pending: Pending) -> None:
        try:
            reply = self._send_one(pending)
        except grpc.RpcError as exc:
            self._failed(pending, exc)
            return
        finally:
            self.heartbeats.untrack(pending.lease.job.id)
        fields = {"worker_id": self.client.worker_id, **pending.lease.job.log_fields()}
        logger.info("job settled", extra={"event": "job.settled", "status": reply.status, **fields})
        _settled(pending, status=reply.status)

    def _send_one(self, pending: Pending) -> pb2.AckResponse:
        job, outcome = pending.lease.job, pending.outcome
        valid_until = lambda: min(self._deadline, pending.lease.valid_until)
        if not outcome.succeeded:
            return self.client.nack(job.id, job.lease_id, outcome.error, valid_until)
        try:
            return self.client.ack(job.id, job.lease_id, outcome.result_json, valid_until)
        except grpc.RpcError as exc:
            if status_code(exc) is not grpc.StatusCode.INVALID_ARGUMENT or not outcome.result_json:
                raise
            logger.warning(
                "the server refused the result; acking without it",
                extra={"event": "job.result_refused", "error": exc.details(), **job.log_fields()},
            )
            return self.client.ack(job.id, job.lease_id, "", valid_until)

    def _failed(self, pending: Pending, error: grpc.RpcError) -> None:
        self.heartbeats.untrack(pending.lease.job.id)
        _settled(pending, error=f"{error.code().name}: {error.details()}")
        fields = {"code": error.code().name, "error": error.details(), "worker_id": self.client.worker_id}
        fields |= pending.lease.job.log_fields()
        if status_code(error) in LEASE_GONE_CODES:
            logger.warning(
                "settle refused: the lease is no longer held", extra={"event": "job.settle_refused", **fields}
            )
        else:
            logger.error(
                "settle failed; the job will run again once its lease expires",
                extra={"event": "job.settle_failed", **fields},
            )

    def _release(self, batch: list[Pending]) -> None:
        for pending in batch:
            self.heartbeats.untrack(pending.lease.job.id)
            _settled(pending, error="not settled")


def _settled(pending: Pending, *, status: str = "", error: str = "") -> None:
    """End the job's settle span, if tracing made one (once)."""
    on_settled, pending.lease.on_settled = pending.lease.on_settled, None
    if on_settled is not None:
        on_settled(status, error)
