"""The worker protocol's verbs. Each RPC parses its request, calls one manager verb and
answers with a pb2 message; errors from ``quorra.errors`` become gRPC status codes through
the one table below. Unknown exceptions become INTERNAL, logged with their traceback and
never echoed to the worker."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from quorra import tracing
from quorra.config import Settings
from quorra.errors import InvalidArgument, QuorraError
from quorra.jobs import MAX_QUEUE_CHARS, Job, JobStatus, ParentOutcome, check_portable_json, is_valid_name
from quorra.manager import JobManager
from quorra.notify import Notifier, WorkListener
from quorra.rpc import quorra_pb2 as pb2
from quorra.rpc import quorra_pb2_grpc as pb2_grpc
from quorra.rpc.interceptors import caller_tenant
from quorra.rpc.sightings import Sightings, lease_sighting
from quorra.store import Settlement, SettleOutcome, SettleResult, Store, WorkerSighting

logger = logging.getLogger(__name__)

SERVICE_NAME = pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
DEFAULT_TTL_SECONDS = 30
MAX_TTL_SECONDS = 86400
MAX_JOBS_PER_LEASE = 1000
MAX_SETTLEMENTS = 1000
MAX_QUEUES_PER_LEASE = 100
MAX_WORKER_ID_CHARS = 200
DEADLINE_MARGIN_SECONDS = 1.0  # end a long poll this long before the worker's own deadline
# A lease is sent only while at least this much of it is left (at most a tenth of its
# TTL); one that is nearly expired when its turn to be sent comes is handed back instead.
DELIVERY_MARGIN_SECONDS = 1.0


class TooManyWaiters(QuorraError):
    """Too many workers are waiting for jobs on this server; retry shortly."""

    code = "resource_exhausted"


# QuorraError.code -> gRPC status: the one table of this edge.
STATUS_FOR_CODE: dict[str, grpc.StatusCode] = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "payload_too_large": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "conflict": grpc.StatusCode.FAILED_PRECONDITION,
    "stale_lease": grpc.StatusCode.FAILED_PRECONDITION,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@contextmanager
def wire_errors(context: grpc.ServicerContext, request: Any) -> Iterator[None]:
    """Turn a QuorraError into its status code with its message; anything else into
    INTERNAL with a traceback in the log only."""
    try:
        yield
    except QuorraError as exc:
        status = STATUS_FOR_CODE.get(exc.code, grpc.StatusCode.INTERNAL)
        logger.info(
            "rpc refused",
            extra={"event": "rpc.refused", "code": status.name, "error": exc.message, **_request_fields(request)},
        )
        context.abort(status, exc.message)
    except Exception:
        logger.exception("rpc failed", extra={"event": "rpc.failed", **_request_fields(request)})
        context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _request_fields(request: Any) -> dict[str, str]:
    fields = {name: getattr(request, name, "") for name in ("job_id", "worker_id", "lease_id")}
    return {name: value for name, value in fields.items() if value}


# -- parsing requests -----------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseArgs:
    worker_id: str
    queues: tuple[str, ...]
    max_jobs: int
    ttl_seconds: int
    wait_seconds: float


def parse_lease(request: pb2.LeaseRequest, max_wait_seconds: float) -> LeaseArgs:
    """Validate a LeaseRequest; 0 means the default for max_jobs (1) and the TTL (30 s)."""
    queues = tuple(dict.fromkeys(q for q in (request.queue, *request.queues) if q))
    args = LeaseArgs(
        worker_id=request.worker_id,
        queues=queues,
        max_jobs=request.max_jobs or 1,
        ttl_seconds=request.lease_ttl_seconds or DEFAULT_TTL_SECONDS,
        wait_seconds=request.wait_seconds,
    )
    _refuse_problems(_lease_problems(args))
    return LeaseArgs(**{**args.__dict__, "wait_seconds": min(args.wait_seconds, max_wait_seconds)})


def _lease_problems(args: LeaseArgs) -> list[str]:
    bad_queues = [q for q in args.queues if not is_valid_name(q, MAX_QUEUE_CHARS)]
    checks = [
        (_valid_worker_id(args.worker_id), f"worker_id is required (1-{MAX_WORKER_ID_CHARS} characters)"),
        (1 <= len(args.queues) <= MAX_QUEUES_PER_LEASE, f"name 1 to {MAX_QUEUES_PER_LEASE} queues (queue or queues)"),
        (not bad_queues, f"invalid queue names {bad_queues}: use letters, digits and _.:- (1-100 characters)"),
        (1 <= args.max_jobs <= MAX_JOBS_PER_LEASE, f"max_jobs must be between 1 and {MAX_JOBS_PER_LEASE}"),
        (1 <= args.ttl_seconds <= MAX_TTL_SECONDS, f"lease_ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"),
        (math.isfinite(args.wait_seconds) and args.wait_seconds >= 0, "wait_seconds must be a number >= 0"),
    ]
    return [message for ok, message in checks if not ok]


def _valid_worker_id(worker_id: str) -> bool:
    return 1 <= len(worker_id) <= MAX_WORKER_ID_CHARS and "\x00" not in worker_id


def parse_ttl(seconds: int) -> int:
    ttl = seconds or DEFAULT_TTL_SECONDS
    _refuse_problems(
        [] if 1 <= ttl <= MAX_TTL_SECONDS else [f"lease_ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"]
    )
    return ttl


def parse_result(text: str, max_bytes: int) -> Any:
    """The result of an AckJob: JSON text (empty: none), portable and within the size limit."""
    if not text:
        return None
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidArgument(f"result_json is larger than {max_bytes} bytes")
    try:
        result = json.loads(text)
        check_portable_json(result, "result_json")
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"result_json is not storable JSON: {str(exc)[:200]}") from None
    return result


def parse_settle(request: pb2.SettleRequest, max_bytes: int) -> list[Settlement | SettleResult]:
    """A SettleRequest: the whole call is refused (INVALID_ARGUMENT) only for a missing
    worker_id or a wrong count; a bad result is that settlement's own INVALID result."""
    problems = []
    if not _valid_worker_id(request.worker_id):
        problems.append(f"worker_id is required (1-{MAX_WORKER_ID_CHARS} characters)")
    if not 1 <= len(request.settlements) <= MAX_SETTLEMENTS:
        problems.append(f"settlements must hold 1 to {MAX_SETTLEMENTS} items")
    _refuse_problems(problems)
    return [_settlement(item, max_bytes) for item in request.settlements]


