"""The Worker: leases jobs over gRPC, runs their handlers on a pool of threads, keeps
their leases alive, and acks or nacks each one.

    worker = Worker.from_env()

    @worker.handler("email_send")
    def send_email(job):          # job.id, job.type, job.payload, job.attempt, ...
        ...                       # return = ack (the value, if JSON, is the job's result)
                                  # raise  = nack with the exception's message
    worker.run()                  # until SIGTERM / SIGINT

It asks only for as many jobs as it has free threads (QUORRA_WORKER_MAX_JOBS), waiting on
the server (long poll) while none is ready. One thread more than that leases: whichever
thread's turn it is (see Worker._lease_loop). On SIGTERM/SIGINT it stops leasing, lets the
running jobs finish within QUORRA_WORKER_SHUTDOWN_GRACE and acks them; jobs still running
after that are nacked ("worker stopped") so that they are retried.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from quorra import tracing
from quorra.config import Settings, dial_target
from quorra.errors import InvalidConfig
from quorra.jobs import check_portable_json
from quorra.logs import configure_logging
from quorra.rpc import quorra_pb2 as pb2
from quorra.shutdown import ShutdownSignal
from quorra.worker.aio import CoroutineRunner
from quorra.worker.client import WorkerClient, status_code
from quorra.worker.completer import Completer, Outcome
from quorra.worker.heartbeat import Heartbeats, Lease
from quorra.worker.job import LeasedJob
from quorra.worker.registry import Handler, HandlerRegistry, handler
from quorra.worker.timeouts import TimedOut, TimeLimits, timed_out_error

logger = logging.getLogger(__name__)

LEASE_WAIT_SECONDS = 30.0  # how long one LeaseJobs call may wait for a job (the server caps it)
MAX_TRACEBACK_CHARS = 4000
ABANDON_SETTLE_SECONDS = 2.0  # time left to nack the jobs still running when the grace ends
LEASE_LINGER_SECONDS = 0.005  # with a slot free, how long to wait for the others before leasing
MAX_CARRIED_SETTLES = 1000  # outcomes one SettleAndLease may carry (the server's limit)
MAX_JOBS_PER_LEASE = 1000  # jobs one lease may ask for (the server's limit; more is refused as invalid)
# Handlers this fast on average (seconds) let the worker lease jobs ahead of its threads: the
# next batch is on its way while the last ones run. Slower handlers get no prefetch (a job
# waiting for a thread would hold a lease others could run).
PREFETCH_BELOW_SECONDS = 0.02
# How far ahead: about as many jobs as the threads run in this long (at least as many as
# there are threads, at most PREFETCH_MAX_FACTOR times that), so that the faster the handlers,
# the bigger the batches and the fewer the calls per job, and no prefetched job waits for a
# thread much longer than this.
PREFETCH_SECONDS = 0.02
PREFETCH_MAX_FACTOR = 50
DURATION_WEIGHT = 0.1  # of each new handler duration in the running average


# What a thread takes from the jobs' queue when it is its turn to lease (Worker._lease_loop).
LEASE_TURN = object()


class WorkerRecycled(Exception):
    """The worker stopped itself after QUORRA_WORKER_MAX_ABANDONED abandoned handler threads."""


class Slots:
    """How many jobs this worker runs at once; the lease loop waits for a free one.

    A slot is free again as soon as its handler returns, not once the settle is answered:
    the completer holds the outcome (and the heartbeats the lease) until then, so the
    thread may run the next job meanwhile. Holding the slot through the flush would add
    the flush interval and a round trip to every job and lease in lockstep with the
    settles. What bounds the outcomes waiting to be settled is `backlog_full`: the lease
    loop also waits while the completer has too many."""

    def __init__(self, size: int, backlog_full: Callable[[], bool] = lambda: False):
        self.size = size
        self.busy = 0  # jobs received and not finished: running, or waiting for a thread
        self.prefetch = 0  # jobs leased ahead of the threads (see Worker._note_duration)
        self._backlog_full = backlog_full
        self._condition = threading.Condition()

    def wait_free(self, stopping: threading.Event, linger: float = 0.0) -> int:
        """Wait for a free slot, then up to `linger` for the others (fast jobs free them
        within moments), so that one lease fills the slots rather than one per job. With
        a prefetch, the next lease goes out once half of what is in hand is done, while
        the rest runs. Never less than 1 unless stopping: the prefetch may shrink while the
        loop lingers (a slow job raised the average), and a lease of 0 or fewer jobs is
        refused as INVALID_ARGUMENT, which would stop the worker for good."""
        with self._condition:
            while True:
                self._condition.wait_for(lambda: self._can_lease() or stopping.is_set())
                self._condition.wait_for(lambda: self.busy <= self.low_water or stopping.is_set(), linger)
                free = self.size + self.prefetch - self.busy
                if free > 0 or stopping.is_set():
                    return free

    @property
    def low_water(self) -> int:
        """Jobs in hand at which the next lease is due: none without a prefetch, else half."""
        return (self.size + self.prefetch) // 2 if self.prefetch else 0

    def _can_lease(self) -> bool:
        return self.busy < self.size + self.prefetch and not self._backlog_full()

    def take(self) -> None:
        with self._condition:
            self.busy += 1

    def give(self) -> None:
        with self._condition:
            self.busy -= 1
            # what the waiters wait for: a first free slot, or the end of the queue (all free)
            if self.busy <= self.low_water or self.busy == self.size + self.prefetch - 1:
                self._condition.notify_all()

    def set_prefetch(self, prefetch: int) -> None:
        if prefetch != self.prefetch:
            with self._condition:
                self.prefetch = prefetch
                self._condition.notify_all()  # what the lease loop waits for has changed

    def wake(self) -> None:
        with self._condition:
            self._condition.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: self.busy == 0, timeout)


class Worker:
    def __init__(self, settings: Settings, registry: HandlerRegistry | None = None):
        self.settings = settings
        self.worker_id = settings.worker_id
        self.registry = registry or HandlerRegistry()
        self.ttl_seconds = max(1, math.ceil(settings.worker_lease_ttl_seconds))
        self.error: BaseException | None = None  # why the lease loop gave up, if it did
        self._stopping = threading.Event()
        self._slots = Slots(settings.worker_max_jobs, self._backlog_full)
        # jobs to run (with when they arrived), LEASE_TURN, or None: the thread exits
        self._jobs: queue.Queue[tuple[pb2.Job, float] | object | None] = queue.Queue()
        self._threads = settings.worker_max_jobs + 1  # one of them leases while the others run jobs
        self._kept: tuple[pb2.Job, float] | None = None  # a job the leasing thread runs itself
        self._leasing_ended = threading.Event()  # set once the lease loop has stopped for good
        self._call: Any = None
        self._settle_and_lease = True  # False once the server said it has no SettleAndLease
        self._backlogged = True  # the last lease came back full: the next one carries the outcomes
        self._average_duration = PREFETCH_BELOW_SECONDS  # no prefetch until handlers proved fast
        self._delivering = False  # the current lease call has sent at least one job
        self._call_lock = threading.Lock()
        self._server_down = False
        self._closed = False
        self.client: WorkerClient | None = None
        self.heartbeats: Heartbeats | None = None
        self.completer: Completer | None = None
        self._coroutines = CoroutineRunner()
        self.recycling = False  # set once QUORRA_WORKER_MAX_ABANDONED handler threads were abandoned
        self.limits = TimeLimits(
            self._coroutines,
            worker_id=self.worker_id,
            max_abandoned=settings.worker_max_abandoned,
            on_limit=self._recycle,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Worker:
        """Settings from the environment (QUORRA_WORKER_*, QUORRA_GRPC_ADDR, QUORRA_API_KEY)."""
        return cls(Settings.from_env(environ, **overrides))

    def handler(self, job_type: str) -> Callable[[Handler], Handler]:
        """Decorator: run the function for jobs of `job_type`."""

        def register(function: Handler) -> Handler:
            self.registry.register(job_type, function)
            return handler(job_type)(function)

        return register

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Worker:
        """Connect and start leasing in background threads; returns at once."""
        tracing.setup("worker")  # before the channel is made, so that its calls are traced
        target = dial_target(self.settings.grpc_addr)
        info = pb2.WorkerInfo(host=socket.gethostname(), pid=os.getpid(), handlers=self.registry.job_types)
        self.client = WorkerClient(target, self.settings.api_keys[0], self.worker_id, info=info)
        self.heartbeats = Heartbeats(self.client, self.ttl_seconds)
        self.heartbeats.start()
        self.completer = Completer(
            self.client,
            self.heartbeats,
            interval=self.settings.worker_settle_interval_seconds,
            batch_size=self.settings.worker_settle_batch,
            on_drained=self._slots.wake,
        )
        self.completer.start()
        self._jobs.put(LEASE_TURN)  # the first thread to start leases
        for number in range(self._threads):
            self._spawn(self._work, f"quorra-worker-{number}")
        logger.info(
            "worker started",
            extra={
                "event": "worker.started",
                "worker_id": self.worker_id,
                "target": target,
                "queues": list(self.settings.worker_queues),
                "max_jobs": self.settings.worker_max_jobs,
                "job_types": self.registry.job_types,
            },
        )
        return self

    def stop(self, grace: float | None = None) -> bool:
        """Stop leasing, wait up to `grace` seconds (default QUORRA_WORKER_SHUTDOWN_GRACE)
        for the running jobs, nack those still running; True when none had to be."""
        if self._closed:
            return self._slots.busy == 0
        grace = self.settings.worker_shutdown_grace_seconds if grace is None else grace
        self._stopping.set()
        self._slots.wake()
        self._cancel_lease_call()
        logger.info(
            "worker stopping",
            extra={
                "event": "worker.stopping",
                "worker_id": self.worker_id,
                "running": self._slots.busy,
                "grace_seconds": grace,
            },
        )
        grace_ends = time.monotonic() + grace
        # The lease call ends at once (cancelled, or it asked for no wait): its jobs are
        # waited for below, and the settles it carried are answered or back with the completer.
        self._leasing_ended.wait(timeout=grace)
        finished = self._slots.wait_idle(max(0.0, grace_ends - time.monotonic()))
        if not finished:
            self._abandon_running()
        # Settles may retry for what is left of the grace (a busy server), and at least a moment.
        self.completer.close(deadline=max(grace_ends, time.monotonic() + ABANDON_SETTLE_SECONDS))
        self._close()
        logger.info("worker stopped", extra={"event": "worker.stopped", "worker_id": self.worker_id, "clean": finished})
        return finished

    def run(self) -> None:
        """Work until SIGTERM or SIGINT (or a fatal refusal, which is raised), then stop."""
        if not logging.getLogger().handlers:
            configure_logging(self.settings, "worker")
        in_main_thread = threading.current_thread() is threading.main_thread()
        shutdown = ShutdownSignal() if in_main_thread else ShutdownSignal(signals=())
        self.start()
        while not shutdown.wait(0.5) and not self._stopping.is_set():
            pass
        self.stop()
        if self.error is not None:
            raise self.error

    @property
    def running_jobs(self) -> int:
        return self._slots.busy

    def _backlog_full(self) -> bool:
        """Too many outcomes wait to be settled: lease nothing more until some are."""
        return self.completer is not None and self.completer.backlog >= 2 * self.settings.worker_settle_batch

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        # Daemon threads: a handler still running after the grace period cannot hold up exit.
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _close(self) -> None:
        self._leasing_ended.wait(timeout=2)  # it ends once its call is cancelled or has ended
        for _ in range(self._threads):
            self._jobs.put(None)
        self.heartbeats.stop()
        self._closed = True
        self._coroutines.close()  # cancels the async jobs nacked at the end of the grace
        self.client.close()

    # -- leasing --------------------------------------------------------------------------------

    def _lease_loop(self) -> tuple[pb2.Job, float] | None:
        """Lease until the worker stops (None), or until a lease brings jobs to an idle
        worker: then the turn to lease goes to another thread, and this one returns the
        first job to run it itself. A reply's jobs otherwise reach a job thread through the
        queue: one thread hand-over more between the reply and the handler's start, and a
        thread woken after idling is slow to run (README, the eighth round of issue 9). The
        next lease goes out from the other thread meanwhile, as before."""
        while not self._stopping.is_set():
            try:
                self.client.lease_retrying(self._lease_round, self._stopping, self._server_unreachable)
            except InvalidConfig as exc:
                self._give_up(exc)
            except grpc.RpcError:
                pass  # only while stopping: the cancelled call, or a retry cut short
            except Exception:  # a bug must not end leasing for good
                logger.exception(
                    "lease loop failed", extra={"event": "worker.lease_failed", "worker_id": self.worker_id}
                )
                self._stopping.wait(1.0)
            if self._kept is not None:
                kept, self._kept = self._kept, None
                self._jobs.put(LEASE_TURN)  # a thread was left idle for it (_hand_over)
                return kept
        self._leasing_ended.set()
        return None

    def _lease_round(self) -> None:
        # Threads and prefetch may add up to more than the server allows in one lease (many
        # threads, fast handlers): asking for more would be refused, and stop the worker.
        free = min(self._slots.wait_free(self._stopping, LEASE_LINGER_SECONDS), MAX_JOBS_PER_LEASE)
        if self._stopping.is_set():
            return
        if self._settle_and_lease:
            try:
                self._lease_with_settles(free)
                return
            except grpc.RpcError as exc:
                if status_code(exc) is not grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self._settle_and_lease = False
                logger.info(
                    "the server has no SettleAndLease; leasing with LeaseJobs",
                    extra={"event": "worker.lease_streamed", "worker_id": self.worker_id},
                )
        self._lease_streamed(free)

    def _lease_with_settles(self, free: int) -> None:
        """One SettleAndLease, the jobs back in its reply. While the queues have a backlog
        (the last lease came back full), the outcomes waiting go with it: it asks for no
        wait then, so their answers come at once, and it returns at once anyway. Otherwise
        it is a plain long poll, in place at once for the next job (an idle worker's start
        latency), and the completer sends the outcomes on its own (smart batching: carried
        under load, a call of their own when idle). stop() ends a long poll by closing the
        lease channel (quorra.worker.client): the call then raises CANCELLED, or ValueError
        when it had not started yet."""
        carried = self.completer.take(MAX_CARRIED_SETTLES) if self._backlogged else []
        wait = 0.0 if carried else LEASE_WAIT_SECONDS
        settlements = [pending.settlement() for pending in carried]
        try:
            reply = self.client.settle_and_lease(self.settings.worker_queues, free, self.ttl_seconds, wait, settlements)
        except BaseException as exc:
            self.completer.give_back(carried)
            if self._stopping.is_set() and _ended_by_stop(exc):
                return
            raise
        self._hand_over(reply.jobs)
        self.completer.answered(carried, reply.results)  # after: the job threads run meanwhile
        self._backlogged = len(reply.jobs) >= free
        self._server_reachable()

    def _hand_over(self, messages: Sequence[pb2.Job]) -> None:
        """Give the jobs to the job threads. On an idle worker, when they leave a job thread
        idle to take the turn to lease, keep the first for this thread to run once this lease
        round is over (see _lease_loop); a bigger batch goes to the threads, and this one
        leases on (it would otherwise wait behind the batch for a thread to take its turn)."""
        received_at = time.monotonic()
        idle = self._slots.busy == 0 and not self._stopping.is_set()
        if idle and 0 < len(messages) <= self.settings.worker_max_jobs:
            self._slots.take()
            self._kept = (messages[0], received_at)
            messages = messages[1:]
        for message in messages:
            self._slots.take()
            self._jobs.put((message, received_at))

    def _lease_streamed(self, free: int) -> None:
        call = self.client.lease(self.settings.worker_queues, free, self.ttl_seconds, LEASE_WAIT_SECONDS)
        with self._call_lock:
            self._call, self._delivering = call, False
            if self._stopping.is_set():
                call.cancel()
        for message in call:
            with self._call_lock:
                self._delivering = True
            self._slots.take()
            self._jobs.put((message, time.monotonic()))
        self._server_reachable()

    def _cancel_lease_call(self) -> None:
        """End a long poll that is still waiting. A LeaseJobs stream that is delivering jobs
        is left to end by itself (at once): cancelling it could make the server hand back a
        job that already arrived here, and run it twice. (A SettleAndLease reply is one
        message: the server hands its jobs back unless it was sent.)"""
        self.client.end_long_polls()
        with self._call_lock:
            if self._call is not None and not self._delivering:
                self._call.cancel()

    def _server_unreachable(self, error: BaseException) -> None:
        if not self._server_down and not self._stopping.is_set():
            self._server_down = True
            logger.warning(
                "server unreachable; retrying with backoff",
                extra={
                    "event": "worker.server_unreachable",
                    "worker_id": self.worker_id,
                    "code": status_code(error).name,
                    "target": self.client.target,
                },
            )

    def _server_reachable(self) -> None:
        if self._server_down:
            self._server_down = False
            logger.info(
                "server reachable again", extra={"event": "worker.server_reachable", "worker_id": self.worker_id}
            )

    def _recycle(self) -> None:
        """Stop as on SIGTERM (run() then raises WorkerRecycled: quorra-worker exits 3)."""
        self.recycling = True
        self.error = WorkerRecycled(f"{self.limits.abandoned_threads} handler threads were abandoned")
        self._stopping.set()

    def _give_up(self, error: InvalidConfig) -> None:
        logger.error(
            "worker cannot lease jobs; stopping",
            extra={"event": "worker.refused", "worker_id": self.worker_id, "error": error.message},
        )
        self.error = error
        self._stopping.set()

    # -- running jobs ------------------------------------------------------------------------------

    def _work(self) -> None:
        """A worker thread: runs the jobs it is given, and leases when it is its turn."""
        while (item := self._jobs.get()) is not None:
            if item is LEASE_TURN and (item := self._lease_loop()) is None:
                continue  # the worker is stopping
            message, received_at = item
            try:
                self._run_one(message, received_at)
            except Exception:  # never lose the pool thread (and with it a slot) to a bug
                logger.exception(
                    "job runner failed",
                    extra={"event": "worker.runner_failed", "job_id": message.id, "worker_id": self.worker_id},
                )
            finally:
                self._slots.give()

    def _run_one(self, message: pb2.Job, received_at: float) -> None:
        try:
            job = LeasedJob.from_message(message)
        except (ValueError, TypeError) as exc:
            self._nack_unreadable(message, received_at, exc)
            return
        lease = self.heartbeats.track(job, received_at)
        try:
            outcome = self._execute(job) if tracing.current is None else self._execute_traced(job, lease)
        except BaseException:
            self.heartbeats.untrack(job.id)
            raise
        # once closed, the grace period ended: the job was nacked already
        handed_over = not self._closed and self.completer.settle(lease, outcome)  # heartbeats go on till settled
        if not handed_over and lease.on_settled is not None:
            lease.on_settled("", "nacked at the end of the shutdown grace")

    def _nack_unreadable(self, message: pb2.Job, received_at: float, error: Exception) -> None:
        deadline = received_at + self.ttl_seconds
        try:
            self.client.nack(message.id, message.lease_id, f"unreadable job: {error}", lambda: deadline)
        except grpc.RpcError as exc:
            logger.warning(
                "unreadable job not nacked",
                extra={
                    "event": "job.settle_failed",
                    "job_id": message.id,
                    "worker_id": self.worker_id,
                    "code": exc.code().name,
                },
            )

    def _execute(self, job: LeasedJob) -> Outcome:
        function = self.registry.get(job.type)
        if function is None:
            handled = ", ".join(self.registry.job_types) or "none"
            return Outcome(
                False, error=f"no handler for job type {job.type!r} on worker {self.worker_id} (it handles: {handled})"
            )
        logger.info("job started", extra={"event": "job.started", **self._fields(job)})
        started = time.perf_counter()
        try:
            value = self.limits.call(function, job)  # an async def handler runs on the worker's loop
        except TimedOut:
            outcome = Outcome(False, error=timed_out_error(job))
        except BaseException as exc:  # noqa: BLE001 - even SystemExit: a handler never ends its job thread
            outcome = Outcome(False, error=encodable(describe_exception(exc)))
        else:
            outcome = Outcome(True, result_json=self._result_json(job, value))
        duration = time.perf_counter() - started
        self._note_duration(duration)
        self._log_outcome(job, outcome, duration)
        return outcome

    def _execute_traced(self, job: LeasedJob, lease: Lease) -> Outcome:
        """_execute inside the handler's span; the settle span starts as it ends."""
        with tracing.current.processing(job, self.worker_id) as span:
            outcome = self._execute(job)
            tracing.current.processed(span, outcome.succeeded, outcome.error)
        lease.on_settled = tracing.current.settling(job, self.worker_id, span, outcome.succeeded)
        return outcome

    def _note_duration(self, seconds: float) -> None:
        """Keep the running average of handler durations, and the prefetch it allows."""
        self._average_duration += DURATION_WEIGHT * (seconds - self._average_duration)
        self._slots.set_prefetch(prefetch_for(self._average_duration, self.settings.worker_max_jobs))

    def _result_json(self, job: LeasedJob, value: Any) -> str:
        if value is None:
            return ""
        try:
            check_portable_json(value)
            text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
            text.encode("utf-8")  # a lone surrogate (e.g. from os.fsdecode) cannot go on the wire
            return text
        except Exception as exc:  # noqa: BLE001 - whatever the value, the job is still acked
            logger.warning(
                "result is not JSON (or not UTF-8); the job is acked without it",
                extra={"event": "job.result_dropped", "error": str(exc)[:200], **self._fields(job)},
            )
            return ""

    def _log_outcome(self, job: LeasedJob, outcome: Outcome, seconds: float) -> None:
        fields = {**self._fields(job), "duration_seconds": round(seconds, 6)}
        if outcome.succeeded:
            logger.info("job handled", extra={"event": "job.handled", **fields})
        else:
            logger.info(
                "job handler failed",
                extra={"event": "job.handler_failed", "error": outcome.error.partition("\n")[0][:500], **fields},
            )

    # -- shutdown --------------------------------------------------------------------------------

    def _abandon_running(self) -> None:
        """The grace period is over: nack what still runs, so it is retried soon (the
        completer sends these nacks with the last outcomes, before the worker exits)."""
        outcome = Outcome(False, error=f"worker {self.worker_id} stopped before the job finished")
        for lease in self.heartbeats.running():
            if self.completer.settle(lease, outcome):
                logger.warning("job abandoned at shutdown", extra={"event": "job.abandoned", **self._fields(lease.job)})

    def _fields(self, job: LeasedJob) -> dict[str, Any]:
        return {"worker_id": self.worker_id, **job.log_fields()}