def parse_carried(request: pb2.SettleAndLeaseRequest, max_bytes: int) -> list[Settlement | SettleResult]:
    """The settlements a SettleAndLeaseRequest carries (none is fine), as parse_settle."""
    _refuse_problems(
        []
        if len(request.settlements) <= MAX_SETTLEMENTS
        else [f"settlements must hold at most {MAX_SETTLEMENTS} items"]
    )
    return [_settlement(item, max_bytes) for item in request.settlements]


def _settlement(item: pb2.Settlement, max_bytes: int) -> Settlement | SettleResult:
    if not item.success:
        return Settlement(
            item.job_id,
            item.lease_id,
            success=False,
            error=item.error_message or "failed",
        )
    try:
        result = parse_result(item.result_json, max_bytes)
    except InvalidArgument as exc:
        return SettleResult(item.job_id, SettleOutcome.INVALID, error=exc.message)
    return Settlement(item.job_id, item.lease_id, success=True, result=result)


def _refuse_problems(problems: Sequence[str]) -> None:
    if problems:
        raise InvalidArgument("; ".join(problems), details=list(problems))


# -- building replies ----------------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_fields(moment: datetime) -> dict[str, int]:
    """A Timestamp's fields, in integers: a third of the time Timestamp.FromDatetime takes,
    which was most of building a job's message (three timestamps per job on every lease)."""
    since = moment - _EPOCH
    return {"seconds": since.days * 86400 + since.seconds, "nanos": since.microseconds * 1000}


def job_message(job: Job) -> pb2.Job:
    message = _job_message(job)
    if job.workflow_id is not None:
        message.workflow_id, message.ref = job.workflow_id, job.ref or ""
    if job.parents:  # only dependants carry their parents' outcomes
        message.parents.extend(map(parent_message, job.parents))
    if job.traceparent is not None:
        _carry_trace(job, message)
    return message