def _ended_by_stop(error: BaseException) -> bool:
    """What a long poll raises once stop() closed the lease channel."""
    return isinstance(error, ValueError) or status_code(error) is grpc.StatusCode.CANCELLED


def prefetch_for(average_seconds: float, threads: int) -> int:
    """Jobs to lease ahead of `threads` whose handlers take `average_seconds` on average."""
    if average_seconds >= PREFETCH_BELOW_SECONDS:
        return 0
    # whole multiples of `threads`: the prefetch changes (and wakes the lease loop) only
    # when the average moves a lot, not after every job
    factor = min(PREFETCH_MAX_FACTOR, max(1, int(PREFETCH_SECONDS / max(average_seconds, 1e-6))))
    return threads * factor


def encodable(text: str) -> str:
    """`text` with what UTF-8 cannot carry (lone surrogates) escaped as `\\udcff`."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def describe_exception(exc: BaseException) -> str:
    """`Type: message`, then the end of the traceback (bounded), for the job's last_error."""
    message = f"{type(exc).__name__}: {_text_of(exc)}"
    trace = "".join(traceback.format_exception(exc))
    if len(trace) > MAX_TRACEBACK_CHARS:
        trace = "...\n" + trace[-MAX_TRACEBACK_CHARS:]
    return f"{message}\n\n{trace}"


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not keep the job from being nacked
        return "<exception str() failed>"