def parent_message(parent: ParentOutcome) -> pb2.ParentResult:
    return pb2.ParentResult(
        job_id=parent.id,
        type=parent.type,
        status=parent.status.value,
        ref=parent.ref or "",
        result_json=""
        if parent.result is None
        else json.dumps(parent.result, separators=(",", ":"), ensure_ascii=False),
        last_error=parent.last_error or "",
    )


def _job_message(job: Job) -> pb2.Job:
    return pb2.Job(
        id=job.id,
        type=job.type,
        queue=job.queue,
        payload=json.dumps(job.payload, separators=(",", ":"), ensure_ascii=False),
        priority=job.priority,
        attempts=job.attempts,
        max_retries=job.max_retries,
        lease_id=job.lease_id or "",
        lease_expires_at=timestamp_fields(job.lease_expires_at),
        created_at=timestamp_fields(job.created_at),
        run_at=timestamp_fields(job.run_at),
        timeout_seconds=job.timeout_seconds or 0,
    )


def _carry_trace(job: Job, message: pb2.Job) -> None:
    """The job's trace context; and, for an attempt that runs in its submit's trace, the
    submit as the handler's parent (the lease span replaces it while tracing is on here)."""
    message.traceparent = job.traceparent
    message.tracestate = job.tracestate or ""
    if tracing.continues_submit_trace(job.attempts, job.created_at, job.run_at):
        message.parent_traceparent = job.traceparent


_OUTCOMES = {
    SettleOutcome.SETTLED: pb2.SettleResult.SETTLED,
    SettleOutcome.STALE_LEASE: pb2.SettleResult.STALE_LEASE,
    SettleOutcome.NOT_FOUND: pb2.SettleResult.NOT_FOUND,
    SettleOutcome.INVALID: pb2.SettleResult.INVALID,
}


def settle_result_message(result: SettleResult) -> pb2.SettleResult:
    reply = pb2.SettleResult(
        job_id=result.job_id,
        outcome=_OUTCOMES[result.outcome],
        error=result.error or "",
    )
    if result.job is not None:
        reply.status, reply.attempts = result.job.status.value, result.job.attempts
        if result.job.status is JobStatus.FAILED:
            reply.run_at.FromDatetime(result.job.run_at)
    return reply


def settled_message(job: Job) -> pb2.AckResponse:
    reply = pb2.AckResponse(job_id=job.id, status=job.status.value, attempts=job.attempts)
    if job.status is JobStatus.FAILED:
        reply.run_at.FromDatetime(job.run_at)
    return reply


# -- the servicer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseBatch:
    jobs: list[Job]
    deliver_by: float  # time.monotonic() after which a lease of this batch is handed back, not sent
    started_ns: int = 0  # time.time_ns() as the lease began (the start of its jobs' lease spans)

    def message(self, job: Job) -> pb2.Job:
        """The job's message, and its lease span when it has a trace and tracing is on."""
        message = job_message(job)
        if job.traceparent is not None and tracing.current is not None:
            tracing.current.leased(job, self.started_ns, message)
        return message


def max_waiting_leases(threads: int) -> int:
    """Long polls may hold all threads but a quarter (at least 2), kept for acks and extends."""
    return max(1, threads - max(2, threads // 4))


class WorkerServicer(pb2_grpc.WorkerServiceServicer):
    def __init__(self, settings: Settings, store: Store, notifier: Notifier):
        self.settings = settings
        self.manager = JobManager(store, notifier)
        self.sightings = Sightings(self.manager)
        self.notifier = notifier  # for long polls: listen/wait
        self.max_waiting = max_waiting_leases(settings.grpc_threads)
        self.waiting = 0  # long polls waiting now
        self._waiting_lock = threading.Lock()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """End every long poll now (server shutdown); closes the notifier."""
        self._stopping.set()
        self.notifier.close()

    def LeaseJobs(self, request: pb2.LeaseRequest, context: grpc.ServicerContext) -> Iterator[pb2.Job]:
        with wire_errors(context, request):
            args = parse_lease(request, self.settings.lease_wait_max_seconds)
            self.sightings.seen(lease_sighting(request, args.queues, context, caller_tenant()))
            batch = self._lease_when_ready(args, context)
        yield from self._deliver(batch, context)

    def AckJob(self, request: pb2.JobAck, context: grpc.ServicerContext) -> pb2.AckResponse:
        with wire_errors(context, request):
            result = parse_result(request.result_json, self.settings.max_payload_bytes)
            job = self.manager.ack(
                request.job_id, request.lease_id, result, worker_id=request.worker_id, tenant=caller_tenant()
            )
            return settled_message(job)

    def NackJob(self, request: pb2.JobAck, context: grpc.ServicerContext) -> pb2.AckResponse:
        with wire_errors(context, request):
            error = request.error_message or "failed"
            job = self.manager.nack(
                request.job_id, request.lease_id, error, worker_id=request.worker_id, tenant=caller_tenant()
            )
            return settled_message(job)

    def SettleJobs(self, request: pb2.SettleRequest, context: grpc.ServicerContext) -> pb2.SettleResponse:
        with wire_errors(context, request):
            parsed = parse_settle(request, self.settings.max_payload_bytes)
            self.sightings.seen(WorkerSighting(request.worker_id, tenant=caller_tenant()))
            results = self._settle(parsed, request.worker_id)
            return pb2.SettleResponse(results=[settle_result_message(result) for result in results])

    def SettleAndLease(
        self, request: pb2.SettleAndLeaseRequest, context: grpc.ServicerContext
    ) -> pb2.SettleAndLeaseResponse:
        """SettleJobs, then LeaseJobs, in one call; the jobs go back in the one reply."""
        with wire_errors(context, request.lease):
            args = parse_lease(request.lease, self.settings.lease_wait_max_seconds)
            parsed = parse_carried(request, self.settings.max_payload_bytes)
            self.sightings.seen(lease_sighting(request.lease, args.queues, context, caller_tenant()))
            results = self._settle(parsed, args.worker_id) if parsed else []
        batch = self._lease_after_settling(args, context, settled=bool(results))
        reply = pb2.SettleAndLeaseResponse(results=[settle_result_message(result) for result in results])
        reply.jobs.extend(batch.message(job) for job in self._deliverable(batch, context))
        return reply

    def _settle(self, parsed: list[Settlement | SettleResult], worker_id: str) -> list[SettleResult]:
        valid = [item for item in parsed if isinstance(item, Settlement)]
        settled = iter(self.manager.settle_many(valid, worker_id=worker_id, tenant=caller_tenant()))
        return [item if isinstance(item, SettleResult) else next(settled) for item in parsed]

    def _lease_after_settling(self, args: LeaseArgs, context: grpc.ServicerContext, *, settled: bool) -> LeaseBatch:
        """The lease part of SettleAndLease. Once settlements are committed, a failure here
        must not turn into a whole-call error (the worker would send them again and be told
        their leases are gone): it is logged and answered with no jobs."""
        if not settled:
            with wire_errors(context, args):
                return self._lease_when_ready(args, context)
        try:
            return self._lease_when_ready(args, context)
        except QuorraError as exc:
            logger.warning(
                "lease after settling failed; answering the settlements alone",
                extra={
                    "event": "rpc.lease_failed",
                    "code": exc.code,
                    "error": exc.message,
                    "worker_id": args.worker_id,
                },
            )
            return LeaseBatch([], deliver_by=math.inf)

    def _deliverable(self, batch: LeaseBatch, context: grpc.ServicerContext) -> list[Job]:
        """The jobs of a one-message reply: all of them, or none when the call is gone or
        the leases (nearly) expired meanwhile; those are handed back at once, as _deliver does."""
        if batch.jobs and (not context.is_active() or time.monotonic() > batch.deliver_by):
            self.manager.release_many(batch.jobs)
            return []
        return batch.jobs

    def ExtendLease(self, request: pb2.ExtendLeaseRequest, context: grpc.ServicerContext) -> pb2.ExtendLeaseResponse:
        with wire_errors(context, request):
            ttl = parse_ttl(request.lease_ttl_seconds)
            job = self.manager.extend(
                request.job_id, request.lease_id, ttl, worker_id=request.worker_id, tenant=caller_tenant()
            )
            if _valid_worker_id(request.worker_id):
                self.sightings.seen(WorkerSighting(request.worker_id, tenant=caller_tenant()))
            return pb2.ExtendLeaseResponse(
                job_id=job.id, status=job.status.value, lease_expires_at=job.lease_expires_at
            )

    # -- leasing with a long poll ------------------------------------------------------------

    def _lease(self, args: LeaseArgs) -> LeaseBatch:
        # The expiry is computed inside the statement, so it is at most TTL after `started`.
        started, started_ns = time.monotonic(), time.time_ns()
        jobs = self.manager.lease(
            args.queues,
            args.worker_id,
            args.max_jobs,
            args.ttl_seconds,
            tenant=caller_tenant(),  # "*" for a fleet worker: every tenant's queues so named
            max_bytes=self.settings.lease_max_bytes,
        )
        margin = min(args.ttl_seconds / 10, DELIVERY_MARGIN_SECONDS)
        return LeaseBatch(jobs, deliver_by=started + args.ttl_seconds - margin, started_ns=started_ns)

    def _lease_when_ready(self, args: LeaseArgs, context: grpc.ServicerContext) -> LeaseBatch:
        """Lease now; if nothing is ready, wait for a wake-up (or the notifier's re-check
        time) and try again until the wait is over. No transaction spans a wait. A call that
        may wait subscribes before its first lease, so that a publish after that lease is
        not lost and an idle worker's long poll costs one lease statement, not two."""
        deadline = time.monotonic() + self._wait_seconds(args, context)
        if deadline <= time.monotonic() or self._stopping.is_set():
            return self._lease(args)
        subscription = self.notifier.listen_for_work(args.queues, caller_tenant())
        batch = self._lease(args)
        if batch.jobs:
            return batch
        with self._wait_slot():
            while not batch.jobs and self._may_wait(context, deadline):
                woken = subscription.wait(self._wait_before_retry(args, deadline))
                batch = self._lease_woken(args, context, subscription, woken)
        return batch

    def _lease_woken(
        self, args: LeaseArgs, context: grpc.ServicerContext, subscription: WorkListener, woken: bool
    ) -> LeaseBatch:
        """Lease after a wait. A wake-up woke this long poll alone among those of its tenant
        waiting on the queue (quorra.notify.WorkSubscription), so it is passed on when this one
        may leave jobs behind (a full batch) or cannot lease (its call ended, the lease failed)."""
        if not self._may_wait(context, math.inf):
            if woken:
                subscription.pass_on()
            return LeaseBatch([], deliver_by=math.inf)
        try:
            batch = self._lease(args)
        except BaseException:
            if woken:
                subscription.pass_on()
            raise
        if woken and len(batch.jobs) >= args.max_jobs:
            subscription.pass_on()
        return batch

    def _wait_before_retry(self, args: LeaseArgs, deadline: float) -> float:
        """Until a wake-up or the deadline; for a rate-limited queue no longer than its
        bucket takes to fill (its tokens come back with time, and nobody publishes that)."""
        remaining = deadline - time.monotonic()
        retry_after = self.manager.lease_retry_after(args.queues, tenant=caller_tenant())
        return remaining if retry_after is None else min(remaining, retry_after)

    def _wait_seconds(self, args: LeaseArgs, context: grpc.ServicerContext) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return args.wait_seconds
        return max(0.0, min(args.wait_seconds, remaining - DEADLINE_MARGIN_SECONDS))

    def _may_wait(self, context: grpc.ServicerContext, deadline: float) -> bool:
        return not self._stopping.is_set() and context.is_active() and time.monotonic() < deadline

    @contextmanager
    def _wait_slot(self) -> Iterator[None]:
        with self._waiting_lock:
            if self.waiting >= self.max_waiting:
                raise TooManyWaiters()
            self.waiting += 1
        try:
            yield
        finally:
            with self._waiting_lock:
                self.waiting -= 1

    def _deliver(self, batch: LeaseBatch, context: grpc.ServicerContext) -> Iterator[pb2.Job]:
        """Send the leased jobs, handing back at once those that cannot reach the worker
        (DESIGN: a lease committed but never delivered): the call was cancelled before a
        send, gRPC stopped iterating (and closed this generator) because a send failed, or
        the lease is (nearly) expired by now, e.g. after a pause between commit and send.
        A send that fails without gRPC noticing in time is left to the lease's expiry."""
        jobs, sent = batch.jobs, 0
        try:
            for job in jobs:
                if not context.is_active() or time.monotonic() > batch.deliver_by:
                    break
                yield batch.message(job)
                sent += 1
        finally:
            if sent < len(jobs):
                self.manager.release_many(jobs[sent:])
